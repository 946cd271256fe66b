"""Snakemake script of rule `tables`: results/tables/ (parameters and properties as LaTeX, Markdown, CSV)."""

import pandas as pd

from chemfit_core.cli import log_to
from chemfit_core.results import read_json
from chemfit_core.stages.report_tables import write_paper_tables

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
write_paper_tables(
    params=read_json(sm.input.params),
    properties=pd.read_csv(sm.input.properties),
    fit_records=[read_json(path) for path in sm.input.fits],
    out={name: getattr(sm.output, name) for name in sm.output.keys()},
    solid=pd.concat([pd.read_csv(p) for p in sm.input.solid], ignore_index=True) if sm.input.solid else None,
)
