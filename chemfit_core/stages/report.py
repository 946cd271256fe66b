"""Plots and the one-file HTML report of a workflow run.

``results/report.html`` embeds its plots (PNG, base64) so it can be mailed or
attached to a paper's supplement as a single file; Snakemake's own
``--report`` collects the same PNG files with captions from ``workflow/report/``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from chemfit_core.results import atomic_write_bytes, atomic_write_text  # noqa: E402


def convergence_figure(fit_record: Mapping[str, Any]) -> bytes:
    """PNG: objective per evaluation (log scale, best so far) and each parameter's path."""
    history = fit_record["history"]
    evals = np.array([e["index"] for e in history])
    objective = np.array([np.nan if e["objective"] is None else e["objective"] for e in history], dtype=float)
    names = list(history[0]["parameters"]) if history else []
    params_cfg = fit_record["config"]["parameters"]
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(4.2 * (1 + len(names)), 3.4), constrained_layout=True)
    axes = np.atleast_1d(axes)
    ax = axes[0]
    ax.semilogy(evals, objective, "o", ms=4, color="0.55", label="evaluation")
    ax.semilogy(
        evals,
        np.fmin.accumulate(np.where(np.isfinite(objective), objective, np.inf)),
        "-",
        color="C0",
        label="best so far",
    )
    ax.set_xlabel("evaluation")
    ax.set_ylabel("objective")
    ax.set_title(f"{fit_record['fit']}: {fit_record['method']}")
    ax.legend(frameon=False)
    for ax, name in zip(axes[1:], names):
        values = [e["parameters"][name] for e in history]
        ax.plot(evals, values, "o-", ms=3, color="C1")
        spec = params_cfg.get(name, {})
        if "reference" in spec:
            ax.axhline(spec["reference"], ls="--", color="k", lw=1, label="published")
            ax.legend(frameon=False)
        ax.set_xlabel("evaluation")
        unit = spec.get("unit", "")
        ax.set_ylabel(f"{name} ({unit})" if unit else name)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_convergence_plot(fit_record: Mapping[str, Any], out_png: Path | str) -> Path:
    """Write :func:`convergence_figure` to ``out_png`` (atomically)."""
    return atomic_write_bytes(out_png, convergence_figure(fit_record))


def properties_figure(fit_record: Mapping[str, Any], properties: pd.DataFrame) -> bytes:
    """PNG: each objective term's contribution per evaluation, and every property with a
    reference as a parity chart of relative errors (initial and fitted; error bars: the
    statistical and parameter uncertainties combined), fitted and validation ones apart."""
    history = fit_record["history"]
    names = history[0].get("term_names") or [] if history else []
    rows = properties[(properties["fit"] == fit_record["fit"]) & properties["target"].notna()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2 + 0.18 * len(rows)), constrained_layout=True)
    ax = axes[0]
    evals = np.array([e["index"] for e in history])
    for k, name in enumerate(names):
        values = np.array(
            [np.nan if not e.get("terms") or e["terms"][k] is None else e["terms"][k] for e in history], dtype=float
        )
        ax.semilogy(evals, values, "o-", ms=3, label=name)
    ax.set_xlabel("evaluation")
    ax.set_ylabel("term value (weighted residuals²)")
    ax.set_title("objective terms")
    if names:
        ax.legend(frameon=False, fontsize="small")
    ax = axes[1]
    labels = [
        f"{r['property']}" + (f" @ {r['state_point']}" if r["state_point"] not in ("crystal",) else "")
        for _, r in rows.iterrows()
    ]
    y = np.arange(len(rows))
    target = rows["target"].to_numpy(dtype=float)
    fitted = 100 * (rows["fitted"].to_numpy(dtype=float) / target - 1)
    initial = 100 * (rows["initial"].to_numpy(dtype=float) / target - 1)
    sigma = np.hypot(
        np.nan_to_num(rows.get("statistical_uncertainty", pd.Series(0, index=rows.index)).to_numpy(float)),
        np.nan_to_num(rows.get("parameter_uncertainty", pd.Series(0, index=rows.index)).to_numpy(float)),
    )
    colours = np.where(rows["fitted_to"].astype(bool).to_numpy(), "C0", "C3")
    ax.axvline(0, color="k", lw=1)
    ax.scatter(initial, y, marker="x", color="0.6", label="initial", zorder=2)
    ax.errorbar(fitted, y, xerr=100 * sigma / np.abs(target), fmt="none", ecolor="0.3", zorder=2)
    ax.scatter(fitted, y, c=colours, zorder=3)
    ax.set_yticks(y, labels)
    ax.set_xlabel("model / reference − 1 (%)")
    ax.set_title("properties: fitted (blue), validation (red)")
    ax.legend(frameon=False, fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_properties_plot(fit_record: Mapping[str, Any], properties: pd.DataFrame, out_png: Path | str) -> Path:
    """Write :func:`properties_figure` to ``out_png`` (atomically)."""
    return atomic_write_bytes(out_png, properties_figure(fit_record, properties))


def structures_parity(fit_record: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Reference vs model energies and forces of a fit's ``structures`` target at the
    initial and the fitted parameters (:meth:`StructureTarget.predictions`); empty
    for a fit without one. The structures are read from the fit's own config."""
    from chemfit_core.stages.objective import targets_from_config

    config = fit_record["config"]
    initial = {name: p["initial"] for name, p in config["parameters"].items()}
    for name, term, _ in targets_from_config(config):
        if name == "structures":
            return {"initial": term.predictions(initial), "fitted": term.predictions(fit_record["parameters"])}
    return {}


def structures_parity_figure(parity: Mapping[str, Mapping[str, np.ndarray]], fit_name: str) -> bytes:
    """PNG: reference vs model energy per atom (eV/atom) and force components (eV/Å),
    initial (grey) and fitted (blue), with each one's RMSE."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    for ax, key, unit in ((axes[0], "energy_per_atom", "eV/atom"), (axes[1], "forces", "eV/Å")):
        values = [parity[stage][f"{key}_{kind}"] for stage in parity for kind in ("reference", "model")]
        low, high = float(min(v.min() for v in values)), float(max(v.max() for v in values))
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="k", lw=1)
        for stage, style in (("initial", dict(marker="x", color="0.6")), ("fitted", dict(marker="o", color="C0"))):
            ref, model = parity[stage][f"{key}_reference"], parity[stage][f"{key}_model"]
            rmse = float(np.sqrt(np.mean((model - ref) ** 2)))
            ax.scatter(ref, model, s=12, label=f"{stage} (RMSE {rmse:.3g} {unit})", **style)
        ax.set_xlabel(f"reference {key.replace('_', ' ')} ({unit})")
        ax.set_ylabel(f"model {key.replace('_', ' ')} ({unit})")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(frameon=False, fontsize="small")
    fig.suptitle(f"{fit_name}: reference structures, parity")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_structures_parity(fit_record: Mapping[str, Any], out_png: Path | str, out_csv: Path | str) -> pd.DataFrame:
    """Write the parity plot of a fit's reference structures and its table: one row per
    structure (energy per atom) and per force component, reference, initial and fitted."""
    from chemfit_core.results import write_csv

    parity = structures_parity(fit_record)
    if not parity:
        raise ValueError(f"fit {fit_record['fit']!r} has no structures target to draw a parity plot of")
    rows = []
    for key, unit in (("energy_per_atom", "eV/atom"), ("forces", "eV/Å")):
        for index, reference in enumerate(parity["fitted"][f"{key}_reference"]):
            rows.append(
                {
                    "fit": fit_record["fit"],
                    "quantity": key,
                    "unit": unit,
                    "index": index,
                    "reference": reference,
                    "initial": parity["initial"][f"{key}_model"][index],
                    "fitted": parity["fitted"][f"{key}_model"][index],
                }
            )
    table = pd.DataFrame(rows)
    write_csv(out_csv, table)
    atomic_write_bytes(out_png, structures_parity_figure(parity, fit_record["fit"]))
    return table


def _table(frame: pd.DataFrame, float_format: str = "{:.6g}") -> str:
    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else float_format.format(value)
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False)
    )
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


def parameters_frame(params: Mapping[str, Any]) -> pd.DataFrame:
    """One row per fitted parameter: value, unit, initial, published reference, deviation."""
    rows = []
    for fit_name, summary in params.items():
        for name, p in summary["parameters"].items():
            rows.append(
                {
                    "fit": fit_name,
                    "parameter": name,
                    "fitted": p["value"],
                    "unit": p["unit"],
                    "initial": p["initial"],
                    "published": p.get("reference", np.nan),
                    "deviation %": p.get("deviation_from_reference_percent", np.nan),
                    "source": p.get("reference_source", ""),
                }
            )
    return pd.DataFrame(rows)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}.wide{overflow-x:auto}
.meta{color:#666;font-size:0.9em}
.warning{border-left:4px solid #c60;background:#fff4e5;padding:0.2em 1em}
"""


UNFITTED_WARNING_PERCENT = 10.0
"""A property the fit did not target and that misses its reference by more than this is flagged."""


def _unfitted_warnings(properties: pd.DataFrame) -> list[str]:
    """A flagged list of unfitted properties far from their references: what the model cannot do."""
    if not {"fitted_to", "error_percent"} <= set(properties.columns):
        return []
    unfitted = ~properties["fitted_to"].astype(bool)
    far = properties[unfitted & (properties["error_percent"].abs() > UNFITTED_WARNING_PERCENT)]
    if far.empty:
        return []
    items = "".join(
        f"<li><b>{html.escape(str(r['fit']))}: {html.escape(str(r['property']))}</b> "
        f"{r['error_percent']:+.1f} % from its reference (not fitted)</li>"
        for _, r in far.iterrows()
    )
    return [
        f"<div class='warning'><p><b>Unfitted-property errors</b> (more than {UNFITTED_WARNING_PERCENT:.0f} %: "
        f"limits of the functional form, not of the fit):</p><ul>{items}</ul></div>"
    ]


def write_report(
    fit_records: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    properties: pd.DataFrame,
    out_html: Path | str,
    provenance: Mapping[str, Any] | None = None,
    solid: pd.DataFrame | None = None,
    plots: Mapping[str, Sequence[Path | str]] | None = None,
) -> Path:
    """The one-file HTML report: parameters, properties with errors, convergence plots;
    ``plots`` maps a fit to further PNG files shown under it (e.g. structure parity)."""
    plots = plots or {}
    sections = [
        "<h1>chemfit-workflow report</h1>",
        f"<p class='meta'>written {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')}</p>",
        "<h2>Fitted parameters</h2>",
        _table(parameters_frame(params)),
        "<h2>Properties</h2>",
        "<p>Fitted values come from validation runs at the fitted parameters with seeds "
        "independent of the fit; the uncertainty is one standard error of the mean "
        "(block averages, combined over replicas). <i>initial</i> is the value at the "
        "starting parameters (first evaluation of the fit).</p>",
        _table(properties.drop(columns=[c for c in ("source",) if c in properties.columns])),
        *_unfitted_warnings(properties),
    ]
    if solid is not None and len(solid):
        sections += [
            "<h2>Solid-state validation (not fitted)</h2>",
            "<p>Crystal structures relaxed (cell included) with the fitted model in the batched "
            "relaxation engine. Experimental values include zero-point motion, which a classical "
            "static lattice does not: the errors show what the model was not fitted to do.</p>",
            _table(solid.drop(columns=[c for c in ("source",) if c in solid.columns])),
        ]
        properties = pd.concat([properties, solid], ignore_index=True)
    for record in fit_records:
        png = base64.b64encode(convergence_figure(record)).decode()
        parity = base64.b64encode(properties_figure(record, properties)).decode()
        sections += [
            f"<h2>Fit {html.escape(record['fit'])}</h2>",
            f"<p>{html.escape(record['config'].get('description', ''))}</p>",
            f"<p class='meta'>{record['n_evaluations']} evaluations with {html.escape(record['method'])} "
            f"({html.escape(record['message'])}); objective {record['objective']:.4g}; "
            f"{record['wall_time_s']:.0f} s on {record['n_workers']} workers; master seed {record['seed']}; "
            f"config sha256 {record['config_sha256'][:16]}…</p>",
            f"<img alt='convergence of {html.escape(record['fit'])}' src='data:image/png;base64,{png}'>",
            f"<img alt='terms and properties of {html.escape(record['fit'])}' src='data:image/png;base64,{parity}'>",
            *(
                f"<img alt='{html.escape(Path(path).stem)} of {html.escape(record['fit'])}' "
                f"src='data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()}'>"
                for path in plots.get(record["fit"], ())
            ),
        ]
    sources = sorted({s for s in properties.get("source", pd.Series(dtype=str)).dropna() if s})
    if sources:
        sections.append(
            "<h2>Reference data</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in sources) + "</ul>"
        )
    if provenance:
        rows = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in provenance.items()
        )
        sections.append(f"<h2>Provenance</h2><table>{rows}</table>")
    head = f"<head><meta charset='utf-8'><title>chemfit-workflow report</title><style>{_CSS}</style></head>"
    page = f"<!DOCTYPE html><html>{head}<body>{''.join(sections)}</body></html>\n"
    return atomic_write_text(out_html, page)
