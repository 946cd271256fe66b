"""Snakemake script of rule `convergence_plot`: the PNG and, beside it, the PDF."""

from chemfit_core.cli import log_to
from chemfit_core.results import read_json
from chemfit_core.stages.report_figures import write_convergence_plot

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
write_convergence_plot(read_json(sm.input[0]), sm.output.png)  # the PDF: sm.output.pdf, the same name
