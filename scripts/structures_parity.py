"""Snakemake script of rule `structures_parity`."""

from chemfit_core.cli import log_to
from chemfit_core.results import read_json
from chemfit_core.stages.report import write_structures_parity

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
write_structures_parity(read_json(sm.input.fit), sm.output.png, sm.output.csv)
