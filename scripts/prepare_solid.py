"""Snakemake script of rule `prepare_solid`."""

from chemfit_core.cli import log_to
from chemfit_core.pipeline import prepare_solid

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
prepare_solid(sm.wildcards.fit, sm.params.fit, sm.params.seed, sm.input.params, sm.output[0])
