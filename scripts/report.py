"""Snakemake script of rule `report`: the one-file HTML report."""

from pathlib import Path

import pandas as pd

from chemfit_core.cli import log_to
from chemfit_core.results import read_json
from chemfit_core.stages.report import write_report

sm = snakemake  # noqa: F821 (injected by Snakemake)


def _summary(record):
    """The report's provenance table: versions, revision, hashes (the full record is provenance.json)."""
    return {
        **{f"version {k}": v for k, v in record["versions"].items()},
        "chemfit-workflow commit": record["chemfit_workflow"]["commit"],
        "uncommitted changes": record["chemfit_workflow"]["dirty"],
        "config sha256": record["config_sha256"],
        "master seed": record["seeds"]["master"],
        **{f"sha256 {k}": v for k, v in record["inputs_sha256"].items()},
    }


log_to(sm.log[0])
write_report(
    fit_records=[read_json(path) for path in sm.input.fits],
    params=read_json(sm.input.params),
    properties=pd.read_csv(sm.input.properties),
    out_html=sm.output[0],
    provenance=_summary(read_json(sm.input.provenance)),
    solid=pd.concat([pd.read_csv(p) for p in sm.input.solid], ignore_index=True) if sm.input.solid else None,
    plots={Path(path).parent.name: [path] for path in sm.input.parity},  # results/{fit}/structures_parity.png
)
