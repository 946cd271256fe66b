"""Snakemake script of rule `collect`: merge the fits' results."""

from chemfit_core.cli import log_to
from chemfit_core.stages.validation import collect_results

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
collect_results(sm.input.params, sm.input.properties, sm.output.params, sm.output.properties)
