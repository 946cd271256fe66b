"""Properties at the fitted parameters: the stages after a fit (see ``rules/simulate.smk``).

1. :func:`render_validation_input` — the LAMMPS input of a longer run at the fitted
   parameters, with seeds independent of the fit's (rule ``render_validation_input``).
2. :func:`analyse_validation` — properties of those runs, and of the in-process crystal
   and structure targets, next to the targets and the values at the initial
   parameters, with statistical and parameter uncertainties; the LAMMPS round trip of
   the fitted model (rule ``validate``).
3. :func:`collect_results` — all fits in one ``params.json`` and ``properties.csv``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chemfit_core.file_based_computer import render_template
from chemfit_core.results import atomic_write_text, read_json, write_csv, write_json
from chemfit_core.science.liquid import DIFFUSION_KEY, PROPERTY_UNITS, TARGET_UNITS, properties_from_log
from chemfit_core.science.molecules import RIGID, GasPhaseResult
from chemfit_core.science.observables import RESPONSE_UNITS
from chemfit_core.science.targets import propagate
from chemfit_core.stages.config import derived_seed
from chemfit_core.stages.crystal_inputs import crystal_entries, has_crystals
from chemfit_core.stages.objective import (
    gas_phase_run,
    molecules_of,
    observables_of,
    potential_form_of,
    rdf_of,
    targets_from_config,
    validation_template_variables,
)
from chemfit_core.term_result import TermResult


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
    variables = {
        **validation_template_variables(fit, sp, validation_seed(master_seed, fit_name, state, replica)),
        **fitted,
    }
    if "pair_lines" in Path(template).read_text():  # the form's lines, its files beside the input
        from chemfit_core.science.rerun import form_template_variables

        variables.update(form_template_variables(potential_form_of(fit), fitted, Path(out_path).parent))
    atomic_write_text(out_path, render_template(template, variables))
    for path in map(Path, fit["liquid"]["files"]):  # the run reads them from its own folder
        shutil.copyfile(path, Path(out_path).parent / path.name)


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
    gas = _gas_phase(fit_name, fit, record, logs, Path(workdir or Path(out_csv).parent / "roundtrip").parent / "gas")
    rows = _liquid_rows(fit_name, fit, record.get("initial_properties", {}), logs, _liquid_gradients(record), gas)
    if has_crystals(fit) or "structures" in fit:
        rows += _in_process_rows(fit_name, fit, record, Path(workdir or Path(out_csv).parent / "roundtrip"))
    frame = pd.DataFrame(rows)
    write_csv(out_csv, frame)
    return frame


def _row(
    fit_name: str,
    state: str,
    prop: str,
    unit: str,
    spec: Mapping[str, Any] | None,
    fitted_to: bool,
    initial: float,
    value: float,
    **extra: Any,
) -> dict[str, Any]:
    target = spec["value"] if spec else np.nan
    return {
        "fit": fit_name,
        "state_point": state,
        "temperature_K": extra.pop("temperature_K", np.nan),
        "pressure_bar": extra.pop("pressure_bar", np.nan),
        "property": prop,
        "unit": unit,
        "fitted_to": fitted_to,
        "target": target,
        "initial": initial,
        "fitted": value,
        "error": value - target,
        "error_percent": 100.0 * (value / target - 1.0) if spec and target else np.nan,
        "statistical_uncertainty": extra.pop("statistical_uncertainty", np.nan),
        "parameter_uncertainty": extra.pop("parameter_uncertainty", np.nan),
        "replicas": extra.pop("replicas", np.nan),
        "source": spec.get("source", "") if spec else "",
    }


def _liquid_gradients(record: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per state point, σ of each liquid property propagated from the parameter covariance,
    with the fluctuation gradients of the best evaluation (least squares, analytic Jacobian)."""
    if not record.get("covariance") or not record.get("history"):
        return {}
    names = record["parameter_names"]
    covariance = np.array(record["covariance"])
    best = min((e for e in record["history"] if e.get("term_results")), key=lambda e: e["objective"], default=None)
    if best is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    for info, data in zip(record.get("terms", []), best["term_results"]):
        result = TermResult.from_dict(data)
        if result is None or "state_point" not in info or info.get("replica") is None:
            continue
        for key in result.derivatives:
            g = [result.derivatives.get(key, {}).get(name) for name in names]
            if None not in g:
                g = np.array(g, dtype=float)
                out.setdefault(info["state_point"], {}).setdefault(key, []).append(float(np.sqrt(g @ covariance @ g)))
    return {sp: {k: float(np.mean(v)) for k, v in d.items()} for sp, d in out.items()}


def _gas_phase(
    fit_name: str, fit: Mapping[str, Any], record: Mapping[str, Any], logs: Mapping[str, Any], workdir: Path
) -> dict[str, GasPhaseResult]:
    """⟨U_gas⟩ per state point at the fitted parameters, from a gas-phase run with a validation seed
    (``liquid.molecule.gas``); empty without one (atoms, rigid molecules: U_gas = 0)."""
    if "liquid" not in fit or "gas" not in fit["liquid"].get("molecule", {}):
        return {}
    fitted = record["parameters"]
    out = {}
    for state in logs:
        seed = derived_seed(record.get("seed", 0), fit_name, state, "gas", "validation")
        out[state] = gas_phase_run(fit, state_point(fit, state), seed, workdir)(fitted)
    return out


def _liquid_rows(
    fit_name: str,
    fit: Mapping[str, Any],
    initial: Mapping[str, Any],
    logs: Mapping[str, Sequence[Path | str]],
    propagated: Mapping[str, Mapping[str, float]] | None = None,
    gas: Mapping[str, GasPhaseResult] | None = None,
) -> list[dict[str, Any]]:
    propagated, gas = propagated or {}, gas or {}
    molecules = molecules_of(fit) if logs else None
    rows = []
    for state, paths in logs.items():
        sp = state_point(fit, state)
        n_blocks = fit["liquid"]["md"]["n_blocks"]
        observables = observables_of(sp)
        responses = [key for key in RESPONSE_UNITS if key in sp]
        rdf = rdf_of(fit, sp)
        measured = [
            properties_from_log(
                p,
                sp["temperature_K"],
                n_blocks,
                sp["pressure_bar"],
                molecules,
                gas.get(state, RIGID),
                responses,
                observables,
                rdf,
                DIFFUSION_KEY in sp,
            ).as_dict()
            for p in paths
        ]
        units = {**PROPERTY_UNITS, **{k: TARGET_UNITS[k] for k in [*responses, DIFFUSION_KEY] if k in sp}}
        units.update({"rdf_rmsd": ""} if rdf is not None else {})  # RMS deviation from the reference g(r)
        units.update({name: o.unit for name, o in observables.items()})
        for key, unit in units.items():
            values = np.array([m[key] for m in measured])
            sems = np.array([m[f"{key}_sem"] for m in measured])
            # replicas are independent: combine their standard errors, and do not
            # claim less than the spread between replicas shows
            sem = float(np.sqrt(np.sum(sems**2)) / len(values))
            if len(values) > 1:
                sem = max(sem, float(values.std(ddof=1) / np.sqrt(len(values))))
            spec = sp.get(key) or sp.get("observables", {}).get(key)
            if key == "rdf_rmsd":  # its target is the reference curve itself: 0
                spec = {"value": 0.0, "source": sp["rdf"]["source"]}
            rows.append(
                _row(
                    fit_name,
                    state,
                    key,
                    unit,
                    spec,
                    bool(spec),
                    initial.get(state, {}).get(key, np.nan),
                    float(values.mean()),
                    temperature_K=sp["temperature_K"],
                    pressure_bar=sp["pressure_bar"],
                    statistical_uncertainty=sem,
                    replicas=len(values),
                    parameter_uncertainty=propagated.get(state, {}).get(key, np.nan),
                )
            )
    return rows


def _in_process_rows(
    fit_name: str, fit: Mapping[str, Any], record: Mapping[str, Any], workdir: Path
) -> list[dict[str, Any]]:
    from chemfit_core.science.roundtrip import round_trip

    fitted = record["parameters"]
    initial = record.get("initial_properties", {})
    rows = []
    crystals = {entry.term: entry.section for entry in crystal_entries(fit)}
    for name, term, _ in targets_from_config(fit):
        if name in crystals:
            rows += _crystal_rows(fit_name, fit, name, crystals[name], term, record, initial.get(name))
        else:
            from chemfit_core.abstract_objective_function import EvaluateContext

            ctx = EvaluateContext()
            term(fitted, ctx)
            for prop, unit in (("energy_rmse_eV_atom", "eV/atom"), ("force_rmse_eV_A", "eV/Å")):
                rows.append(
                    _row(
                        fit_name,
                        "structures",
                        prop,
                        unit,
                        None,
                        True,
                        initial.get("structures", {}).get(prop, np.nan),
                        ctx.result.properties[prop],
                    )
                )
            structures = term.structures
    if "structures" not in fit:  # round trip on rattled crystals of the fitted lattice
        from chemfit_core.science.targets import rattled_cells

        a_guess = next(iter(crystals.values()))["a_guess_A"]
        a0 = next((r["fitted"] for r in rows if r["property"] == "a0_A"), a_guess)
        structures = rattled_cells(fit["element"], 6, a0, seed=0)  # evaluated by torch and LAMMPS in round_trip
    worst = round_trip(potential_form_of(fit), fitted, structures, workdir)
    for key, value in worst.items():
        rows.append(
            _row(fit_name, "lammps_round_trip", f"max_relative_difference_{key}", "1", None, False, np.nan, value)
        )
    return rows


def _crystal_rows(
    fit_name: str,
    fit: Mapping[str, Any],
    name: str,
    section: Mapping[str, Any],
    term: Any,
    record: Mapping[str, Any],
    initial: Mapping[str, float] | None,
) -> list[dict[str, Any]]:
    """One crystal target's properties at the fitted parameters (units of
    :data:`chemfit_core.science.crystal.UNITS`), state point ``name``, with the parameter
    covariance propagated; a weight-0 crystal, not evaluated during the fit, is evaluated at the
    initial parameters here."""
    from chemfit_core.science.crystal import UNITS

    fitted = record["parameters"]
    names = record.get("parameter_names") or list(fitted)
    covariance = np.array(record["covariance"]) if record.get("covariance") else None
    values = term.properties(fitted)
    if initial is None:
        initial = term.properties({n: p["initial"] for n, p in fit["parameters"].items()})
    errors = propagate(term.properties, fitted, covariance, names) if covariance is not None else {}
    refs = {**section.get("validation_references", {}), **section["references"]}
    return [
        _row(
            fit_name,
            name,
            prop,
            UNITS[prop],
            refs.get(prop),
            prop in term.references and section["weight"] > 0,  # weight 0: reported
            initial.get(prop, np.nan),
            value,
            parameter_uncertainty=errors.get(prop, np.nan),
        )
        for prop, value in values.items()
    ]


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
