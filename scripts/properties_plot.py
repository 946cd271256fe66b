"""Snakemake script of rule `properties_plot`."""

import pandas as pd

from chemfit_core.cli import log_to
from chemfit_core.results import read_json
from chemfit_core.stages.report import write_properties_plot

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
write_properties_plot(read_json(sm.input.fit), pd.read_csv(sm.input.properties), sm.output[0])
