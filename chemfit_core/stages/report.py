"""The one-file HTML report of a workflow run.

``results/report.html`` embeds its plots (PNG, base64) so it can be mailed or attached to a
paper's supplement as a single file; Snakemake's own ``--report`` collects the same PNG files
with captions from ``workflow/report/``, which this report renders too. It opens with the
warnings that catch a bad fit (those the fit stage wrote into ``params.json`` and those about
the properties), then shows per fit its summary, parameters (with standard errors and their
correlations), properties and diagnostics, and ends with the references and the provenance.

The figures are in :mod:`chemfit_core.stages.report_figures`, the tables and the number
formatting in :mod:`chemfit_core.stages.report_tables`; both are re-exported here.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from chemfit_core.results import atomic_write_text
from chemfit_core.stages.report_figures import (
    convergence_figure,
    figure_bytes,
    figure_flags,
    properties_figure,
    structures_parity,
    structures_parity_figure,
    write_convergence_plot,
    write_properties_plot,
    write_structures_parity,
)
from chemfit_core.stages.report_tables import (
    ROUND_TRIP_TOLERANCE,
    UNFITTED_WARNING_PERCENT,
    Sources,
    Table,
    correlation_table,
    diagnostics_table,
    format_value_uncertainty,
    html_table,
    parameters_table,
    properties_table,
    property_checks,
    property_warnings,
    round_trip_rows,
    solid_table,
    yes_no,
)

__all__ = [
    "convergence_figure",
    "figure_flags",
    "format_value_uncertainty",
    "properties_figure",
    "report_warnings",
    "structures_parity",
    "structures_parity_figure",
    "write_convergence_plot",
    "write_properties_plot",
    "write_report",
    "write_structures_parity",
]

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 12px;color:#222;line-height:1.35}
table{border-collapse:collapse;margin:0.4em 0 1.2em;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top;overflow-wrap:break-word}
td{white-space:nowrap}th{background:#f3f3f3;font-weight:600}
td:first-child,th:first-child{text-align:left}
td.text,th.text,table.keys td{white-space:normal;text-align:left}table.keys td:first-child{white-space:nowrap}
table.files{table-layout:fixed;width:100%}table.files td{white-space:normal;text-align:left;overflow-wrap:anywhere}
table.files th:nth-child(1){width:42%}table.files th:nth-child(2){width:18%}
img{max-width:100%;height:auto}.wide{max-width:100%}
figure{margin:1em 0 1.5em}figcaption{font-size:0.9em;color:#444}figcaption p{margin:0.3em 0}
.meta,.note{color:#666;font-size:0.9em}
.warning{border-left:4px solid #c60;background:#fff4e5;padding:0.2em 1em;margin:0.6em 0}
.ok{border-left:4px solid #393;background:#eef8ee;padding:0.4em 1em}
code{font-size:0.92em;overflow-wrap:anywhere}
"""

FIGURE_ALT = {"convergence": "convergence", "properties": "terms and properties"}
"""The alt text of a figure by its file's stem (others: the stem itself), followed by "of <fit>"."""


def report_warnings(
    fit_records: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    properties: pd.DataFrame,
    solid: pd.DataFrame | None = None,
) -> dict[str, list[dict[str, str]]]:
    """fit → its warnings: those the fit stage wrote into params.json (bounds, budget,
    convergence, χ²) and those about its properties (:func:`property_warnings`)."""
    out = {}
    for record in fit_records:
        name = record["fit"]
        fit_level = list(params.get(name, {}).get("warnings", []))
        out[name] = fit_level + property_warnings(properties, name, record["config"], solid)
    return out


def _warnings_section(warnings: Mapping[str, Sequence[Mapping[str, str]]]) -> str:
    parts = ["<h2 id='warnings'>Warnings</h2>"]
    for fit_name, items in warnings.items():
        general = [w for w in items if w["kind"] != "unfitted"]
        unfitted = [w for w in items if w["kind"] == "unfitted"]
        if general:
            lines = "".join(f"<li>{html.escape(w['message'])}</li>" for w in general)
            parts.append(f"<div class='warning'><p><b>Fit {html.escape(fit_name)}</b></p><ul>{lines}</ul></div>")
        if unfitted:
            lines = "".join(f"<li><b>{html.escape(fit_name)}</b>: {html.escape(w['message'])}</li>" for w in unfitted)
            parts.append(
                f"<div class='warning'><p><b>Unfitted-property errors</b> (more than {UNFITTED_WARNING_PERCENT:g} % "
                f"from the reference: limits of the functional form, not of the fit):</p><ul>{lines}</ul></div>"
            )
    if len(parts) == 1:
        parts.append(
            "<p class='ok'>No warnings: every parameter inside its bounds, the optimiser converged, the objective "
            "within the residuals' count, every property within its tolerance and the LAMMPS round trip exact.</p>"
        )
    return "".join(parts)


def _kind_text(config: Mapping[str, Any]) -> str:
    """How a fit's property values and their uncertainties were obtained, per kind of term."""
    parts = []
    if "liquid" in config:
        parts.append(
            "Liquid properties at the fitted parameters come from validation runs with seeds independent "
            "of the fit; their statistical uncertainty is one standard error of the mean (block averages, "
            "combined over replicas)."
        )
    if "crystal" in config or "crystals" in config:
        parts.append(
            "Crystal properties are computed in-process on the relaxed static lattice at the fitted "
            "parameters: they carry no statistical noise."
        )
    if "structures" in config:
        parts.append(
            "The structure terms are the root-mean-square errors of energies and forces over the reference "
            "structures (no reference value: zero is a perfect fit)."
        )
    parts.append(
        "± combines the statistical uncertainty with the parameter uncertainty propagated from the least-squares "
        "covariance, where those exist (the diagnostics list them apart); <i>initial</i> is the value at the "
        "starting parameters (the fit's first evaluation)."
    )
    return f"<p>{' '.join(parts)}</p>"


def _summary_table(record: Mapping[str, Any], summary: Mapping[str, Any], properties: pd.DataFrame) -> Table:
    """A fit's diagnostics in two columns: optimiser, budget, χ², round trip, time, seed, hash."""
    config = record["config"]
    budget = config.get("optimizer", {}).get("max_evaluations")
    history = record.get("history", [])
    best = [e for e in history if e.get("objective") == record["objective"] and e.get("residuals")]
    rows = [
        ["optimiser", str(record["method"])],
        ["evaluations", f"{record['n_evaluations']}" + (f" of a budget of {budget}" if budget else "")],
        ["stopped because", str(record.get("message", ""))],
        ["converged", yes_no(record.get("success", summary.get("converged")))],
        ["objective (best)", format_value_uncertainty(record["objective"], significant=4)],
    ]
    if best:
        n_residuals, n_parameters = len(best[0]["residuals"]), len(config["parameters"])
        chi2 = record["objective"] / max(n_residuals - n_parameters, 1)
        how = (
            f"objective / ({n_residuals} residuals − {n_parameters} parameters)"
            if n_residuals > n_parameters
            else f"the objective itself: {n_residuals} residuals for {n_parameters} parameters leave no degrees "
            "of freedom"
        )
        rows.append(["χ² per degree of freedom", f"{format_value_uncertainty(chi2, significant=3)} ({how})"])
    trip = round_trip_rows(properties, record["fit"])
    if trip:
        worst = max(trip.values())
        differences = ", ".join(f"{k} {format_value_uncertainty(v, significant=2)}" for k, v in trip.items())
        verdict = "ok" if worst <= ROUND_TRIP_TOLERANCE else "ABOVE tolerance"
        rows.append(
            [
                "LAMMPS round trip",
                f"largest relative differences torch vs LAMMPS: {differences} "
                f"(tolerance {format_value_uncertainty(ROUND_TRIP_TOLERANCE)}: {verdict})",
            ]
        )
    replayed = record.get("evaluations_replayed_from_cache", 0)
    rows += [
        [
            "wall time",
            f"{format_value_uncertainty(record['wall_time_s'], significant=3)} s on {record['n_workers']} "
            f"worker{'' if record['n_workers'] == 1 else 's'} ({record.get('evaluator', 'threads')})"
            + (f"; {replayed} evaluations replayed from the cache" if replayed else ""),
        ],
        ["master seed", str(record["seed"])],
        ["fit-section sha256", f"{record['config_sha256']} (fits.{record['fit']} as the fit stage hashed it)"],
    ]
    return Table(["", ""], rows)


def caption_html(rst: Path | str, fit_name: str, flags: Mapping[str, bool]) -> str:
    """A figure's caption (``workflow/report/*.rst``, the one Snakemake's report shows: a path, or
    its text) rendered for ``fit_name`` with the figure ``flags`` (:func:`figure_flags`), as HTML."""
    import jinja2
    from docutils.core import publish_parts

    snakemake = SimpleNamespace(wildcards=SimpleNamespace(fit=fit_name), params=SimpleNamespace(flags=dict(flags)))
    source = Path(rst).read_text() if isinstance(rst, Path) or "\n" not in str(rst) else str(rst)
    text = jinja2.Template(source).render(snakemake=snakemake)
    return publish_parts(text, writer="html", settings_overrides={"report_level": 5})["body"]


def _figure(png: bytes, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode()
    caption = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>{caption}</figure>"


def _provenance_section(provenance: Mapping[str, Any]) -> str:
    from chemfit_core.stages.provenance import display_path

    if "versions" not in provenance:  # a flat mapping: one row each
        return "<h2>Provenance</h2>" + html_table(Table(["", ""], [[str(k), str(v)] for k, v in provenance.items()]))
    revision = provenance.get("chemfit_workflow", {})
    commit = str(revision.get("commit")) + (" (with uncommitted changes)" if revision.get("dirty") else "")
    hashes = provenance.get("hashes", {})
    rows = [
        ["chemfit-workflow commit", commit],
        ["versions", ", ".join(f"{k} {v}" for k, v in provenance["versions"].items() if v)],
        ["config sha256 (whole configuration)", provenance["config_sha256"]],
        *([f"fit-section sha256 of {fit}", value] for fit, value in provenance.get("fit_config_sha256", {}).items()),
        ["master seed", str(provenance.get("seeds", {}).get("master"))],
        ["written", str(provenance.get("written_utc", ""))],
    ]
    files = provenance.get("files") or [
        {"path": display_path(p), "role": "input", "sha256": h} for p, h in provenance.get("inputs_sha256", {}).items()
    ]
    explained = "".join(
        f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>" for k, v in hashes.items() if k != "files"
    )
    return (
        "<h2>Provenance</h2><p>The full record, per-term seeds included, is <code>results/provenance.json</code>. "
        "Two configuration hashes, of different things:</p>"
        + (f"<ul>{explained}</ul>" if explained else "")
        + html_table(Table(["", ""], rows), "keys")
        + (
            "<h3>Files</h3>"
            + html_table(
                Table(["path (relative to the project)", "role", "sha256"], [list(f.values()) for f in files]),
                "files",
            )
            if files
            else ""
        )
    )


def write_report(
    fit_records: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    properties: pd.DataFrame,
    out_html: Path | str,
    provenance: Mapping[str, Any] | None = None,
    solid: pd.DataFrame | None = None,
    plots: Mapping[str, Sequence[Path | str]] | None = None,
    captions: Mapping[str, Path | str] | None = None,
    flags: Mapping[str, Mapping[str, bool]] | None = None,
) -> Path:
    """The one-file HTML report.

    ``plots`` maps a fit to its PNG files (convergence, properties, structure parity...), shown
    in that order; a fit without any gets its convergence and properties figures drawn here.
    ``captions`` maps a figure's stem to its caption file and ``flags`` a fit to its
    :func:`figure_flags`: captions are shown where both are given. ``provenance``: the
    ``provenance.json`` record (or a flat mapping of rows)."""
    plots, captions, flags = plots or {}, captions or {}, flags or {}
    solid = solid if solid is not None and len(solid) else None
    sources = Sources()
    warnings = report_warnings(fit_records, params, properties, solid)
    stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    sections = [
        "<h1>chemfit-workflow report</h1>",
        f"<p class='meta'>written {stamp}; fits: {html.escape(', '.join(r['fit'] for r in fit_records))}</p>",
        _warnings_section(warnings),
    ]
    with_solid = properties if solid is None else pd.concat([properties, solid], ignore_index=True)
    for record in fit_records:
        name, config = record["fit"], record["config"]
        summary = params.get(name, {"parameters": {}})
        sections += [
            f"<h2 id='fit-{html.escape(name)}'>Fit {html.escape(name)}</h2>",
            f"<p>{html.escape(config.get('description', ''))}</p>" if config.get("description") else "",
            "<h3>Fitted parameters</h3>",
            html_table(parameters_table(summary, config, sources)),
        ]
        correlation = correlation_table(record)
        if correlation is not None:
            sections += [
                "<p>Correlations of the fitted parameters (from the least-squares covariance):</p>",
                html_table(correlation),
            ]
        sections += [
            "<h3>Properties</h3>",
            _kind_text(config),
            html_table(properties_table(properties, name, sources)),
        ]
        if solid is not None and (solid["fit"] == name).any():
            sections += [
                "<h3>Solid-state validation (not fitted)</h3>",
                "<p>Crystal structures relaxed (cell included) with the fitted model in the batched "
                "relaxation engine. Experimental values include zero-point motion, which a classical "
                "static lattice does not: the errors show what the model was not fitted to do.</p>",
                html_table(solid_table(solid, name, sources)),
            ]
        checks = property_checks(properties, name, config)
        sections += [
            "<h3>Diagnostics</h3>",
            html_table(_summary_table(record, summary, properties), "keys"),
            html_table(diagnostics_table(checks)) if checks else "",
            "<h3>Figures</h3>",
        ]
        files = list(plots.get(name, ()))
        if files:
            for path in files:
                stem = Path(path).stem
                caption = ""
                if stem in captions and name in flags:
                    caption = caption_html(captions[stem], name, flags[name])
                alt = f"{FIGURE_ALT.get(stem, stem)} of {name}"
                sections.append(_figure(Path(path).read_bytes(), alt, caption))
        else:
            sections += [
                _figure(figure_bytes(convergence_figure(record), close=True), f"convergence of {name}"),
                _figure(
                    figure_bytes(properties_figure(record, with_solid), close=True), f"terms and properties of {name}"
                ),
            ]
    if sources.items:
        items = "".join(f"<li>{html.escape(s)}</li>" for s in sources.items)
        sections.append(f"<h2>Reference data</h2><ol>{items}</ol>")
    if provenance:
        sections.append(_provenance_section(provenance))
    head = f"<head><meta charset='utf-8'><title>chemfit-workflow report</title><style>{_CSS}</style></head>"
    page = f"<!DOCTYPE html><html>{head}<body>{''.join(sections)}</body></html>\n"
    return atomic_write_text(out_html, page)
