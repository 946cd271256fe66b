"""The report's tables of a fit (parameters, correlations, properties, solid stage) and the
same tables for papers.

The numbers in them come from :func:`~chemfit_core.stages.report_format.format_value_uncertainty`
and are rendered as HTML, Markdown or LaTeX by :mod:`chemfit_core.stages.report_format`; the
checks against tolerances and the warnings are in :mod:`chemfit_core.stages.report_checks` (both
importable from here too). :func:`write_paper_tables` writes the fitted parameters and properties
to ``results/tables/`` in those formats and as CSV.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chemfit_core.results import atomic_write_text, write_csv
from chemfit_core.stages.crystal_inputs import crystal_entries
from chemfit_core.stages.report_checks import (
    FITTED_TOLERANCE,
    IN_PROCESS,
    ROUND_TRIP,
    ROUND_TRIP_TOLERANCE,
    UNFITTED_WARNING_PERCENT,
    denominators,
    diagnostics_table,
    fit_property_rows,
    property_checks,
    property_warnings,
    round_trip_rows,
)
from chemfit_core.stages.report_format import (
    TEXT_COLUMNS,
    Sources,
    Table,
    as_number,
    combined_uncertainty,
    format_value_uncertainty,
    html_table,
    latex_table,
    latex_text,
    markdown_table,
    state_label,
    yes_no,
)

__all__ = [  # the checks and the formatting live in report_checks and report_format; importable here too
    "FITTED_TOLERANCE",
    "IN_PROCESS",
    "ROUND_TRIP",
    "ROUND_TRIP_TOLERANCE",
    "TEXT_COLUMNS",
    "UNFITTED_WARNING_PERCENT",
    "Sources",
    "Table",
    "combined_uncertainty",
    "correlation_table",
    "denominators",
    "diagnostics_table",
    "figure_flags",
    "format_value_uncertainty",
    "html_table",
    "latex_table",
    "latex_text",
    "markdown_table",
    "parameters_table",
    "properties_table",
    "property_checks",
    "property_warnings",
    "round_trip_rows",
    "solid_table",
    "state_label",
    "write_paper_tables",
    "yes_no",
]


def figure_flags(fit: Mapping[str, Any]) -> dict[str, bool]:
    """What a fit's properties figure (:mod:`~chemfit_core.stages.report_figures`) shows, from
    its full config (captions depend on it):
    ``liquid``/``crystal``/``structures`` terms, ``references`` (a parity panel of properties with
    reference values) and ``validation`` (unfitted properties with a reference: the red points)."""
    crystals = [entry.section for entry in crystal_entries(fit)]  # ``crystal`` and ``crystals.<name>``
    fitted_refs = {(k, p) for k, c in enumerate(crystals) for p in c.get("references", {})}
    validated = {(k, p) for k, c in enumerate(crystals) for p in c.get("validate", [])}
    validated &= {(k, p) for k, c in enumerate(crystals) for p in c.get("validation_references", {})}
    solid = fit.get("solid", {})
    solid_refs = bool(solid.get("enabled") and solid.get("references"))
    validation = bool(validated - fitted_refs) or solid_refs
    return {
        "liquid": "liquid" in fit,
        "crystal": bool(crystals),
        "structures": "structures" in fit,
        "references": "liquid" in fit or bool(fitted_refs) or validation,
        "validation": validation,
    }


# ---- the tables of a fit ------------------------------------------------------------------


def parameters_table(summary: Mapping[str, Any], config: Mapping[str, Any], sources: Sources) -> Table:
    """A fit's parameters: fitted value ± standard error (least squares), initial value, bounds,
    published value and the deviation from it (± its share of the standard error)."""
    rows = []
    for name, p in summary["parameters"].items():
        spec = config.get("parameters", {}).get(name, {})
        error = as_number(p.get("standard_error"))
        reference = as_number(p.get("reference"))
        deviation = as_number(p.get("deviation_from_reference_percent"))
        deviation_error = 100 * error / abs(reference) if error is not None and reference else None
        bounds = ""
        if "lower" in spec and "upper" in spec:
            bounds = f"[{format_value_uncertainty(spec['lower'])}, {format_value_uncertainty(spec['upper'])}]"
        rows.append(
            [
                name,
                p.get("unit", ""),
                format_value_uncertainty(p["value"], error),
                format_value_uncertainty(p.get("initial")),
                bounds,
                format_value_uncertainty(reference) + (sources.cite(p.get("reference_source")) if reference else ""),
                format_value_uncertainty(deviation, deviation_error, significant=3),
            ]
        )
    columns = ["parameter", "unit", "fitted ± s.e.", "initial", "bounds", "published", "deviation (%)"]
    notes = []
    if not any(as_number(p.get("standard_error")) is not None for p in summary["parameters"].values()):
        columns[2] = "fitted"
        notes.append("No standard errors: the optimiser gave no covariance (only least squares does).")
    return Table(columns, rows, notes=notes)


def correlation_table(record: Mapping[str, Any]) -> Table | None:
    """The parameters' correlation matrix from the least-squares covariance (None without one)."""
    covariance, names = record.get("covariance"), record.get("parameter_names")
    if not covariance or not names:
        return None
    matrix = np.asarray(covariance, dtype=float)
    sd = np.sqrt(np.clip(np.diag(matrix), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = matrix / np.outer(sd, sd)
    rows = [
        [name] + ["1" if i == j else ("" if not np.isfinite(c) else f"{c:+.2f}") for j, c in enumerate(line)]
        for i, (name, line) in enumerate(zip(names, correlation))
    ]
    return Table(["correlation", *names], rows)


def properties_table(properties: pd.DataFrame, fit_name: str, sources: Sources) -> Table:
    """A fit's properties (the LAMMPS round trip aside): whether fitted, target, initial and fitted
    value ± uncertainty, and the error absolute and in per cent, each ± the same uncertainty."""
    frame = fit_property_rows(properties, fit_name)
    states = [state_label(r) for _, r in frame.iterrows()]
    with_state = any(states)
    rows = []
    for (_, r), state in zip(frame.iterrows(), states):
        sigma = combined_uncertainty(r)
        target = as_number(r.get("target"))
        percent_sigma = 100 * sigma / abs(target) if sigma is not None and target else None
        rows.append(
            [r["property"]]
            + ([state] if with_state else [])
            + [
                r.get("unit", ""),
                yes_no(r.get("fitted_to")),
                format_value_uncertainty(target) + (sources.cite(r.get("source")) if target is not None else ""),
                format_value_uncertainty(r.get("initial")),
                format_value_uncertainty(r.get("fitted"), sigma),
                format_value_uncertainty(r.get("error"), sigma, significant=3),
                format_value_uncertainty(r.get("error_percent"), percent_sigma, significant=3),
            ]
        )
    columns = ["property", *(["state point"] if with_state else []), "unit", "fitted to", "target", "initial"]
    return Table(columns + ["fitted ± σ", "error", "error (%)"], rows)


def solid_table(solid: pd.DataFrame, fit_name: str, sources: Sources) -> Table:
    """A fit's solid-stage rows: structures relaxed with the fitted model, next to experiment."""
    frame = solid[solid["fit"] == fit_name]
    rows = [
        [
            r["property"],
            str(r.get("structure", "")),
            r.get("unit", ""),
            format_value_uncertainty(r.get("target"))
            + (sources.cite(r.get("source")) if as_number(r.get("target")) is not None else ""),
            format_value_uncertainty(r.get("fitted")),
            format_value_uncertainty(r.get("error"), significant=3),
            format_value_uncertainty(r.get("error_percent"), significant=3),
            yes_no(r.get("converged")),
        ]
        for _, r in frame.iterrows()
    ]
    return Table(["property", "structure", "unit", "reference", "model", "error", "error (%)", "relaxed"], rows)


# ---- the tables for papers ------------------------------------------------------------------


def _parameter_csv(params: Mapping[str, Any], configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for fit_name, summary in params.items():
        for name, p in summary["parameters"].items():
            spec = configs.get(fit_name, {}).get("parameters", {}).get(name, {})
            rows.append(
                {
                    "fit": fit_name,
                    "parameter": name,
                    "unit": p.get("unit", ""),
                    "value": p["value"],
                    "standard_error": p.get("standard_error", np.nan),
                    "formatted": format_value_uncertainty(p["value"], p.get("standard_error")),
                    "initial": p.get("initial", np.nan),
                    "lower": spec.get("lower", np.nan),
                    "upper": spec.get("upper", np.nan),
                    "published": p.get("reference", np.nan),
                    "deviation_percent": p.get("deviation_from_reference_percent", np.nan),
                    "source": p.get("reference_source", ""),
                }
            )
    return pd.DataFrame(rows)


def _property_csv(properties: pd.DataFrame, solid: pd.DataFrame | None) -> pd.DataFrame:
    frame = properties[properties["state_point"] != ROUND_TRIP].copy()
    if solid is not None and not solid.empty:
        frame = pd.concat([frame, solid], ignore_index=True)
    frame["fitted_to"] = [yes_no(v) for v in frame["fitted_to"]]
    frame["uncertainty"] = [combined_uncertainty(r) for _, r in frame.iterrows()]
    frame["formatted"] = [format_value_uncertainty(r["fitted"], r["uncertainty"]) for _, r in frame.iterrows()]
    keep = ["fit", "property", "state_point", "structure", "temperature_K", "pressure_bar", "unit", "fitted_to"]
    keep += ["target", "initial", "fitted", "uncertainty", "formatted", "error", "error_percent"]
    keep += ["statistical_uncertainty", "parameter_uncertainty", "replicas", "source"]
    return frame[[c for c in keep if c in frame.columns]]


def write_paper_tables(
    params: Mapping[str, Any],
    properties: pd.DataFrame,
    fit_records: Sequence[Mapping[str, Any]],
    out: Mapping[str, Path | str],
    solid: pd.DataFrame | None = None,
) -> None:
    """The fitted parameters and the properties (solid-stage rows included) for a paper:
    ``out`` maps ``parameters_tex``, ``parameters_md``, ``parameters_csv`` and the same for
    ``properties`` to paths. LaTeX: booktabs tabulars; Markdown: a table per fit with its
    references; CSV: every number at full precision beside the formatted text."""
    configs = {r["fit"]: r["config"] for r in fit_records}
    kinds: dict[str, list[tuple[str, Table, Sources]]] = {"parameters": [], "properties": []}
    for fit_name, summary in params.items():
        sources = Sources()
        kinds["parameters"].append((fit_name, parameters_table(summary, configs.get(fit_name, {}), sources), sources))
        sources = Sources()
        table = properties_table(properties, fit_name, sources)
        if solid is not None and not solid.empty and (solid["fit"] == fit_name).any():
            extra = solid_table(solid, fit_name, sources)
            table = _with_solid_rows(table, extra)
        kinds["properties"].append((fit_name, table, sources))
    for kind, tables in kinds.items():
        atomic_write_text(out[f"{kind}_tex"], latex_table([(name, table) for name, table, _ in tables]))
        parts = []
        for fit_name, table, sources in tables:
            parts += [f"## {kind.capitalize()} of fit {fit_name}\n", markdown_table(table)]
            parts += [f"{note}\n" for note in table.notes]
            if sources.items:
                parts.append("\n" + "".join(f"[{k}] {s}  \n" for k, s in enumerate(sources.items, 1)))
        atomic_write_text(out[f"{kind}_md"], "\n".join(parts))
    write_csv(out["parameters_csv"], _parameter_csv(params, configs))
    write_csv(out["properties_csv"], _property_csv(properties, solid))


def _with_solid_rows(table: Table, solid: Table) -> Table:
    """The properties table with the solid-stage rows appended (state point: ``solid, <structure>``)."""
    columns = table.columns if "state point" in table.columns else [table.columns[0], "state point", *table.columns[1:]]
    rows = [row if "state point" in table.columns else [row[0], "", *row[1:]] for row in table.rows]
    for prop, structure, unit, reference, model, error, percent, _ in solid.rows:
        rows.append([prop, f"solid, {structure}", unit, "no", reference, "", model, error, percent])
    return Table(columns, rows, notes=table.notes)
