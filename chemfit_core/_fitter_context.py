"""The context of one :class:`~chemfit_core.fitter.Fitter` worker, and one evaluation of the objective.

Importable as ``chemfit_core.fitter.FitterEvaluateContext`` (ChemFit's path).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from chemfit_core.abstract_objective_function import EvaluateContext, ObjectiveFunctor


class FitterEvaluateContext(EvaluateContext):
    """The context of one fitter worker, reused for each of its evaluations (ChemFit's fields).

    Besides the last evaluation's ``parameters``, ``loss``, ``quantities`` and ``meta`` it
    holds ``n_evals`` (evaluations made with it) and the best one so far: ``opt_loss``,
    ``opt_params`` and ``opt_meta``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.n_evals: int = 0
        self.opt_loss: float | None = None
        self.opt_params: dict[str, Any] | None = None
        self.opt_meta: dict[str, Any] | None = None

    def observe(self, parameters: Mapping[str, Any], loss: float, meta: Mapping[str, Any] | None = None) -> None:
        """Record ``loss`` at ``parameters`` as the best so far when it is lower."""
        if self.opt_loss is None or loss < self.opt_loss:
            self.opt_loss = float(loss)
            self.opt_params = dict(parameters)
            self.opt_meta = dict(meta or {})

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(n_evals=self.n_evals, opt_loss=self.opt_loss, opt_params=self.opt_params, opt_meta=self.opt_meta)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.n_evals = state["n_evals"]
        self.opt_loss = state["opt_loss"]
        self.opt_params = state["opt_params"]
        self.opt_meta = state["opt_meta"]


def _run_objective(
    objective: ObjectiveFunctor, parameters: dict[str, Any], ctx: EvaluateContext
) -> tuple[Any, BaseException | None, float, dict[str, Any]]:
    """One evaluation, wherever it runs: (value, exception, wall time, what it wrote into ``ctx``)."""
    start = time.monotonic()
    try:
        value, error = objective(parameters, ctx), None
    except Exception as exc:  # judged by the fitter, in the caller's thread
        value, error = None, exc
    return value, error, time.monotonic() - start, ctx.to_result_state()
