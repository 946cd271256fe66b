"""Snakemake script of rule `report`: the one-file HTML report."""

from pathlib import Path

import pandas as pd

from chemfit_core.cli import log_to
from chemfit_core.results import read_json
from chemfit_core.stages.report import write_report

sm = snakemake  # noqa: F821 (injected by Snakemake)


def _plots() -> dict[str, list[str]]:
    """fit → its figures in the order shown: convergence, properties, structure parity
    (results/{fit}/<name>.png)."""
    plots: dict[str, list[str]] = {}
    for path in [*sm.input.plots, *sm.input.property_plots, *sm.input.parity]:
        plots.setdefault(Path(path).parent.name, []).append(path)
    return plots


log_to(sm.log[0])
write_report(
    fit_records=[read_json(path) for path in sm.input.fits],
    params=read_json(sm.input.params),
    properties=pd.read_csv(sm.input.properties),
    out_html=sm.output[0],
    provenance=read_json(sm.input.provenance),
    solid=pd.concat([pd.read_csv(p) for p in sm.input.solid], ignore_index=True) if sm.input.solid else None,
    plots=_plots(),
    captions=sm.params.captions,
    flags=sm.params.flags,
)
