"""The report's tables: numbers as a scientist writes them, and the same tables for papers.

:func:`format_value_uncertainty` is the one formatter of every number shown: a value with
its uncertainty is rounded to the uncertainty's two significant digits. A :class:`Table`
is rendered as HTML (the one-file report), Markdown or LaTeX (booktabs);
:func:`write_paper_tables` writes the fitted parameters and properties to
``results/tables/`` in those formats and as CSV.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chemfit_core.results import atomic_write_text, write_csv

IN_PROCESS = ("crystal", "structures", "solid")
"""State points of properties computed in-process (no temperature or pressure)."""
ROUND_TRIP = "lammps_round_trip"
"""The state point of the LAMMPS round-trip rows of properties.csv (diagnostics, not properties)."""

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _number(value: Any) -> float | None:
    """``value`` as a float, None when it is missing or not a number."""
    if value is None or isinstance(value, (bool, np.bool_, str)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _times_ten(exponent: int) -> str:
    return f"×10{str(exponent).translate(_SUPERSCRIPT)}"


def _plain(value: float, significant: int) -> str:
    text = f"{value:.{significant}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}{_times_ten(int(exponent))}"
    return text


def _fixed(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if re.fullmatch(r"-0(\.0*)?", text) else text  # no "-0.0"


def format_value_uncertainty(
    value: Any, uncertainty: Any = None, digits: int = 2, significant: int = 6, missing: str = ""
) -> str:
    """``value ± uncertainty`` rounded to the uncertainty's ``digits`` significant digits.

    ``format_value_uncertainty(1396.53, 1.43)`` is ``"1396.5 ± 1.4"``; ``(1.234e-8, 5.6e-10)``
    is ``"(1.234 ± 0.056)×10⁻⁸"`` (scientific notation below 10⁻³ and from 10⁶ on). Without an
    uncertainty (None, NaN) the value alone with ``significant`` digits; a zero one: ``"… ± 0"``;
    an infinite one: ``"… ± ∞"``. A missing value (None, NaN, not a number) gives ``missing``.
    """
    number = _number(value)
    if number is None:
        return missing
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    sigma = _number(uncertainty)
    if sigma is None:
        return _plain(number, significant)
    sigma = abs(sigma)
    if sigma == 0 or math.isinf(sigma):
        return f"{_plain(number, significant)} ± {'0' if sigma == 0 else '∞'}"
    exponent = math.floor(math.log10(sigma))
    sigma = round(sigma, digits - 1 - exponent)
    exponent = math.floor(math.log10(sigma))  # 0.0996 rounds to 0.10: one more place
    decimals = digits - 1 - exponent
    magnitude = max(math.floor(math.log10(abs(number))) if number else exponent, exponent)
    if magnitude >= 6 or magnitude <= -4:
        places = decimals + magnitude
        scale = 10.0**magnitude
        return f"({_fixed(number / scale, places)} ± {_fixed(sigma / scale, places)}){_times_ten(magnitude)}"
    if decimals < 0:
        number, sigma = round(number, decimals), round(sigma, decimals)
    return f"{_fixed(number, max(decimals, 0))} ± {_fixed(sigma, max(decimals, 0))}"


def yes_no(flag: Any) -> str:
    """``yes``/``no`` for a flag (``True``, ``"True"``, 1...), empty when missing."""
    if flag is None or (isinstance(flag, float) and math.isnan(flag)):
        return ""
    if isinstance(flag, str):
        return "yes" if flag.strip().lower() in ("true", "yes", "1") else "no"
    return "yes" if bool(flag) else "no"


def combined_uncertainty(row: Mapping[str, Any]) -> float | None:
    """Statistical and parameter uncertainty of a property row in quadrature (None: neither)."""
    parts = [_number(row.get(key)) for key in ("statistical_uncertainty", "parameter_uncertainty")]
    parts = [p for p in parts if p is not None]
    return float(math.hypot(*parts)) if parts else None


def state_label(row: Mapping[str, Any]) -> str:
    """A property row's state point in words: ``normal_boiling_point (87.302 K, 1.01325 bar)``,
    ``fcc`` for a solid-stage row, empty for crystal and structure terms."""
    state = row.get("state_point")
    if not isinstance(state, str) or state in ("crystal", "structures"):
        return ""
    if state == "solid":
        structure = row.get("structure")
        return structure if isinstance(structure, str) else ""
    temperature, pressure = _number(row.get("temperature_K")), _number(row.get("pressure_bar"))
    if temperature is None or pressure is None:
        return state
    return f"{state} ({_plain(temperature, 6)} K, {_plain(pressure, 6)} bar)"


class Sources:
    """Numbered references: a table cites ``[n]``, the report lists them once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def cite(self, source: Any) -> str:
        if not isinstance(source, str) or not source.strip():
            return ""
        if source not in self.items:
            self.items.append(source)
        return f" [{self.items.index(source) + 1}]"


@dataclass
class Table:
    """A table of display strings: ``columns`` headers (units in them), ``rows`` of cells."""

    columns: list[str]
    rows: list[list[str]]
    title: str = ""
    notes: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)


def figure_flags(fit: Mapping[str, Any]) -> dict[str, bool]:
    """What a fit's properties figure (:mod:`~chemfit_core.stages.report_figures`) shows, from
    its full config (captions depend on it):
    ``liquid``/``crystal``/``structures`` terms, ``references`` (a parity panel of properties with
    reference values) and ``validation`` (unfitted properties with a reference: the red points)."""
    crystal = fit.get("crystal", {})
    fitted_refs = set(crystal.get("references", {}))
    validated = {p for p in crystal.get("validate", []) if p in crystal.get("validation_references", {})}
    solid = fit.get("solid", {})
    solid_refs = bool(solid.get("enabled") and solid.get("references"))
    validation = bool(validated - fitted_refs) or solid_refs
    return {
        "liquid": "liquid" in fit,
        "crystal": "crystal" in fit,
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
        error = _number(p.get("standard_error"))
        reference = _number(p.get("reference"))
        deviation = _number(p.get("deviation_from_reference_percent"))
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
    if not any(_number(p.get("standard_error")) is not None for p in summary["parameters"].values()):
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


def _property_rows(properties: pd.DataFrame, fit_name: str) -> pd.DataFrame:
    if properties is None or properties.empty:
        return pd.DataFrame()
    rows = properties[properties["fit"] == fit_name]
    return rows[rows["state_point"] != ROUND_TRIP] if "state_point" in rows else rows


def properties_table(properties: pd.DataFrame, fit_name: str, sources: Sources) -> Table:
    """A fit's properties (the LAMMPS round trip aside): whether fitted, target, initial and fitted
    value ± uncertainty, and the error absolute and in per cent, each ± the same uncertainty."""
    frame = _property_rows(properties, fit_name)
    states = [state_label(r) for _, r in frame.iterrows()]
    with_state = any(states)
    rows = []
    for (_, r), state in zip(frame.iterrows(), states):
        sigma = combined_uncertainty(r)
        target = _number(r.get("target"))
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
            + (sources.cite(r.get("source")) if _number(r.get("target")) is not None else ""),
            format_value_uncertainty(r.get("fitted")),
            format_value_uncertainty(r.get("error"), significant=3),
            format_value_uncertainty(r.get("error_percent"), significant=3),
            yes_no(r.get("converged")),
        ]
        for _, r in frame.iterrows()
    ]
    return Table(["property", "structure", "unit", "reference", "model", "error", "error (%)", "relaxed"], rows)


# ---- checks: tolerances and warnings ------------------------------------------------------

FITTED_TOLERANCE = 2.0
"""A fitted property more than this many denominators from its target is flagged."""
UNFITTED_WARNING_PERCENT = 10.0
"""A property the fit did not target and that misses its reference by more than this is flagged."""
ROUND_TRIP_TOLERANCE = 1e-6
"""Largest relative difference between the model in torch and in LAMMPS that passes."""


def denominators(config: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """(state point, property) → the denominator (tolerance) a fit's config gives its target:
    liquid state points, crystal references, and the structures' energy and force RMSE."""
    out: dict[tuple[str, str], float] = {}
    for sp in config.get("liquid", {}).get("state_points", []):
        for key, spec in sp.items():
            if isinstance(spec, Mapping) and "denominator" in spec:
                out[(sp["name"], key)] = float(spec["denominator"])
    for key, spec in config.get("crystal", {}).get("references", {}).items():
        out[("crystal", key)] = float(spec["denominator"])
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
    for _, r in _property_rows(properties, fit_name).iterrows():
        fitted = yes_no(r.get("fitted_to")) == "yes"
        target, error = _number(r.get("target")), _number(r.get("error"))
        denominator = limits.get((r.get("state_point"), r["property"]))
        check = {"row": r, "fitted": fitted, "tolerance": "", "ratio": None, "status": "no reference"}
        if fitted and denominator is not None:
            deviation = abs(error) if target is not None and error is not None else abs(_number(r["fitted"]) or 0)
            check["tolerance"] = f"{format_value_uncertainty(denominator)} {r.get('unit', '')}".strip()
            check["ratio"] = deviation / denominator
            check["status"] = "outside" if check["ratio"] > FITTED_TOLERANCE else "ok"
        elif not fitted and target is not None and _number(r.get("error_percent")) is not None:
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
        replicas = _number(r.get("replicas"))
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
            if _number(r.get("target")) is not None and _number(r.get("error_percent")) is not None:
                ratio = abs(float(r["error_percent"])) / UNFITTED_WARNING_PERCENT
                checks.append({"row": r, "fitted": False, "ratio": ratio, "status": "outside" if ratio > 1 else "ok"})
    for check in checks:
        r = check["row"]
        if check["status"] != "outside":
            continue
        if r.get("state_point") == "solid":
            name = f"{r['property']} ({r.get('structure', 'solid')}, solid stage)"
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
        c["row"]["property"]
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


# ---- rendering ------------------------------------------------------------------------------


TEXT_COLUMNS = ("state point", "structure", "unit", "check")
"""Columns of words, which wrap; number columns do not (a value stays with its ± uncertainty)."""


def html_table(table: Table, css_class: str = "") -> str:
    """A table as HTML (every cell escaped; cells of :data:`TEXT_COLUMNS` wrap)."""
    head = "".join(
        f"<th class='text'>{html.escape(c)}</th>" if c in TEXT_COLUMNS else f"<th>{html.escape(c)}</th>"
        for c in table.columns
    )
    head = f"<thead><tr>{head}</tr></thead>" if any(table.columns) else ""  # key-value tables: none
    kinds = ["<td class='text'>" if c in TEXT_COLUMNS else "<td>" for c in table.columns]
    body = "".join(
        "<tr>" + "".join(f"{kind}{html.escape(c)}</td>" for kind, c in zip(kinds, row)) + "</tr>" for row in table.rows
    )
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in table.notes)
    cls = f" class='{css_class}'" if css_class else ""
    return f"<div class='wide'><table{cls}>{head}<tbody>{body}</tbody></table></div>{notes}"


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""
    align = ["---" if i == 0 else "---:" for i in range(len(table.columns))]
    lines = [
        "| " + " | ".join(_markdown_cell(c) for c in table.columns) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in table.rows),
    ]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "Å": r"\AA{}",
    "²": r"\textsuperscript{2}",
    "³": r"\textsuperscript{3}",
    "±": r"$\pm$",
    "−": "-",
    "σ": r"$\sigma$",
    "ε": r"$\varepsilon$",
    "µ": r"$\mu$",
    "μ": r"$\mu$",
    "°": r"\textdegree{}",
    "∞": r"$\infty$",
    "–": "--",
    "—": "---",
}


def latex_text(text: str) -> str:
    """Plain text (units, ± and ×10ⁿ included) as LaTeX text-mode source."""
    text = re.sub(
        r"×10([⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)",
        lambda m: "\0" + m.group(1).translate(str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")) + "\1",
        text,
    )
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    return out.replace("\0", r"$\times 10^{").replace("\1", "}$")


def latex_table(tables: Sequence[tuple[str, Table]]) -> str:
    """One booktabs ``tabular`` for the same table of several fits (a row naming each fit when
    there are several); ``\\input`` it in a document that loads ``booktabs``."""
    columns = tables[0][1].columns
    spec = "l" + "r" * (len(columns) - 1)
    lines = [
        "% generated by chemfit-workflow (results/tables); needs \\usepackage{booktabs}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_text(c) for c in columns) + r" \\",
        "\\midrule",
    ]
    for k, (fit_name, table) in enumerate(tables):
        if len(tables) > 1:
            if k:
                lines.append("\\midrule")
            lines.append(f"\\multicolumn{{{len(columns)}}}{{l}}{{\\textit{{{latex_text(fit_name)}}}}} \\\\")
        lines += [" & ".join(latex_text(c) for c in row) + r" \\" for row in table.rows]
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


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
