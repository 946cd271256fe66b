"""Snakemake script of rule `fit`: fit one configuration (see chemfit_core.stages.fit.run_fit).

In one process with a thread pool, or — when the rule's `mpi` resource names a launcher —
as `<launcher> -n <tasks> python -m chemfit_core fit ARGS.json --mpi`, which on SLURM runs
inside the job's allocation of `tasks` tasks.

The fit's LAMMPS runs die with it: SIGTERM/SIGINT/SIGHUP (Snakemake stopping, Ctrl-C) are
forwarded to their process groups before the fit exits, and when Snakemake itself is gone
(`kill -9` of its PID) the fit stops its runs and exits instead of running on as an orphan
(chemfit_core.external.process).
"""

from pathlib import Path

from chemfit_core.cli import log_to
from chemfit_core.external.process import exit_with_parent, stop_commands_on_signals
from chemfit_core.stages.fit import run_fit, run_fit_under_mpi

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
arguments = dict(
    fit_name=sm.wildcards.fit,
    fit=sm.params.fit,
    master_seed=sm.params.seed,
    template=sm.input.template or None,  # no liquid targets: no template
    workdir=sm.params.workdir,
    fit_json=sm.output.fit,
    params_json=sm.output.params,
    history_csv=sm.output.history,
    workers=sm.threads,
    potential_dir=str(Path(sm.output.potential).parent),  # potential.lammps and potential/ beside params.json
)
with stop_commands_on_signals():
    exit_with_parent()
    if sm.resources.mpi:
        run_fit_under_mpi(arguments, launcher=sm.resources.mpi, ranks=sm.resources.tasks, log=sm.log[0])
    else:
        run_fit(**arguments)
