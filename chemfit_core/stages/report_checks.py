"""The report's checks: each property against its tolerance, and the warnings they raise.

Fitted properties are held to :data:`FITTED_TOLERANCE` × their denominator, unfitted ones to
:data:`UNFITTED_WARNING_PERCENT` of their reference, and the LAMMPS round trip to
:data:`ROUND_TRIP_TOLERANCE`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from chemfit_core.stages.crystal_inputs import crystal_entries, crystal_label, is_crystal_term
from chemfit_core.stages.report_format import Table, as_number, format_value_uncertainty, state_label, yes_no

IN_PROCESS = ("crystal", "structures", "solid")
"""State points of properties computed in-process (no temperature or pressure); the crystals of a
``crystals`` section are ``crystal:<name>`` (:func:`~chemfit_core.stages.crystal_inputs.is_crystal_term`)."""
ROUND_TRIP = "lammps_round_trip"
"""The state point of the LAMMPS round-trip rows of properties.csv (diagnostics, not properties)."""
FITTED_TOLERANCE = 2.0
"""A fitted property more than this many denominators from its target is flagged."""
UNFITTED_WARNING_PERCENT = 10.0
"""A property the fit did not target and that misses its reference by more than this is flagged."""
ROUND_TRIP_TOLERANCE = 1e-6
"""Largest relative difference between the model in torch and in LAMMPS that passes."""


def fit_property_rows(properties: pd.DataFrame, fit_name: str) -> pd.DataFrame:
    """A fit's rows of properties.csv without the LAMMPS round-trip rows (empty without any)."""
    if properties is None or properties.empty:
        return pd.DataFrame()
    rows = properties[properties["fit"] == fit_name]
    return rows[rows["state_point"] != ROUND_TRIP] if "state_point" in rows else rows


def denominators(config: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """(state point, property) → the denominator (tolerance) a fit's config gives its target:
    liquid state points, crystal references, and the structures' energy and force RMSE."""
    out: dict[tuple[str, str], float] = {}
    for sp in config.get("liquid", {}).get("state_points", []):
        for key, spec in sp.items():
            if isinstance(spec, Mapping) and "denominator" in spec:
                out[(sp["name"], key)] = float(spec["denominator"])
        for key, spec in sp.get("observables", {}).items():  # thermo-column targets, by their names
            out[(sp["name"], key)] = float(spec["denominator"])
        if "rdf" in sp:  # the RDF's property is its RMS deviation from the reference curve
            out[(sp["name"], "rdf_rmsd")] = float(sp["rdf"]["denominator"])
    for entry in crystal_entries(config):  # each crystal's references, by its term's name
        for key, spec in entry.section.get("references", {}).items():
            out[(entry.term, key)] = float(spec["denominator"])
    structures = config.get("structures", {})
    for key, spec_key in (("energy_rmse_eV_atom", "energy_denominator"), ("force_rmse_eV_A", "force_denominator")):
        if structures.get(spec_key) is not None:
            out[("structures", key)] = float(structures[spec_key])
    return out


def property_checks(properties: pd.DataFrame, fit_name: str, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each of a fit's properties against its tolerance: fitted ones against
    :data:`FITTED_TOLERANCE` × their denominator (a structures RMSE, which has no target, against
    that many denominators itself), unfitted ones against :data:`UNFITTED_WARNING_PERCENT` of their
    reference. ``status``: ``ok``, ``outside``, or ``no reference``."""
    limits = denominators(config)
    checks = []
    for _, r in fit_property_rows(properties, fit_name).iterrows():
        fitted = yes_no(r.get("fitted_to")) == "yes"
        target, error = as_number(r.get("target")), as_number(r.get("error"))
        denominator = limits.get((r.get("state_point"), r["property"]))
        check = {"row": r, "fitted": fitted, "tolerance": "", "ratio": None, "status": "no reference"}
        if fitted and denominator is not None:
            deviation = abs(error) if target is not None and error is not None else abs(as_number(r["fitted"]) or 0)
            check["tolerance"] = f"{format_value_uncertainty(denominator)} {r.get('unit', '')}".strip()
            check["ratio"] = deviation / denominator
            check["status"] = "outside" if check["ratio"] > FITTED_TOLERANCE else "ok"
        elif not fitted and target is not None and as_number(r.get("error_percent")) is not None:
            check["tolerance"] = f"{UNFITTED_WARNING_PERCENT:g} %"
            check["ratio"] = abs(float(r["error_percent"])) / UNFITTED_WARNING_PERCENT
            check["status"] = "outside" if check["ratio"] > 1 else "ok"
        elif fitted:
            check["status"] = "no tolerance"
        checks.append(check)
    return checks


def diagnostics_table(checks: Sequence[Mapping[str, Any]]) -> Table:
    """The uncertainties behind each property's ± and its check against the tolerance."""
    states = [state_label(c["row"]) for c in checks]
    with_state = any(states)
    rows = []
    for check, state in zip(checks, states):
        r = check["row"]
        replicas = as_number(r.get("replicas"))
        rows.append(
            [r["property"]]
            + ([state] if with_state else [])
            + [
                format_value_uncertainty(r.get("statistical_uncertainty"), significant=2),
                format_value_uncertainty(r.get("parameter_uncertainty"), significant=2),
                "" if replicas is None else str(int(replicas)),
                check["tolerance"],
                format_value_uncertainty(check["ratio"], significant=2),
                check["status"],
            ]
        )
    columns = ["property", *(["state point"] if with_state else []), "σ statistical", "σ parameters"]
    return Table(columns + ["replicas", "tolerance", "|error| / tolerance", "check"], rows)


def round_trip_rows(properties: pd.DataFrame, fit_name: str) -> dict[str, float]:
    """quantity (energy, forces, stress) → the largest relative difference torch vs LAMMPS."""
    if properties is None or properties.empty or "state_point" not in properties:
        return {}
    rows = properties[(properties["fit"] == fit_name) & (properties["state_point"] == ROUND_TRIP)]
    return {str(r["property"]).removeprefix("max_relative_difference_"): float(r["fitted"]) for _, r in rows.iterrows()}


def _named(row: Mapping[str, Any]) -> str:
    """A property's name, with its crystal's where a fit has several (``a0_A (B2)``)."""
    state = row.get("state_point")
    named = is_crystal_term(state) and state != "crystal"
    return f"{row['property']} ({crystal_label(state)})" if named else str(row["property"])


def property_warnings(
    properties: pd.DataFrame, fit_name: str, config: Mapping[str, Any], solid: pd.DataFrame | None = None
) -> list[dict[str, str]]:
    """Warnings about a fit's properties: fitted ones outside their tolerance, unfitted ones far
    from their references (``kind`` ``unfitted``), validation properties without a reference, and a
    LAMMPS round trip above :data:`ROUND_TRIP_TOLERANCE`. Each: ``{"kind", "message"}``."""
    warnings = []
    checks = property_checks(properties, fit_name, config)
    if solid is not None and not solid.empty:
        for _, r in solid[solid["fit"] == fit_name].iterrows():
            if as_number(r.get("target")) is not None and as_number(r.get("error_percent")) is not None:
                ratio = abs(float(r["error_percent"])) / UNFITTED_WARNING_PERCENT
                checks.append({"row": r, "fitted": False, "ratio": ratio, "status": "outside" if ratio > 1 else "ok"})
    for check in checks:
        r = check["row"]
        if check["status"] != "outside":
            continue
        if r.get("state_point") == "solid":
            name = f"{r['property']} ({r.get('structure', 'solid')}, solid stage)"
        elif is_crystal_term(r.get("state_point")) and r.get("state_point") != "crystal":
            name = f"{r['property']} of crystal {crystal_label(r['state_point'])}"
        elif r.get("state_point") in IN_PROCESS:
            name = str(r["property"])
        else:
            name = f"{r['property']} at {r.get('state_point')}"
        if check["fitted"]:
            warnings.append(
                {
                    "kind": "fitted_property",
                    "message": f"fitted property {name} misses its target by {check['ratio']:.2g} × its "
                    f"tolerance {check['tolerance']} (flagged above {FITTED_TOLERANCE:g} ×)",
                }
            )
        else:
            warnings.append(
                {
                    "kind": "unfitted",
                    "message": f"{name} {float(r['error_percent']):+.1f} % from its reference (not fitted)",
                }
            )
    missing = [
        _named(c["row"])
        for c in checks
        if not c["fitted"] and c["status"] == "no reference" and c["row"].get("state_point") != "solid"
    ]
    if missing:
        warnings.append(
            {
                "kind": "no_reference",
                "message": f"validation properties without a reference to compare with: {', '.join(missing)}",
            }
        )
    worst = {k: v for k, v in round_trip_rows(properties, fit_name).items() if v > ROUND_TRIP_TOLERANCE}
    if worst:
        differences = ", ".join(f"{k} {format_value_uncertainty(v, significant=2)}" for k, v in worst.items())
        warnings.append(
            {
                "kind": "round_trip",
                "message": f"LAMMPS round trip above its tolerance {ROUND_TRIP_TOLERANCE:g}: the potential LAMMPS "
                f"runs is not the one fitted (largest relative differences: {differences})",
            }
        )
    return warnings
