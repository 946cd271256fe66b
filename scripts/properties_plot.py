"""Snakemake script of rule `properties_plot`: the PNG and, beside it, the PDF."""

import pandas as pd

from chemfit_core.cli import log_to
from chemfit_core.results import read_json
from chemfit_core.stages.report_figures import write_properties_plot

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
properties = pd.concat([pd.read_csv(p) for p in [sm.input.properties, *sm.input.solid]], ignore_index=True)
write_properties_plot(read_json(sm.input.fit), properties, sm.output.png)  # the PDF: sm.output.pdf
