"""Snakemake script of rule `solid_properties`."""

from chemfit_core.cli import log_to
from chemfit_core.stages.solid import analyse_sets

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
analyse_sets(sm.wildcards.fit, sm.params.fit, list(sm.input.relaxed), sm.input.params, sm.output[0])
