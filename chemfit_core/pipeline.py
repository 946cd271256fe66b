"""The workflow's stages as plain functions: the Snakemake scripts only call these.

Stages of one fit (see ``rules/``):

1. :func:`run_fit` — build the objective (one term per state point and replica,
   each an NPT LAMMPS run with its own fixed seed), evaluate its terms
   concurrently with :class:`AsyncWrapperCOB` and minimise it; write the fitted
   parameters and the full history.
2. :func:`render_validation_input` — the LAMMPS input of a longer run at the
   fitted parameters, with seeds independent of the fit's.
3. :func:`analyse_validation` — properties of those runs next to the targets and
   the values at the initial parameters.
4. :func:`collect_results` — all fits in one ``params.json`` and ``properties.csv``.
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
import pandas as pd

from chemfit_core.async_wrapper_cob import AsyncWrapperCOB
from chemfit_core.combined_objective_function import CombinedObjectiveFunction
from chemfit_core.config import config_hash, derived_seed
from chemfit_core.file_based_computer import render_template
from chemfit_core.fitter import Fitter
from chemfit_core.liquid import (
    KB_EV_PER_K,
    PROPERTY_UNITS,
    LiquidStatePointTerm,
    Reference,
    liquid_template_variables,
    properties_from_log,
    validation_template_variables,
)
from chemfit_core.cache import EvaluationCache, OutputCache, namespace_of
from chemfit_core.results import atomic_write_text, read_json, write_csv, write_json
from chemfit_core.targets import potential_form_of, propagate, targets_from_config

logger = logging.getLogger(__name__)


def references_of(state_point: Mapping[str, Any]) -> dict[str, Reference]:
    """The measured targets of a state point, keyed by property name."""
    return {
        key: Reference(spec["value"], spec["denominator"], spec.get("source", ""))
        for key in PROPERTY_UNITS
        if (spec := state_point.get(key)) is not None
    }


def build_objective(
    fit_name: str,
    fit: Mapping[str, Any],
    master_seed: int,
    template: Path | str | None,
    workdir: Path | str,
) -> tuple[CombinedObjectiveFunction, list[dict[str, Any]]]:
    """All of a fit's terms: liquid state points (LAMMPS), then crystal and structures (in-process).

    Returns the combined objective and, per term, its name and state point (``crystal``,
    ``structures`` for in-process terms), and for liquid terms replica and seed.
    """
    cob, terms_info = (build_liquid_objective(fit_name, fit, master_seed, template, workdir) if "liquid" in fit
                       else (CombinedObjectiveFunction(), []))
    for name, term, weight in targets_from_config(fit):
        cob.add(term, weights=weight, names=name)
        terms_info.append({"name": name, "state_point": name})
    return cob, terms_info


def build_liquid_objective(
    fit_name: str,
    fit: Mapping[str, Any],
    master_seed: int,
    template: Path | str,
    workdir: Path | str,
) -> tuple[CombinedObjectiveFunction, list[dict[str, Any]]]:
    """One term per (state point, replica); a state point's weight is split over its replicas.

    Returns the combined objective and, per term, its state point, replica and seed.
    """
    variables = liquid_template_variables(fit)
    md = fit["liquid"]["md"]
    form = None
    if fit["optimizer"].get("jacobian") in ("analytic", "fluctuation"):
        from chemfit_core.forms import potential_form

        form = potential_form({**fit["potential"], "element": fit["element"]})
    runs = run_cache(workdir)
    cob = CombinedObjectiveFunction()
    terms_info = []
    for sp in fit["liquid"]["state_points"]:
        for replica in range(sp["replicas"]):
            seed = derived_seed(master_seed, fit_name, sp["name"], replica, "fit")
            name = f"{sp['name']}/r{replica}"
            term = LiquidStatePointTerm(
                name=name,
                template=template,
                workdir=Path(workdir),
                temperature_K=sp["temperature_K"],
                pressure_bar=sp["pressure_bar"],
                references=references_of(sp),
                seed=seed,
                template_variables=variables,
                n_blocks=md["n_blocks"],
                command_timeout=md["timeout_s"],
                form=form,
                output_cache=runs,
                dump_every=md.get("dump_every", 40),
            )
            cob.add(term, weights=sp["weight"] / sp["replicas"], names=name)
            terms_info.append({"name": name, "state_point": sp["name"], "replica": replica, "seed": seed})
    return cob, terms_info


def _workers(requested: int) -> int:
    """``requested`` workers, or one per core available to this process when 0."""
    if requested > 0:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


GLOBAL_METHODS = ("differential_evolution", "dual_annealing", "direct")
_BUDGET_KEYS = {"Nelder-Mead": "maxfev", "Powell": "maxfev", "COBYQA": "maxfev", "COBYLA": "maxiter",
                "L-BFGS-B": "maxfun", "TNC": "maxfun"}


def minimise(fitter: Fitter, optimizer: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Run the configured optimiser with its evaluation budget; return the best parameters."""
    method, budget = optimizer["method"], optimizer["max_evaluations"]
    options = dict(optimizer["options"])
    if method == "differential_evolution":
        popsize = options.get("popsize", 15)
        options.setdefault("maxiter", max(1, budget // (popsize * len(fitter.names)) - 1))
        return fitter.fit_global(method, seed=seed, **options)
    if method == "least_squares":
        jac = optimizer.get("jacobian", "2-point")
        return fitter.fit_least_squares(jac="analytic" if jac in ("analytic", "fluctuation") else jac,
                                        **{"max_nfev": budget, **options})
    if method in GLOBAL_METHODS:
        return fitter.fit_global(method, seed=seed, **{"maxfun": budget, **options})
    options.setdefault(_BUDGET_KEYS.get(method, "maxiter"), budget)
    return fitter.fit_scipy(method=method, options=options)


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
) -> dict[str, Any] | None:
    """Fit one configuration's parameters; write fit.json, params.json and the history CSV.

    With ``mpi`` every rank of ``MPI.COMM_WORLD`` calls this: rank 0 fits and writes, the
    others evaluate their share of the terms (:class:`MPIWrapperCOB`) and return None.
    """
    cob, terms_info = build_objective(fit_name, fit, master_seed, template, workdir)
    with _evaluator(cob, fit, workers, mpi) as (objective, n_workers):
        if objective is None:  # an MPI worker rank: it evaluated its share until rank 0 was done
            return None
        return _fit_and_write(fit_name, fit, master_seed, template, workdir, objective, n_workers, terms_info,
                              fit_json, params_json, history_csv)


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
        logger.info("inside SLURM job %s (CPUs per node %s, nodes %s)", os.environ["SLURM_JOB_ID"],
                    os.environ.get("SLURM_JOB_CPUS_PER_NODE", "?"), os.environ.get("SLURM_JOB_NODELIST", "?"))
    with open(log, "a") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "".join(Path(log).read_text().splitlines(keepends=True)[-20:])
        raise ChemFitError(f"the MPI fit ({' '.join(command)}) exited with {done.returncode}; "
                           f"its output ends ({log}):\n{tail}")


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
            logger.info("MPI: %d ranks evaluate the %d terms (rank r: terms r, r + %d, ...)", wrapper.size,
                        cob.n_terms(), wrapper.size)
            yield wrapper, wrapper.size


def _fit_and_write(fit_name: str, fit: Mapping[str, Any], master_seed: int, template: Path | str | None,
                   workdir: Path | str, objective: Any, n_workers: int, terms_info: list[dict[str, Any]],
                   fit_json: Path | str, params_json: Path | str, history_csv: Path | str) -> dict[str, Any]:
    """Minimise ``objective`` (rank 0 / the only process) from the config's start, replaying the
    cache, and write the fit's three result files."""
    cob = objective.cob
    parameters = fit["parameters"]
    initial = {name: p["initial"] for name, p in parameters.items()}
    bounds = {name: (p["lower"], p["upper"]) for name, p in parameters.items()}
    optimizer = fit["optimizer"]
    logger.info(
        "fit %s: %d terms (%s) on %d workers, %s, at most %d evaluations",
        fit_name, cob.n_terms(), ", ".join(cob.names), n_workers, optimizer["method"], optimizer["max_evaluations"],
    )
    start = time.monotonic()
    cache = fit_cache(fit_name, fit, master_seed, template, workdir)
    if len(cache):
        logger.info("fit %s: %d evaluations in the cache %s: a previous run is resumed", fit_name, len(cache),
                    cache.directory)
    fitter = Fitter(objective, initial, bounds, near_bound_tol=0.01, normalize=True, cache=cache)
    minimise(fitter, optimizer, seed=derived_seed(master_seed, fit_name, "optimizer"))
    logger.info("fit %s: %d evaluations replayed from the cache, %d computed", fit_name, fitter.n_replayed,
                len(fitter.history) - fitter.n_replayed)
    runs = {id(c): c for c in (getattr(getattr(t, "computer", None), "output_cache", None)
                               for t in cob.objective_functions) if c is not None}
    for cache in runs.values():  # under MPI: the runs of rank 0's terms
        logger.info("fit %s: LAMMPS runs: %d read from %s, %d run", fit_name, cache.hits, cache.directory,
                    cache.misses)
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
        "evaluator": "mpi" if type(objective).__name__ == "MPIWrapperCOB" else "threads",
        "wall_time_s": time.monotonic() - start,
        "initial_properties": initial_properties,
        "evaluations_replayed_from_cache": fitter.n_replayed,
        "python": platform.python_version(),
        **result.to_dict(),
    }
    write_json(fit_json, record)
    write_json(params_json, params_summary(fit_name, fit, fitted, result))
    write_csv(history_csv, result.history_frame())
    return record


def fit_cache(fit_name: str, fit: Mapping[str, Any], master_seed: int, template: Path | str | None,
              workdir: Path | str) -> EvaluationCache:
    """The evaluation cache of a fit, in ``<workdir>/cache``: keyed by the fit's configuration,
    master seed, template text and chemfit_core version, so any change starts afresh."""
    from importlib.metadata import version

    text = Path(template).read_text() if template else None
    namespace = namespace_of(fit_name, config_hash(fit), master_seed, text, version("chemfit-core"))
    return EvaluationCache(Path(workdir) / "cache", namespace)


def run_cache(workdir: Path | str) -> OutputCache:
    """The cache of a fit's LAMMPS runs, in ``<workdir>/cache/runs``: keyed by each run's
    rendered input (parameters, state point, seed), command, LAMMPS version and chemfit_core
    version, so a run is reused by any fit, rerun or edited config that asks for it again."""
    from importlib.metadata import version

    from chemfit_core.lammps import lammps_version

    return OutputCache(Path(workdir) / "cache" / "runs", salt=("lammps", lammps_version(), version("chemfit-core")))


def params_summary(fit_name: str, fit: Mapping[str, Any], fitted: Mapping[str, float], result: Any) -> dict[str, Any]:
    """Fitted values with units, initial values and the published reference where known."""
    parameters = {}
    for name, spec in fit["parameters"].items():
        entry = {"value": fitted[name], "unit": spec.get("unit", ""), "initial": spec["initial"]}
        if name in result.standard_errors():
            entry["standard_error"] = result.standard_errors()[name]
        if "reference" in spec:
            entry["reference"] = spec["reference"]
            entry["reference_source"] = spec.get("reference_source", "")
            entry["deviation_from_reference_percent"] = 100.0 * (fitted[name] / spec["reference"] - 1.0)
        parameters[name] = entry
    return {
        fit_name: {
            "potential": {**fit["potential"], "element": fit["element"]},
            "parameters": parameters,
            "objective": result.objective,
            "n_evaluations": result.n_evaluations,
            "method": result.method,
            "converged": result.success,
            "message": result.message,
        }
    }


def fitted_model_spec(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The torch model (``models.build_model`` spec) of a fit's ``params.json`` entry."""
    potential = summary["potential"]
    values = {name: entry["value"] for name, entry in summary["parameters"].items()}
    if potential["form"] == "lj/cut":
        return {
            "form": "lj/cut",
            "epsilon": values["epsilon_K"] * KB_EV_PER_K,
            "sigma": values["sigma_A"],
            "cutoff": potential["cutoff_sigma"] * values["sigma_A"],
            "species": [potential.get("element", "Ar")],
        }
    raise ValueError(f"no torch model for potential form {potential['form']!r}")


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
        state: {key: float(np.mean([p[key] for p in props])) for key, value in props[0].items()
                if isinstance(value, (int, float))}
        for state, props in grouped.items()
    }


def validation_seed(master_seed: int, fit_name: str, state: str, replica: int) -> int:
    """Seed of a validation replica: independent of every seed the fit used."""
    return derived_seed(master_seed, fit_name, state, replica, "validation")


def state_point(fit: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The state point called ``name`` in a fit's configuration."""
    for sp in fit["liquid"]["state_points"]:
        if sp["name"] == name:
            return sp
    raise KeyError(f"no state point named {name!r}")


def render_validation_input(
    fit_name: str,
    fit: Mapping[str, Any],
    master_seed: int,
    params_json: Path | str,
    template: Path | str,
    state: str,
    replica: int,
    out_path: Path | str,
) -> None:
    """Write the LAMMPS input of validation replica ``replica`` at state point ``state``."""
    fitted = {name: entry["value"] for name, entry in read_json(params_json)[fit_name]["parameters"].items()}
    sp = state_point(fit, state)
    variables = {**validation_template_variables(fit, sp, validation_seed(master_seed, fit_name, state, replica)),
                 **fitted}
    atomic_write_text(out_path, render_template(template, variables))


def analyse_validation(
    fit_name: str,
    fit: Mapping[str, Any],
    fit_json: Path | str,
    logs: Mapping[str, Sequence[Path | str]],
    out_csv: Path | str,
    workdir: Path | str | None = None,
) -> pd.DataFrame:
    """Properties at the fitted parameters next to targets and initial values.

    Liquid: ``logs`` maps a state point name to the LAMMPS logs of its validation
    replicas; the statistical uncertainty combines the replicas' block-average standard
    errors. Crystal and structures: recomputed in-process at the fitted parameters, with
    the parameter covariance propagated (``parameter_uncertainty``), plus the LAMMPS
    round trip of the fitted model (``workdir`` holds its files).
    """
    record = read_json(fit_json)
    rows = _liquid_rows(fit_name, fit, record.get("initial_properties", {}), logs, _liquid_gradients(record))
    if "crystal" in fit or "structures" in fit:
        rows += _in_process_rows(fit_name, fit, record, Path(workdir or Path(out_csv).parent / "roundtrip"))
    frame = pd.DataFrame(rows)
    write_csv(out_csv, frame)
    return frame


def _row(fit_name: str, state: str, prop: str, unit: str, spec: Mapping[str, Any] | None, fitted_to: bool,
         initial: float, value: float, **extra: Any) -> dict[str, Any]:
    target = spec["value"] if spec else np.nan
    return {
        "fit": fit_name, "state_point": state, "temperature_K": extra.pop("temperature_K", np.nan),
        "pressure_bar": extra.pop("pressure_bar", np.nan), "property": prop, "unit": unit, "fitted_to": fitted_to,
        "target": target, "initial": initial, "fitted": value, "error": value - target,
        "error_percent": 100.0 * (value / target - 1.0) if spec else np.nan,
        "statistical_uncertainty": extra.pop("statistical_uncertainty", np.nan),
        "parameter_uncertainty": extra.pop("parameter_uncertainty", np.nan),
        "replicas": extra.pop("replicas", np.nan), "source": spec.get("source", "") if spec else "",
    }


def _liquid_gradients(record: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per state point, σ of each liquid property propagated from the parameter covariance,
    with the fluctuation gradients of the best evaluation (least squares, analytic Jacobian)."""
    if not record.get("covariance") or not record.get("history"):
        return {}
    names = record["parameter_names"]
    covariance = np.array(record["covariance"])
    best = min((e for e in record["history"] if e.get("properties")), key=lambda e: e["objective"], default=None)
    if best is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    for info, props in zip(record.get("terms", []), best["properties"]):
        if not props or "state_point" not in info or info.get("replica") is None:
            continue
        for key in PROPERTY_UNITS:
            g = [props.get(f"d_{key}/d_{name}") for name in names]
            if None not in g:
                g = np.array(g, dtype=float)
                out.setdefault(info["state_point"], {}).setdefault(key, []).append(float(np.sqrt(g @ covariance @ g)))
    return {sp: {k: float(np.mean(v)) for k, v in d.items()} for sp, d in out.items()}


def _liquid_rows(fit_name: str, fit: Mapping[str, Any], initial: Mapping[str, Any],
                 logs: Mapping[str, Sequence[Path | str]], propagated: Mapping[str, Mapping[str, float]] | None = None
                 ) -> list[dict[str, Any]]:
    propagated = propagated or {}
    rows = []
    for state, paths in logs.items():
        sp = state_point(fit, state)
        n_blocks = fit["liquid"]["md"]["n_blocks"]
        measured = [
            properties_from_log(p, sp["temperature_K"], n_blocks, sp["pressure_bar"]).as_dict() for p in paths
        ]
        for key, unit in PROPERTY_UNITS.items():
            values = np.array([m[key] for m in measured])
            sems = np.array([m[f"{key}_sem"] for m in measured])
            # replicas are independent: combine their standard errors, and do not
            # claim less than the spread between replicas shows
            sem = float(np.sqrt(np.sum(sems**2)) / len(values))
            if len(values) > 1:
                sem = max(sem, float(values.std(ddof=1) / np.sqrt(len(values))))
            spec = sp.get(key)
            rows.append(_row(fit_name, state, key, unit, spec, bool(spec), initial.get(state, {}).get(key, np.nan),
                             float(values.mean()), temperature_K=sp["temperature_K"], pressure_bar=sp["pressure_bar"],
                             statistical_uncertainty=sem, replicas=len(values),
                             parameter_uncertainty=propagated.get(state, {}).get(key, np.nan)))
    return rows


def _in_process_rows(fit_name: str, fit: Mapping[str, Any], record: Mapping[str, Any], workdir: Path
                     ) -> list[dict[str, Any]]:
    from chemfit_core.crystal import UNITS
    from chemfit_core.roundtrip import round_trip

    fitted = record["parameters"]
    names = record.get("parameter_names") or list(fitted)
    covariance = np.array(record["covariance"]) if record.get("covariance") else None
    initial = record.get("initial_properties", {})
    rows = []
    for name, term, _ in targets_from_config(fit):
        if name == "crystal":
            values = term.properties(fitted)
            errors = propagate(term.properties, fitted, covariance, names) if covariance is not None else {}
            refs = {**fit["crystal"].get("validation_references", {}), **fit["crystal"]["references"]}
            for prop, value in values.items():
                rows.append(_row(fit_name, "crystal", prop, UNITS[prop], refs.get(prop), prop in term.references,
                                 initial.get("crystal", {}).get(prop, np.nan), value,
                                 parameter_uncertainty=errors.get(prop, np.nan)))
        else:
            from chemfit_core.abstract_objective_function import EvaluateContext

            ctx = EvaluateContext()
            term(fitted, ctx)
            for prop, unit in (("energy_rmse_eV_atom", "eV/atom"), ("force_rmse_eV_A", "eV/Å")):
                rows.append(_row(fit_name, "structures", prop, unit, None, True,
                                 initial.get("structures", {}).get(prop, np.nan), ctx.meta["properties"][prop]))
            structures = term.structures
    if "structures" not in fit:  # round trip on rattled crystals of the fitted lattice
        from chemfit_core.targets import rattled_cells

        a0 = next((r["fitted"] for r in rows if r["property"] == "a0_A"), fit["crystal"]["a_guess_A"])
        structures = rattled_cells(fit["element"], 6, a0, seed=0)  # evaluated by torch and LAMMPS in round_trip
    worst = round_trip(potential_form_of(fit).model(fitted), structures, workdir)
    for key, value in worst.items():
        rows.append(_row(fit_name, "lammps_round_trip", f"max_relative_difference_{key}", "1", None, False, np.nan,
                         value))
    return rows


def collect_results(
    params_jsons: Sequence[Path | str],
    property_csvs: Sequence[Path | str],
    out_params: Path | str,
    out_properties: Path | str,
) -> None:
    """Merge every fit's params.json and properties.csv into one of each."""
    merged: dict[str, Any] = {}
    for path in params_jsons:
        merged.update(read_json(path))
    write_json(out_params, merged)
    frames = [pd.read_csv(p) for p in property_csvs]
    write_csv(out_properties, pd.concat(frames, ignore_index=True))
