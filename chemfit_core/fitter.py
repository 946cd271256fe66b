"""Minimise an objective over a (nested) parameter dict with scipy.

:class:`Fitter` keeps ChemFit's entry points (``Fitter(objective, initial_params,
bounds)``, ``fit_scipy(method="L-BFGS-B", **kw) -> dict``) and adds what a paper
needs: a :class:`FitResult` with the full history (parameters, objective,
per-term values and wall time of every evaluation), a derivative-free global
optimiser (:meth:`Fitter.fit_global`), one progress line per evaluation, and a
clear stop when the objective turns NaN or infinite instead of feeding the
optimiser a made-up number.

ChemFit 3.1.1's interfaces are here too: :class:`FitterEvaluateContext` (one per
worker: evaluations so far and the best one), a user-driven loop
(:meth:`Fitter.init`, :meth:`~Fitter.ask`, :meth:`~Fitter.tell`, :meth:`~Fitter.finish`),
step callbacks ``func(step, contexts)`` and :meth:`Fitter.fit_nevergrad` (the optional
``nevergrad`` extra: ``pip install chemfit-core[nevergrad]``).

:class:`Fitter` holds the parameters, bounds, callbacks, the ask/tell loop and the result; it
combines the evaluation machinery (:mod:`chemfit_core._fitter_evaluation`) and the optimisers
(:mod:`chemfit_core._fitter_methods`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from numbers import Real
from typing import Any, Literal

import numpy as np

from chemfit_core._fitter_context import FitterEvaluateContext
from chemfit_core._fitter_evaluation import FitterEvaluation
from chemfit_core._fitter_methods import FitterMethods
from chemfit_core.abstract_objective_function import ExecutorLike, as_objective_functor
from chemfit_core.errors import NonFiniteObjectiveError
from chemfit_core.fit_result import SEP, Evaluation, FitResult, flatten_dict, unflatten_dict
from chemfit_core.utils import check_params_near_bounds

__all__ = [
    "SEP",
    "Evaluation",
    "FitResult",
    "Fitter",
    "FitterEvaluateContext",
    "flatten_dict",
    "unflatten_dict",
]

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, list["FitterEvaluateContext"]], None]


class Fitter(FitterMethods, FitterEvaluation):
    """Drive the minimisation of ``objective_function`` over a parameter dict.

    Args:
        objective_function: ``f(params)`` or ``f(params, ctx)`` returning a float;
            combined objectives report their per-term values into the history.
        initial_params: starting parameters; may be nested dicts of floats.
        bounds: ``(lower, upper)`` per parameter, same nesting; None for open ends.
        near_bound_tol: warn when a fitted value lies within this fraction of the
            bound interval from a bound.
        value_bad_params: objective value used for a failed evaluation when
            ``swallow_exceptions`` is set, or for a non-finite one when
            ``on_nonfinite="penalty"``.
        swallow_exceptions: turn an exception of the objective into
            ``value_bad_params`` (logged) instead of stopping the fit.
        log_exceptions: log swallowed exceptions with their traceback.
        on_nonfinite: ``"raise"`` (default) stops with
            :class:`NonFiniteObjectiveError`; ``"penalty"`` uses ``value_bad_params`` (as does a
            point with non-finite parameters, which only an optimiser can propose).
        normalize: let the optimiser see each parameter scaled to [0, 1] within
            its bounds (or divided by its initial value when unbounded), so that
            step sizes and tolerances mean the same for every parameter.
        progress: log one line per evaluation (INFO on ``chemfit_core.fitter``;
            a stderr handler is added when logging is not configured).
        cache: an :class:`~chemfit_core.cache.EvaluationCache`: every successful
            evaluation is saved to it as it finishes, and parameters found in it are
            replayed instead of recomputed, so a killed fit restarted with the same
            cache resumes where it stopped (``n_replayed`` counts them).
    """

    def __init__(
        self,
        objective_function: Callable[..., float],
        initial_params: Mapping[str, Any],
        bounds: Mapping[str, Any] | None = None,
        near_bound_tol: float | None = None,
        value_bad_params: float = 1e5,
        swallow_exceptions: bool = False,
        log_exceptions: bool = True,
        *,
        on_nonfinite: Literal["raise", "penalty"] = "raise",
        normalize: bool = False,
        progress: bool = True,
        cache: Any | None = None,
    ) -> None:
        if on_nonfinite not in ("raise", "penalty"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'penalty', got {on_nonfinite!r}")
        self.objective_function = as_objective_functor(objective_function)
        self.initial_parameters = dict(initial_params)
        self.bounds = dict(bounds or {})
        self.near_bound_tol = near_bound_tol
        self.value_bad_params = float(value_bad_params)
        self.swallow_exceptions = swallow_exceptions
        self.log_exceptions = log_exceptions
        self.on_nonfinite = on_nonfinite
        self.normalize = normalize
        self.progress = progress
        self.cache = cache
        self.n_replayed = 0
        self.budget: int | None = None  # evaluations the caller allows (progress lines show k/N)
        self._progress_start: float | None = None
        self.history: list[Evaluation] = []
        self.result: FitResult | None = None
        self.callbacks: list[tuple[StepCallback, int]] = []
        self.evaluation_callbacks: list[tuple[Callable[[int, list[Evaluation]], None], int]] = []
        self.contexts: list[FitterEvaluateContext] = []
        self.problematic_params: list[tuple[str, float, float, float]] = []
        self._session: dict[str, Any] | None = None
        self._fit_start = 0

        self._flat_initial = flatten_dict(self.initial_parameters)
        self.names = list(self._flat_initial)
        for name, value in self._flat_initial.items():
            if not isinstance(value, Real) or not math.isfinite(value):
                raise ValueError(f"initial value of parameter {name!r} must be a finite number")
        flat_bounds = flatten_dict(self.bounds)
        unknown = sorted(set(flat_bounds) - set(self.names))
        if unknown:
            raise ValueError(f"bounds given for unknown parameters: {', '.join(unknown)}")
        self._lower = np.full(len(self.names), -np.inf)
        self._upper = np.full(len(self.names), np.inf)
        for i, name in enumerate(self.names):
            lo, hi = flat_bounds.get(name, (None, None))
            self._lower[i] = -np.inf if lo is None else float(lo)
            self._upper[i] = np.inf if hi is None else float(hi)
            if self._lower[i] >= self._upper[i]:
                raise ValueError(
                    f"bounds of parameter {name!r} are inverted or empty: "
                    f"lower {self._lower[i]} >= upper {self._upper[i]}"
                )
            if not self._lower[i] <= self._flat_initial[name] <= self._upper[i]:
                raise ValueError(
                    f"initial value {self._flat_initial[name]} of parameter {name!r} lies "
                    f"outside its bounds [{self._lower[i]}, {self._upper[i]}]"
                )
        x0 = np.array([self._flat_initial[n] for n in self.names], dtype=float)
        finite = np.isfinite(self._lower) & np.isfinite(self._upper)
        self._offset = np.where(finite, self._lower, 0.0)
        self._scale = np.where(finite, self._upper - self._lower, np.where(x0 != 0, np.abs(x0), 1.0))
        if not normalize:
            self._offset[:] = 0.0
            self._scale[:] = 1.0
        self._best: Evaluation | None = None
        self._last_jacobian: np.ndarray | None = None

    # -- public API -----------------------------------------------------------------------
    def register_callback(self, func: StepCallback, n_steps: int) -> None:
        """Call ``func(step, contexts)`` at every optimiser step that is a multiple of ``n_steps``
        (ChemFit's callbacks: scipy iterations, nevergrad batches, :meth:`tell`)."""
        if n_steps < 1:
            raise ValueError("n_steps must be >= 1")
        self.callbacks.append((func, n_steps))

    def register_evaluation_callback(self, func: Callable[[int, list[Evaluation]], None], n_evaluations: int) -> None:
        """Call ``func(n_evaluations, history)`` after every ``n_evaluations`` evaluations."""
        if n_evaluations < 1:
            raise ValueError("n_evaluations must be >= 1")
        self.evaluation_callbacks.append((func, n_evaluations))

    # -- a user-driven loop (ChemFit's ask/tell) ---------------------------------------------
    def init(
        self,
        num_workers: int = 1,
        contexts: Sequence[FitterEvaluateContext] | None = None,
        executor: ExecutorLike | None = None,
    ) -> None:
        """Start a fit driven by the caller: then :meth:`ask`, :meth:`tell` once per step, :meth:`finish`.

        ``num_workers`` candidates may be evaluated at once, each with its own context
        (``contexts``, or new ones); batches run in ``executor`` (a thread pool of the
        fitter's own when ``num_workers > 1`` and none is given, shut down by :meth:`finish`).
        """
        if num_workers < 1:
            raise ValueError("num_workers must be at least 1")
        if contexts is not None:
            if len(contexts) != num_workers:
                raise ValueError(f"give one context per worker: {len(contexts)} contexts for {num_workers} workers")
            if not all(isinstance(c, FitterEvaluateContext) for c in contexts):
                raise TypeError("contexts must be FitterEvaluateContext instances")
        self._close_session()
        own = executor is None and num_workers > 1
        if own:
            executor = ThreadPoolExecutor(num_workers, thread_name_prefix="chemfit-fitter")
        self.contexts = (
            list(contexts) if contexts is not None else [FitterEvaluateContext() for _ in range(num_workers)]
        )
        self._session = {"num_workers": num_workers, "executor": executor, "own": own, "step": 0}
        self._fit_start = len(self.history)
        self._best = None
        self.time_fit_start = time.time()

    def ask(
        self, parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]], context_index: int = 0
    ) -> float | list[float]:
        """Evaluate one candidate (a dict: its loss) or a batch (a list: their losses, in order).

        A batch holds at most ``num_workers`` candidates; candidate k uses ``contexts[k]``.
        Every evaluation is recorded in :attr:`history` as in the built-in fits.
        """
        session = self._require_session("ask")
        if isinstance(parameters, Mapping):
            return self._evaluate(parameters, self.contexts[context_index])
        batch = list(parameters)
        if len(batch) > session["num_workers"]:
            raise ValueError(f"a batch holds at most num_workers={session['num_workers']} candidates, got {len(batch)}")
        if len(batch) <= 1:
            return [self._evaluate(p, self.contexts[0]) for p in batch]
        if session["executor"] is None:
            raise RuntimeError("evaluating a batch needs an executor: pass one to init()")
        return self._evaluate_batch(batch, session["executor"])

    def tell(self, step: int | None = None) -> None:
        """Mark the end of an optimiser step (default: the next one, from 0) and run the step callbacks."""
        session = self._require_session("tell")
        current = session["step"] if step is None else step
        for func, n_steps in self.callbacks:
            if current % n_steps == 0:
                func(current, self.contexts)
        session["step"] = current + 1

    def finish(self, opt_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """End a user-driven fit; return ``opt_params``, or the best candidate evaluated.

        Sets :attr:`result` and warns about parameters near their bounds.
        """
        self._require_session("finish")
        if opt_params is None:
            if self._best is None:
                self._close_session()
                raise RuntimeError("cannot finish before a candidate was evaluated successfully")
            params = unflatten_dict(self._best.parameters)
        else:
            params = dict(opt_params)
        flat = flatten_dict(params)
        match = next((e for e in reversed(self.history[self._fit_start :]) if e.parameters == flat), None)
        objective = math.nan if match is None else match.objective
        self._make_result(params, objective, True, "finished by the caller", "ask/tell", None)
        return params

    def evaluate(self, parameters: Mapping[str, Any]) -> float:
        """Evaluate the objective once at ``parameters`` (recorded in the history)."""
        return self._evaluate(parameters, self._context())

    # -- the result and the session ---------------------------------------------------------
    def _finish(self, method: str, raw: Any, success: bool, message: str, start: float) -> dict[str, Any]:
        if self._best is None:
            self._close_session()
            raise NonFiniteObjectiveError("no evaluation of the objective succeeded")
        # The optimiser's answer and the best point seen can differ (noise, a last line
        # search, CMA's unvisited mean); report the best evaluated point: the one we can vouch for.
        best = self._best
        params = unflatten_dict(best.parameters)
        self._make_result(params, best.objective, success, message, method, raw, time.monotonic() - start)
        return params

    def _make_result(
        self,
        params: dict[str, Any],
        objective: float,
        success: bool,
        message: str,
        method: str,
        raw: Any,
        wall: float | None = None,
    ) -> None:
        history = list(self.history[self._fit_start :])
        wall = time.time() - getattr(self, "time_fit_start", time.time()) if wall is None else wall
        self.result = FitResult(
            parameters=params,
            objective=objective,
            success=success,
            message=message,
            method=method,
            n_evaluations=len(history),
            wall_time_s=wall,
            history=history,
            optimizer_result=raw,
        )
        self._close_session()
        self.time_fit_end = time.time()
        if not success:
            logger.warning("fit did not converge: %s", message)
        self._warn_near_bounds(flatten_dict(params))
        if self.progress:
            logger.info("fit done: f=%.6e after %d evaluations (%.1f s): %s", objective, len(history), wall, message)

    def _require_session(self, what: str) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError(f"call fitter.init() before fitter.{what}()")
        return self._session

    def _close_session(self) -> None:
        """End the current fit: shut down the fitter's own executor (waiting for its threads)."""
        session, self._session = self._session, None
        if session is not None and session["own"]:
            session["executor"].shutdown(wait=True)

    def _warn_near_bounds(self, flat: dict[str, float]) -> None:
        if self.near_bound_tol is None:
            return
        flat_bounds = {
            name: (float(self._lower[i]), float(self._upper[i]))
            for i, name in enumerate(self.names)
            if np.isfinite(self._lower[i]) and np.isfinite(self._upper[i])
        }
        self.problematic_params = check_params_near_bounds(flat, flat_bounds, self.near_bound_tol)
        for name, value, lo, hi in self.problematic_params:
            logger.warning("parameter %s = %g is near its bounds [%g, %g]", name, value, lo, hi)
