"""Snakemake script of rule `solid_properties`."""

from chemfit_core.cli import log_to
from chemfit_core.pipeline import analyse_solid

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
analyse_solid(sm.wildcards.fit, sm.params.fit, sm.input[0], sm.output[0])
