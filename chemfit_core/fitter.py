"""Minimise an objective over a (nested) parameter dict with scipy.

:class:`Fitter` keeps ChemFit's entry points (``Fitter(objective, initial_params,
bounds)``, ``fit_scipy(method="L-BFGS-B", **kw) -> dict``) and adds what a paper
needs: a :class:`FitResult` with the full history (parameters, objective,
per-term values and wall time of every evaluation), a derivative-free global
optimiser (:meth:`Fitter.fit_global`), one progress line per evaluation, and a
clear stop when the objective turns NaN or infinite instead of feeding the
optimiser a made-up number.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from numbers import Real
from typing import Any, Literal

import numpy as np
import scipy.optimize

from chemfit_core.abstract_objective_function import EvaluateContext, as_objective_functor
from chemfit_core.errors import NonFiniteObjectiveError
from chemfit_core.fit_result import SEP, Evaluation, FitResult, flatten_dict, unflatten_dict
from chemfit_core.term_result import TermResult

__all__ = ["SEP", "Evaluation", "FitResult", "Fitter", "flatten_dict", "unflatten_dict"]

logger = logging.getLogger(__name__)


class Fitter:
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
            :class:`NonFiniteObjectiveError`; ``"penalty"`` uses ``value_bad_params``.
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
        self.history: list[Evaluation] = []
        self.result: FitResult | None = None
        self.callbacks: list[tuple[Callable[[int, list[Evaluation]], None], int]] = []

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
    def register_callback(self, func: Callable[[int, list[Evaluation]], None], n_steps: int) -> None:
        """Call ``func(n_evaluations, history)`` after every ``n_steps`` evaluations."""
        if n_steps < 1:
            raise ValueError("n_steps must be >= 1")
        self.callbacks.append((func, n_steps))

    def fit_scipy(self, method: str = "L-BFGS-B", ctx: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Run ``scipy.optimize.minimize`` (any of its methods, by name); return best parameters.

        Keyword arguments go to ``minimize`` (``options``, ``tol``, ``jac``...).
        The full :class:`FitResult` is in ``self.result``.
        """
        bounds = None
        if np.isfinite(self._lower).any() or np.isfinite(self._upper).any():
            bounds = scipy.optimize.Bounds(self._to_internal(self._lower), self._to_internal(self._upper))
        start = time.monotonic()
        self._announce(f"scipy {method}")
        raw = scipy.optimize.minimize(
            self._evaluate_internal,
            self._to_internal(self._x0()),
            method=method,
            bounds=bounds,
            **kwargs,
        )
        return self._finish(method, raw, bool(raw.success), str(raw.message), start)

    def fit_least_squares(self, method: str = "trf", jac: str = "2-point", **kwargs: Any) -> dict[str, Any]:
        """Minimise Σ r² with ``scipy.optimize.least_squares`` over the terms' residuals.

        Terms report their residuals ((value − reference)/denominator) in their
        :class:`~chemfit_core.term_result.TermResult` (``ctx.result``); a combined
        objective's weights scale them by √w. ``jac="analytic"`` uses the Jacobians the
        terms report there (``{parameter: [d r_k / d parameter]}``, e.g. fluctuation
        formulas of MD averages), so one evaluation gives residuals and derivatives; otherwise
        scipy's finite differences (``"2-point"``, ``"3-point"``). Sets
        ``result.covariance`` = (JᵀJ)⁻¹ at the optimum (denominators read as 1σ
        uncertainties), scaled by the reduced χ² when there are more residuals
        than parameters and χ² > 1.
        """
        cache: dict[bytes, tuple[np.ndarray, np.ndarray | None]] = {}

        def evaluate(z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            key = np.asarray(z, dtype=float).tobytes()
            if key not in cache:
                self._evaluate_internal(z)
                record = self.history[-1]
                if record.residuals is None:
                    raise ValueError(
                        "least-squares fitting needs terms that report residuals (ctx.result, a TermResult)"
                    )
                cache.clear()
                cache[key] = (np.asarray(record.residuals, dtype=float), self._last_jacobian)
            return cache[key]

        def jacobian(z: np.ndarray) -> np.ndarray:
            r, j = evaluate(z)
            if j is None:
                raise ValueError("jac='analytic' needs terms that report a Jacobian in their TermResult")
            return j * self._scale  # d r / d z = d r / d x * dx/dz

        lower, upper = self._to_internal(self._lower), self._to_internal(self._upper)
        start = time.monotonic()
        self._announce(f"least squares ({method}, jac={jac})")
        raw = scipy.optimize.least_squares(
            lambda z: evaluate(z)[0],
            self._to_internal(self._x0()),
            jac=jacobian if jac == "analytic" else jac,
            bounds=(lower, upper),
            method=method,
            **kwargs,
        )
        params = self._finish(method, raw, bool(raw.success), str(raw.message), start)
        j_internal = jacobian(raw.x) if jac == "analytic" else np.asarray(raw.jac)
        self._store_covariance(j_internal / self._scale, np.asarray(raw.fun))
        return params

    def _store_covariance(self, j_phys: np.ndarray, residuals: np.ndarray) -> None:
        m, n = j_phys.shape
        try:
            cov = np.linalg.inv(j_phys.T @ j_phys)
        except np.linalg.LinAlgError:
            logger.warning("Jacobian is singular at the optimum: parameters are not all determined by the data")
            return
        chi2 = float(residuals @ residuals / (m - n)) if m > n else None
        if chi2 is not None and chi2 > 1:
            cov = cov * chi2
        assert self.result is not None
        self.result.covariance = cov
        self.result.parameter_names = list(self.names)
        self.result.reduced_chi2 = chi2

    def fit_global(
        self, method: str = "differential_evolution", seed: int | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Derivative-free global search: scipy's ``differential_evolution``,
        ``dual_annealing`` or ``direct``. Every parameter needs finite bounds.
        """
        if not (np.isfinite(self._lower).all() and np.isfinite(self._upper).all()):
            missing = [
                n for i, n in enumerate(self.names) if not (np.isfinite(self._lower[i]) and np.isfinite(self._upper[i]))
            ]
            raise ValueError(f"{method} needs finite bounds for every parameter; missing: {missing}")
        optimisers = {
            "differential_evolution": scipy.optimize.differential_evolution,
            "dual_annealing": scipy.optimize.dual_annealing,
            "direct": scipy.optimize.direct,
        }
        if method not in optimisers:
            raise ValueError(f"unknown global method {method!r}; choose from {sorted(optimisers)}")
        box = list(zip(self._to_internal(self._lower), self._to_internal(self._upper)))
        if method != "direct":
            kwargs.setdefault("rng" if _takes_rng(optimisers[method]) else "seed", seed)
        if method == "differential_evolution":
            kwargs.setdefault("x0", self._to_internal(self._x0()))
        start = time.monotonic()
        self._announce(method)
        raw = optimisers[method](self._evaluate_internal, box, **kwargs)
        return self._finish(method, raw, bool(raw.success), str(raw.message), start)

    def evaluate(self, parameters: Mapping[str, Any]) -> float:
        """Evaluate the objective once at ``parameters`` (recorded in the history)."""
        flat = flatten_dict(parameters)
        x = np.array([float(flat[n]) for n in self.names])
        return self._evaluate_physical(x)

    # -- internals --------------------------------------------------------------------------
    def _x0(self) -> np.ndarray:
        return np.array([self._flat_initial[n] for n in self.names], dtype=float)

    def _to_internal(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=float) - self._offset) / self._scale

    def _to_physical(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=float) * self._scale + self._offset

    def _evaluate_internal(self, z: np.ndarray) -> float:
        return self._evaluate_physical(self._to_physical(z))

    def _evaluate_physical(self, x: np.ndarray) -> float:
        x = np.clip(x, self._lower, self._upper)  # optimisers may step a hair outside
        flat = {name: float(v) for name, v in zip(self.names, x)}
        if self.cache is not None and (cached := self.cache.get(flat)) is not None:
            return self._replay(flat, cached)
        params = unflatten_dict(flat)
        ctx = EvaluateContext()
        start = time.monotonic()
        error = None
        try:
            value = float(self.objective_function(params, ctx))
        except Exception as exc:
            if not self.swallow_exceptions:
                self._record(flat, math.nan, ctx, time.monotonic() - start, repr(exc))
                raise
            if self.log_exceptions:
                logger.exception("objective failed at %s; using %g", flat, self.value_bad_params)
            value, error = self.value_bad_params, f"{type(exc).__name__}: {exc}"
        wall = time.monotonic() - start
        if not math.isfinite(value):
            terms = ctx.meta.get("terms")
            detail = ""
            if terms is not None:
                names = ctx.meta.get("term_names") or [f"term{i}" for i in range(len(terms))]
                detail = "; per-term values: " + ", ".join(f"{n}={t}" for n, t in zip(names, terms))
            if self.on_nonfinite == "raise":
                self._record(flat, value, ctx, wall, "non-finite objective")
                raise NonFiniteObjectiveError(
                    f"objective is {value} at {flat}{detail}. Stopping: an optimiser fed "
                    "NaN/inf goes astray. Check the parameter bounds, or pass "
                    "on_nonfinite='penalty' to treat such points as bad."
                )
            logger.warning("objective is %s at %s%s; using %g", value, flat, detail, self.value_bad_params)
            value, error = self.value_bad_params, "non-finite objective"
        self._record(flat, value, ctx, wall, error)
        if self.cache is not None and error is None:
            last = self.history[-1]
            self.cache.put(
                flat,
                {**asdict(last), "jacobian": None if self._last_jacobian is None else self._last_jacobian.tolist()},
            )
        return value

    def _replay(self, flat: dict[str, float], cached: Mapping[str, Any]) -> float:
        """Record a cached evaluation as if it had just run (its original wall time kept)."""
        self.n_replayed += 1
        jacobian = cached.get("jacobian")
        evaluation = Evaluation(
            **{**{k: v for k, v in cached.items() if k != "jacobian"}, "index": len(self.history), "parameters": flat}
        )
        self._append(evaluation, None if jacobian is None else np.asarray(jacobian, dtype=float), replayed=True)
        return float(evaluation.objective)

    def _record(
        self, flat: dict[str, float], value: float, ctx: EvaluateContext, wall: float, error: str | None
    ) -> None:
        terms = ctx.meta.get("terms")
        results = _term_results(ctx)
        residuals, jacobian = _residuals_and_jacobian(results, ctx.meta.get("weights"), self.names)
        evaluation = Evaluation(
            index=len(self.history),
            parameters=flat,
            objective=value,
            terms=list(terms) if terms is not None else None,
            term_names=list(ctx.meta["term_names"]) if "term_names" in ctx.meta else None,
            wall_time_s=wall,
            error=error,
            term_results=None if results is None or all(r is None for r in results) else results,
            residuals=None if residuals is None else residuals.tolist(),
        )
        self._append(evaluation, jacobian)

    def _append(self, evaluation: Evaluation, jacobian: np.ndarray | None, replayed: bool = False) -> None:
        """Add an evaluation to the history: best so far, progress line, callbacks."""
        self._last_jacobian = jacobian
        self.history.append(evaluation)
        if evaluation.error is None and (self._best is None or evaluation.objective < self._best.objective):
            self._best = evaluation
        if self.progress:
            params = " ".join(f"{n}={v:.6g}" for n, v in evaluation.parameters.items())
            terms_txt = ""
            if evaluation.terms is not None:
                terms_txt = " terms=[" + ", ".join("skip" if t is None else f"{t:.3g}" for t in evaluation.terms) + "]"
            best = " *" if evaluation is self._best else ""
            timing = "replayed from the cache" if replayed else f"{evaluation.wall_time_s:.2f} s"
            logger.info(
                "eval %4d  f=%.6e%s  %s%s  (%s)",
                evaluation.index,
                evaluation.objective,
                best,
                params,
                terms_txt,
                timing,
            )
        for func, n_steps in self.callbacks:
            if len(self.history) % n_steps == 0:
                func(len(self.history), self.history)

    def _announce(self, what: str) -> None:
        if self.progress:
            _ensure_progress_handler()
            logger.info("fit with %s over %s", what, ", ".join(self.names))

    def _finish(self, method: str, raw: Any, success: bool, message: str, start: float) -> dict[str, Any]:
        if self._best is None:
            raise NonFiniteObjectiveError("no evaluation of the objective succeeded")
        # The optimiser's answer and the best point seen can differ (noise, a last
        # line search); report the best evaluated point: it is the one we can vouch for.
        best = self._best
        self.result = FitResult(
            parameters=unflatten_dict(best.parameters),
            objective=best.objective,
            success=success,
            message=message,
            method=method,
            n_evaluations=len(self.history),
            wall_time_s=time.monotonic() - start,
            history=list(self.history),
            optimizer_result=raw,
        )
        if not success:
            logger.warning("fit did not converge: %s", message)
        self._warn_near_bounds(best.parameters)
        if self.progress:
            logger.info(
                "fit done: f=%.6e after %d evaluations (%.1f s): %s",
                best.objective,
                len(self.history),
                self.result.wall_time_s,
                message,
            )
        return self.result.parameters

    def _warn_near_bounds(self, flat: dict[str, float]) -> None:
        if self.near_bound_tol is None:
            return
        for i, name in enumerate(self.names):
            lo, hi = self._lower[i], self._upper[i]
            if np.isfinite(lo) and np.isfinite(hi):
                margin = self.near_bound_tol * (hi - lo)
                if flat[name] < lo + margin or flat[name] > hi - margin:
                    logger.warning("parameter %s = %g is near its bounds [%g, %g]", name, flat[name], lo, hi)


def _term_results(ctx: EvaluateContext) -> list[TermResult | None] | None:
    """Each term's result: the children's (a combined objective) or the context's own (one term)."""
    if ctx.children:
        return [child.result for child in ctx.children]
    return None if ctx.result is None else [ctx.result]


def _residuals_and_jacobian(
    results: list[TermResult | None] | None, weights: list[float] | None, names: list[str]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Weighted residual vector (and Jacobian over ``names``) of an evaluation, when every
    weighted term gives residuals (and Jacobians)."""
    if not results:
        return None, None
    weights = [1.0] * len(results) if weights is None else weights
    parts = [(w, r) for w, r in zip(weights, results) if w > 0]
    if not parts or any(r is None or r.residuals is None for _, r in parts):
        return None, None
    residuals = [np.sqrt(w) * np.asarray(r.residuals, dtype=float) for w, r in parts]
    complete = all(r.jacobian is not None for _, r in parts)
    jacobian = np.vstack([np.sqrt(w) * r.jacobian_matrix(names) for w, r in parts]) if complete else None
    return np.concatenate(residuals), jacobian


def _takes_rng(func: Callable[..., Any]) -> bool:
    import inspect

    return "rng" in inspect.signature(func).parameters


def _ensure_progress_handler() -> None:
    """Show INFO progress on stderr unless the application configured logging itself."""
    package_logger = logging.getLogger("chemfit_core")
    if package_logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    package_logger.addHandler(handler)
    if package_logger.level == logging.NOTSET:
        package_logger.setLevel(logging.INFO)
