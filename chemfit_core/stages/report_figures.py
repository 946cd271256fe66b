"""The report's figures: convergence, objective terms and properties, structure parity.

Each ``*_figure`` function returns a matplotlib figure; the ``write_*`` functions save it as
PNG (for the HTML and Snakemake reports) and as PDF beside it (vector, for papers).
:func:`figure_flags` says what a fit's figures show, for their captions
(``workflow/report/*.rst``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from chemfit_core.results import atomic_write_bytes  # noqa: E402
from chemfit_core.stages.report_tables import (  # noqa: E402
    ROUND_TRIP,
    figure_flags,
    format_value_uncertainty,
    state_label,
    yes_no,
)

__all__ = ["figure_flags"]  # with the figures it describes; in report_tables, which needs no matplotlib

PANELS_PER_ROW = 4
"""Convergence panels (objective, then one per parameter) per row: many parameters wrap."""


def figure_bytes(fig: Figure, fmt: str = "png", close: bool = False) -> bytes:
    """``fig`` rendered as ``fmt`` (png at 110 dpi, pdf, svg); closed after when ``close``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=110)
    if close:
        plt.close(fig)
    return buffer.getvalue()


def save_figure(fig: Figure, out_png: Path | str, vector: str | None = "pdf") -> Path:
    """Write ``fig`` to ``out_png`` and, unless ``vector`` is None, beside it as ``vector``
    (same name, that suffix); both atomically. Closes the figure."""
    try:
        atomic_write_bytes(out_png, figure_bytes(fig, "png"))
        if vector:
            atomic_write_bytes(Path(out_png).with_suffix(f".{vector}"), figure_bytes(fig, vector))
    finally:
        plt.close(fig)
    return Path(out_png)


def convergence_figure(fit_record: Mapping[str, Any]) -> Figure:
    """Objective per evaluation (log scale, best so far) and each parameter's path, as small
    multiples of at most :data:`PANELS_PER_ROW` per row (a six-parameter fit: two rows)."""
    history = fit_record["history"]
    evals = np.array([e["index"] for e in history])
    objective = np.array([np.nan if e["objective"] is None else e["objective"] for e in history], dtype=float)
    names = list(history[0]["parameters"]) if history else []
    params_cfg = fit_record["config"]["parameters"]
    panels = 1 + len(names)
    ncols = min(panels, PANELS_PER_ROW)
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 3.0 * nrows), constrained_layout=True, squeeze=False)
    axes = axes.ravel()
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
    ax.set_title(f"{fit_record['fit']}: {fit_record['method']}", fontsize="medium")
    ax.legend(frameon=False, fontsize="small")
    for ax, name in zip(axes[1:], names):
        values = [e["parameters"][name] for e in history]
        ax.plot(evals, values, "o-", ms=3, color="C1")
        spec = params_cfg.get(name, {})
        if "reference" in spec:
            ax.axhline(spec["reference"], ls="--", color="k", lw=1, label="published")
            ax.legend(frameon=False, fontsize="small")
        ax.set_xlabel("evaluation")
        unit = spec.get("unit", "")
        title = f"{name} ({unit})" if unit else name
        if "lower" in spec and "upper" in spec:
            title += f" in [{format_value_uncertainty(spec['lower'])}, {format_value_uncertainty(spec['upper'])}]"
        ax.set_title(title, fontsize="medium")
    for ax in axes[:panels]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig


def write_convergence_plot(fit_record: Mapping[str, Any], out_png: Path | str, vector: str | None = "pdf") -> Path:
    """Write :func:`convergence_figure` to ``out_png`` (and a PDF beside it)."""
    return save_figure(convergence_figure(fit_record), out_png, vector)


def property_label(row: Mapping[str, Any]) -> str:
    """A property's label in plots: its name, with the state point or structure where it has one
    (never "nan")."""
    state = state_label(row)
    if row.get("state_point") == "solid":
        return f"{row['property']} ({state}, solid)" if state else f"{row['property']} (solid)"
    return f"{row['property']} @ {row['state_point']}" if state else str(row["property"])


def properties_figure(fit_record: Mapping[str, Any], properties: pd.DataFrame) -> Figure:
    """Each objective term's contribution per evaluation and, when there are properties with a
    reference, a parity chart of their relative errors (initial and fitted; error bars: the
    statistical and parameter uncertainties combined), fitted (blue) and validation (red) apart."""
    history = fit_record["history"]
    names = (history[0].get("term_names") or []) if history else []
    rows = properties[(properties["fit"] == fit_record["fit"]) & properties["target"].notna()]
    if "state_point" in rows:
        rows = rows[rows["state_point"] != ROUND_TRIP]
    panels = 2 if len(rows) else 1
    fig, axes = plt.subplots(
        1, panels, figsize=(5.5 * panels, 3.2 + 0.18 * len(rows)), constrained_layout=True, squeeze=False
    )
    ax = axes[0, 0]
    evals = np.array([e["index"] for e in history])
    for k, name in enumerate(names):
        values = np.array(
            [np.nan if not e.get("terms") or e["terms"][k] is None else e["terms"][k] for e in history], dtype=float
        )
        ax.semilogy(evals, values, "o-", ms=3, label=name)
    ax.set_xlabel("evaluation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("term value (weighted residuals²)")
    ax.set_title("objective terms")
    if names:
        ax.legend(frameon=False, fontsize="small")
    if not len(rows):
        return fig
    ax = axes[0, 1]
    labels = [property_label(r) for _, r in rows.iterrows()]
    y = np.arange(len(rows))
    target = rows["target"].to_numpy(dtype=float)
    fitted = 100 * (rows["fitted"].to_numpy(dtype=float) / target - 1)
    initial = 100 * (pd.to_numeric(rows.get("initial"), errors="coerce").to_numpy(dtype=float) / target - 1)
    zeros = pd.Series(0.0, index=rows.index)
    sigma = np.hypot(
        np.nan_to_num(pd.to_numeric(rows.get("statistical_uncertainty", zeros), errors="coerce").to_numpy(float)),
        np.nan_to_num(pd.to_numeric(rows.get("parameter_uncertainty", zeros), errors="coerce").to_numpy(float)),
    )
    was_fitted = np.array([yes_no(v) == "yes" for v in rows["fitted_to"]])
    ax.axvline(0, color="k", lw=1)
    if np.isfinite(initial).any():
        ax.scatter(initial, y, marker="x", color="0.6", label="initial", zorder=2)
    ax.errorbar(fitted, y, xerr=100 * sigma / np.abs(target), fmt="none", ecolor="0.3", zorder=2)
    ax.scatter(fitted[was_fitted], y[was_fitted], color="C0", zorder=3, label="fitted")
    if (~was_fitted).any():
        ax.scatter(fitted[~was_fitted], y[~was_fitted], color="C3", zorder=3, label="validation (not fitted)")
    ax.set_yticks(y, labels)
    ax.set_xlabel("model / reference − 1 (%)")
    ax.set_title("properties: fitted (blue)" + (", validation (red)" if (~was_fitted).any() else ""))
    ax.legend(frameon=False, fontsize="small")
    return fig


def write_properties_plot(
    fit_record: Mapping[str, Any], properties: pd.DataFrame, out_png: Path | str, vector: str | None = "pdf"
) -> Path:
    """Write :func:`properties_figure` to ``out_png`` (and a PDF beside it)."""
    return save_figure(properties_figure(fit_record, properties), out_png, vector)


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


def structures_parity_figure(parity: Mapping[str, Mapping[str, np.ndarray]], fit_name: str) -> Figure:
    """Reference vs model energy per atom (eV/atom) and force components (eV/Å), initial
    (grey) and fitted (blue), with each one's RMSE."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    for ax, key, unit in ((axes[0], "energy_per_atom", "eV/atom"), (axes[1], "forces", "eV/Å")):
        values = [parity[stage][f"{key}_{kind}"] for stage in parity for kind in ("reference", "model")]
        low, high = float(min(v.min() for v in values)), float(max(v.max() for v in values))
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="k", lw=1)
        for stage, style in (("initial", dict(marker="x", color="0.6")), ("fitted", dict(marker="o", color="C0"))):
            ref, model = parity[stage][f"{key}_reference"], parity[stage][f"{key}_model"]
            rmse = float(np.sqrt(np.mean((model - ref) ** 2)))
            label = f"{stage} (RMSE {format_value_uncertainty(rmse, significant=3)} {unit})"
            ax.scatter(ref, model, s=12, label=label, **style)
        ax.set_xlabel(f"reference {key.replace('_', ' ')} ({unit})")
        ax.set_ylabel(f"model {key.replace('_', ' ')} ({unit})")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(frameon=False, fontsize="small")
    fig.suptitle(f"{fit_name}: reference structures, parity")
    return fig


def write_structures_parity(fit_record: Mapping[str, Any], out_png: Path | str, out_csv: Path | str) -> pd.DataFrame:
    """Write the parity plot of a fit's reference structures (PNG, and a PDF beside it) and its
    table: one row per structure (energy per atom) and per force component, reference, initial
    and fitted."""
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
    save_figure(structures_parity_figure(parity, fit_record["fit"]), out_png)
    return table
