"""Snakemake script of rule `convergence_plot`."""

from chemfit_core.cli import log_to
from chemfit_core.results import read_json
from chemfit_core.stages.report import write_convergence_plot

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
write_convergence_plot(read_json(sm.input[0]), sm.output[0])
