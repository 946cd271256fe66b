"""Snakemake script of rule `validate`: properties at the fitted parameters."""

from pathlib import Path

from chemfit_core.cli import log_to
from chemfit_core.stages.validation import analyse_validation

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
logs: dict[str, list[str]] = {}
for path in sm.input.logs:
    state = Path(path).parent.parent.name  # results/{fit}/validation/{state}/r{replica}/log.lammps
    logs.setdefault(state, []).append(path)
analyse_validation(sm.wildcards.fit, sm.params.fit, sm.input.fit, logs, sm.output[0], workdir=sm.params.workdir)
