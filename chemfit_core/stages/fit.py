"""The workflow's stages as plain functions: the Snakemake scripts only call these.

The fit stage (rule ``fit``): :func:`run_fit` builds the objective (one term per state
point and replica, each an NPT LAMMPS run with its own fixed seed, plus crystal and
structure terms computed in-process), evaluates its terms concurrently — threads
(:class:`AsyncWrapperCOB`) or MPI ranks (:func:`run_fit_under_mpi`) — minimises it and
writes the fitted parameters and the full history. The stages after it are in
:mod:`chemfit_core.stages.validation` (properties at the fitted parameters) and
:mod:`chemfit_core.stages.solid` (structure sets relaxed with the fitted model).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chemfit_core.async_wrapper_cob import AsyncWrapperCOB
from chemfit_core.cache import EvaluationCache, OutputCache, namespace_of
from chemfit_core.combined_objective_function import CombinedObjectiveFunction
from chemfit_core.fitter import Fitter
from chemfit_core.results import write_csv, write_json
from chemfit_core.stages.composition import given_masses
from chemfit_core.stages.config import config_hash, derived_seed
from chemfit_core.stages.objective import build_objective, potential_form_of
from chemfit_core.stages.optimizers import minimise

logger = logging.getLogger(__name__)


def _workers(requested: int) -> int:
    """``requested`` workers, or one per core available to this process when 0."""
    if requested > 0:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_fit(
    fit_name: str,
    fit: Mapping[str, Any],
    master_seed: int,
    template: Path | str | None,
    workdir: Path | str,
    fit_json: Path | str,
    params_json: Path | str,
    history_csv: Path | str,
    workers: int | None = None,
    mpi: bool = False,
    potential_dir: Path | str | None = None,
) -> dict[str, Any] | None:
    """Fit one configuration's parameters; write fit.json, params.json and the history CSV.

    With ``potential_dir`` (``results/<fit>``) the fitted potential is written there too
    (:func:`~chemfit_core.science.roundtrip.write_potential`: ``potential.lammps`` and the form's
    file in ``potential/``) and named, with SHA-256 hashes, in params.json's ``potential_files``.

    With ``mpi`` every rank of ``MPI.COMM_WORLD`` calls this: rank 0 fits and writes, the
    others evaluate their share of the terms (:class:`MPIWrapperCOB`) and return None.
    """
    runs = run_cache(workdir)
    cob, terms_info = build_objective(fit_name, fit, master_seed, template, workdir, runs)
    with _evaluator(cob, fit, workers, mpi) as (objective, n_workers):
        if objective is None:  # an MPI worker rank: it evaluated its share until rank 0 was done
            return None
        record = _fit_and_write(
            fit_name,
            fit,
            master_seed,
            template,
            workdir,
            objective,
            n_workers,
            mpi,
            terms_info,
            fit_json,
            params_json,
            history_csv,
            potential_dir,
        )
    if "liquid" in fit:  # under MPI: the runs of rank 0's terms
        logger.info("fit %s: LAMMPS runs: %d read from %s, %d run", fit_name, runs.hits, runs.directory, runs.misses)
    return record


def run_fit_under_mpi(arguments: Mapping[str, Any], launcher: str, ranks: int, log: Path | str) -> None:
    """Run :func:`run_fit` with ``arguments`` on ``ranks`` MPI ranks started by ``launcher``
    (``mpiexec``, ``mpirun`` or ``srun``; ``mpiexec`` is taken from Python's own bin folder
    first, where the mpich wheel puts it). The ranks' output is appended to ``log``.

    Raises :class:`ChemFitError` quoting the end of that output when a rank fails.
    """
    import shutil
    import subprocess
    import sys

    from chemfit_core.errors import ChemFitError

    if ranks < 2:
        raise ChemFitError(f"an MPI fit needs at least 2 ranks, got {ranks}")
    beside = Path(sys.executable).parent / launcher
    program = str(beside) if beside.is_file() else shutil.which(launcher)
    if program is None:
        raise ChemFitError(f"MPI launcher {launcher!r} not found next to {sys.executable} or on PATH")
    args_json = Path(arguments["workdir"]) / "mpi_fit_arguments.json"
    write_json(args_json, dict(arguments))
    command = [program, "-n", str(ranks), sys.executable, "-m", "chemfit_core", "fit", str(args_json), "--mpi"]
    logger.info("fit %s under MPI: %s", arguments["fit_name"], " ".join(command))
    if "SLURM_JOB_ID" in os.environ:
        logger.info(
            "inside SLURM job %s (CPUs per node %s, nodes %s)",
            os.environ["SLURM_JOB_ID"],
            os.environ.get("SLURM_JOB_CPUS_PER_NODE", "?"),
            os.environ.get("SLURM_JOB_NODELIST", "?"),
        )
    with open(log, "a") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "".join(Path(log).read_text().splitlines(keepends=True)[-20:])
        raise ChemFitError(
            f"the MPI fit ({' '.join(command)}) exited with {done.returncode}; its output ends ({log}):\n{tail}"
        )


@contextlib.contextmanager
def _evaluator(cob: CombinedObjectiveFunction, fit: Mapping[str, Any], workers: int | None, mpi: bool):
    """(objective, workers) of a fit: the terms in a thread pool, or spread over MPI ranks
    (objective None on ranks other than 0, after they served rank 0)."""
    if not mpi:
        n_workers = _workers(fit.get("workers", 0) if workers is None else workers)
        with AsyncWrapperCOB(cob, max_workers=n_workers) as objective:
            yield objective, n_workers
        return
    from chemfit_core.mpi_wrapper_cob import MPIWrapperCOB

    with MPIWrapperCOB(cob) as wrapper:
        if wrapper.rank != 0:
            wrapper.worker_loop()
            yield None, wrapper.size
        else:
            logger.info(
                "MPI: %d ranks evaluate the %d terms (rank r: terms r, r + %d, ...)",
                wrapper.size,
                cob.n_terms(),
                wrapper.size,
            )
            yield wrapper, wrapper.size


def _fit_and_write(
    fit_name: str,
    fit: Mapping[str, Any],
    master_seed: int,
    template: Path | str | None,
    workdir: Path | str,
    objective: Any,
    n_workers: int,
    mpi: bool,
    terms_info: list[dict[str, Any]],
    fit_json: Path | str,
    params_json: Path | str,
    history_csv: Path | str,
    potential_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Minimise ``objective`` (rank 0 / the only process) from the config's start, replaying the
    cache, and write the fit's three result files (and the fitted potential into ``potential_dir``)."""
    cob = objective.cob
    parameters = fit["parameters"]
    initial = {name: p["initial"] for name, p in parameters.items()}
    bounds = {name: (p["lower"], p["upper"]) for name, p in parameters.items()}
    optimizer = fit["optimizer"]
    logger.info(
        "fit %s: %d terms (%s) on %d workers, %s, at most %d evaluations",
        fit_name,
        cob.n_terms(),
        ", ".join(cob.names),
        n_workers,
        optimizer["method"],
        optimizer["max_evaluations"],
    )
    start = time.monotonic()
    cache = fit_cache(fit_name, fit, master_seed, template, workdir)
    if len(cache):
        logger.info(
            "fit %s: %d evaluations in the cache %s: a previous run is resumed", fit_name, len(cache), cache.directory
        )
    fitter = Fitter(objective, initial, bounds, near_bound_tol=0.01, normalize=True, cache=cache)
    minimise(fitter, optimizer, seed=derived_seed(master_seed, fit_name, "optimizer"))
    logger.info(
        "fit %s: %d evaluations replayed from the cache, %d computed",
        fit_name,
        fitter.n_replayed,
        len(fitter.history) - fitter.n_replayed,
    )
    result = fitter.result
    assert result is not None
    fitted = result.parameters
    initial_properties = _mean_properties_by_state(result.history[0].properties, terms_info)
    record = {
        "fit": fit_name,
        "seed": master_seed,
        "config": fit,
        "config_sha256": config_hash(fit),
        "terms": terms_info,
        "n_workers": n_workers,
        "evaluator": "mpi" if mpi else "threads",
        "wall_time_s": time.monotonic() - start,
        "initial_properties": initial_properties,
        "evaluations_replayed_from_cache": fitter.n_replayed,
        "python": platform.python_version(),
        **result.to_dict(),
    }
    summary = params_summary(fit_name, fit, fitted, result)
    if potential_dir is not None:
        from chemfit_core.science.roundtrip import write_potential

        files = write_potential(potential_form_of(fit), fitted, potential_dir, given_masses(fit))
        summary[fit_name]["potential_files"] = files
        logger.info(
            "fit %s: fitted potential written to %s (%s)", fit_name, potential_dir, ", ".join(f["name"] for f in files)
        )
    write_json(fit_json, record)
    write_json(params_json, summary)
    write_csv(history_csv, result.history_frame())
    return record


def fit_cache(
    fit_name: str, fit: Mapping[str, Any], master_seed: int, template: Path | str | None, workdir: Path | str
) -> EvaluationCache:
    """The evaluation cache of a fit, in ``<workdir>/cache``: keyed by the fit's configuration
    (its evaluation budget aside), master seed, template text, the content of its structure and input files
    and chemfit_core version, so any change starts afresh (a structure file edited in place
    included) while a larger budget replays what a smaller one computed."""
    import hashlib
    from importlib.metadata import version

    text = Path(template).read_text() if template else None
    files = [fit["structures"]["file"]] if "file" in fit.get("structures", {}) else []
    files += fit["liquid"]["files"] if "liquid" in fit else []
    content = [hashlib.sha256(Path(file).read_bytes()).hexdigest() for file in files] or None
    # the budget is not part of the key: a larger max_evaluations replays every evaluation it has
    identity = {**fit, "optimizer": {k: v for k, v in fit.get("optimizer", {}).items() if k != "max_evaluations"}}
    namespace = namespace_of(fit_name, config_hash(identity), master_seed, text, content, version("chemfit-core"))
    return EvaluationCache(Path(workdir) / "cache", namespace)


def run_cache(workdir: Path | str) -> OutputCache:
    """The cache of a fit's LAMMPS runs, in ``<workdir>/cache/runs``: keyed by each run's
    rendered input (parameters, state point, seed), command, LAMMPS version and chemfit_core
    version, so a run is reused by any fit, rerun or edited config that asks for it again."""
    from importlib.metadata import version

    from chemfit_core.external.lammps import lammps_version

    return OutputCache(Path(workdir) / "cache" / "runs", salt=("lammps", lammps_version(), version("chemfit-core")))


def params_summary(fit_name: str, fit: Mapping[str, Any], fitted: Mapping[str, float], result: Any) -> dict[str, Any]:
    """Fitted values with units, initial values and the published reference where known, and the
    fit's warnings (:func:`fit_warnings`)."""
    parameters = {}
    for name, spec in fit["parameters"].items():
        entry = {"value": fitted[name], "unit": spec.get("unit", ""), "initial": spec["initial"]}
        if name in result.standard_errors():
            entry["standard_error"] = result.standard_errors()[name]
        if "reference" in spec:
            entry["reference"] = spec["reference"]
            entry["reference_source"] = spec.get("reference_source", "")
            entry["deviation_from_reference"] = fitted[name] - spec["reference"]
            if spec["reference"] != 0:  # a published zero (no term) has no relative deviation
                entry["deviation_from_reference_percent"] = 100.0 * (fitted[name] / spec["reference"] - 1.0)
        parameters[name] = entry
    return {
        fit_name: {
            "potential": potential_form_of(fit).spec(),  # only the options the form uses
            "parameters": parameters,
            "objective": result.objective,
            "n_evaluations": result.n_evaluations,
            "method": result.method,
            "converged": result.success,
            "message": result.message,
            "warnings": fit_warnings(fit, fitted, result),
        }
    }


NEAR_BOUND_FRACTION = 0.01
"""A fitted parameter within this fraction of its range from a bound is flagged (the Fitter's own tolerance)."""
CHI2_WARNING = 4.0
"""χ² per degree of freedom above which a fit is flagged: its residuals are, in root mean square, more
than two denominators (the tolerance a target's denominator sets)."""


def fit_warnings(fit: Mapping[str, Any], fitted: Mapping[str, float], result: Any) -> list[dict[str, Any]]:
    """What makes a fit suspect, from its result and config: parameters at or near their bounds
    (``bound``), the optimiser stopped on its evaluation budget (``budget``) or otherwise without
    converging (``not_converged``), and the objective far above the number of residuals (``chi2``:
    χ² per degree of freedom, objective / (residuals − parameters), above :data:`CHI2_WARNING`).
    Each warning: ``{"kind", "message"}`` plus the numbers it rests on."""
    warnings: list[dict[str, Any]] = []
    for name, spec in fit["parameters"].items():
        lower, upper = float(spec.get("lower", -np.inf)), float(spec.get("upper", np.inf))
        value = float(fitted[name])
        if not (np.isfinite(lower) and np.isfinite(upper)) or upper <= lower:
            continue
        margin = NEAR_BOUND_FRACTION * (upper - lower)
        for side, bound in (("lower", lower), ("upper", upper)):
            distance = abs(value - bound)
            if distance <= margin:
                where = "at" if distance <= 1e-6 * (upper - lower) else "near"
                warnings.append(
                    {
                        "kind": "bound",
                        "parameter": name,
                        "value": value,
                        "bound": bound,
                        "message": f"parameter {name} = {value:.6g} is {where} its {side} bound {bound:g}: "
                        "the data may want it beyond, widen the bounds or question the form",
                    }
                )
    budget = fit.get("optimizer", {}).get("max_evaluations")
    budget_words = ("maximum number", "max_nfev", "maxfev", "maxiter", "budget", "iteration limit")
    on_budget = budget is not None and (
        result.n_evaluations >= budget or any(w in str(result.message).lower() for w in budget_words)
    )
    if not result.success and on_budget:
        warnings.append(
            {
                "kind": "budget",
                "n_evaluations": result.n_evaluations,
                "max_evaluations": budget,
                "message": f"the optimiser stopped on its budget ({result.n_evaluations} of {budget} evaluations: "
                f"{result.message}); the parameters are where it stopped, not a minimum",
            }
        )
    elif not result.success:
        warnings.append(
            {"kind": "not_converged", "message": f"the optimiser stopped without converging: {result.message}"}
        )
    best = [e for e in result.history if e.error is None and e.objective == result.objective and e.residuals]
    if best:
        n_residuals, n_parameters = len(best[0].residuals), len(fit["parameters"])
        dof = max(n_residuals - n_parameters, 1)
        chi2 = float(result.objective) / dof
        if chi2 > CHI2_WARNING:
            warnings.append(
                {
                    "kind": "chi2",
                    "chi2_per_dof": chi2,
                    "n_residuals": n_residuals,
                    "message": f"objective {result.objective:.4g} is far above the {n_residuals} residuals: χ² per "
                    f"degree of freedom {chi2:.3g} (> {CHI2_WARNING:g}; {n_residuals} residuals, {n_parameters} "
                    "parameters): the targets are not met within their denominators",
                }
            )
    return warnings


def _mean_properties_by_state(
    per_term: Sequence[Mapping[str, Any] | None] | None, terms_info: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, float]]:
    if not per_term:
        return {}
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for props, info in zip(per_term, terms_info):
        if props is not None:
            grouped.setdefault(info["state_point"], []).append(props)
    return {
        state: {
            key: float(np.mean([p[key] for p in props]))
            for key, value in props[0].items()
            if isinstance(value, (int, float))
        }
        for state, props in grouped.items()
    }
