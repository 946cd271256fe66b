"""Snakemake script of rule `prepare_solid`: one structure set of a fit's solid stage."""

from chemfit_core.cli import log_to
from chemfit_core.stages.solid import prepare_set

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
prepare_set(sm.wildcards.fit, sm.params.fit, sm.params.seed, sm.input.params, sm.wildcards.set, sm.output[0])
