"""What a fit returns: every evaluation (:class:`Evaluation`) and the outcome (:class:`FitResult`).

Also the flat names of nested parameters (:func:`flatten_dict`). ChemFit's path
``chemfit_core.fitter`` re-exports all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from chemfit_core.term_result import TermResult

SEP = "."
"""Separator of nested parameter names in flat form: ``{"lj": {"eps": 1}}`` → ``lj.eps``."""


def flatten_dict(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1.0}}`` → ``{"a.b": 1.0}`` (order preserved)."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{SEP}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_dict(value, name))
        else:
            flat[name] = value
    return flat


def unflatten_dict(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_dict`."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(SEP)
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


@dataclass
class Evaluation:
    """One objective evaluation: what was asked, what came back, how long it took."""

    index: int
    parameters: dict[str, float]  # flat names
    objective: float
    terms: list[float | None] | None = None
    term_names: list[str] | None = None
    wall_time_s: float = 0.0
    error: str | None = None
    term_results: list[TermResult | None] | None = None  # per term, from each term's ctx.result
    residuals: list[float] | None = None  # weighted residual vector, when the terms give one

    def __post_init__(self) -> None:
        if self.term_results is not None:  # replayed from JSON
            self.term_results = [
                r if r is None or isinstance(r, TermResult) else TermResult.from_dict(r) for r in self.term_results
            ]

    @property
    def properties(self) -> list[dict[str, float] | None] | None:
        """What each term computed (``TermResult.properties``), None for terms without a result."""
        if self.term_results is None:
            return None
        return [None if r is None else r.properties for r in self.term_results]


@dataclass
class FitResult:
    """Outcome of a fit, in scipy's spirit plus parameter names and history.

    ``parameters`` holds the best parameters found (nested like the input);
    ``objective`` their objective value; ``history`` every evaluation in order.
    """

    parameters: dict[str, Any]
    objective: float
    success: bool
    message: str
    method: str
    n_evaluations: int
    wall_time_s: float
    history: list[Evaluation] = field(default_factory=list)
    optimizer_result: Any = None
    covariance: np.ndarray | None = None  # of the flat parameters, in their units
    parameter_names: list[str] | None = None
    reduced_chi2: float | None = None

    def standard_errors(self) -> dict[str, float]:
        """One-sigma uncertainty of each (flat) parameter from the covariance."""
        if self.covariance is None or self.parameter_names is None:
            return {}
        return {n: float(np.sqrt(max(v, 0.0))) for n, v in zip(self.parameter_names, np.diag(self.covariance))}

    @property
    def x(self) -> dict[str, Any]:
        """Alias of ``parameters`` (scipy's name)."""
        return self.parameters

    @property
    def fun(self) -> float:
        """Alias of ``objective`` (scipy's name)."""
        return self.objective

    @property
    def nfev(self) -> int:
        """Alias of ``n_evaluations`` (scipy's name)."""
        return self.n_evaluations

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with the whole history."""
        return {
            "parameters": self.parameters,
            "objective": self.objective,
            "success": self.success,
            "message": self.message,
            "method": self.method,
            "n_evaluations": self.n_evaluations,
            "wall_time_s": self.wall_time_s,
            "history": [asdict(e) for e in self.history],
            "covariance": None if self.covariance is None else self.covariance.tolist(),
            "parameter_names": self.parameter_names,
            "standard_errors": self.standard_errors(),
            "reduced_chi2": self.reduced_chi2,
        }

    def history_frame(self):
        """History as a pandas DataFrame: one row per evaluation, one column per parameter/term."""
        import pandas as pd

        rows = []
        for e in self.history:
            row: dict[str, Any] = {"evaluation": e.index, "objective": e.objective}
            row.update(e.parameters)
            for name, value in zip(e.term_names or [], e.terms or []):
                row[f"term:{name}"] = value
            row["wall_time_s"] = e.wall_time_s
            rows.append(row)
        return pd.DataFrame(rows)
