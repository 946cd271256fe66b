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
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from numbers import Real
from typing import Any, Literal

import numpy as np
import scipy.optimize

from chemfit_core.abstract_objective_function import (
    EvaluateContext,
    ExecutorLike,
    ObjectiveFunctor,
    as_objective_functor,
)
from chemfit_core.errors import NonFiniteObjectiveError
from chemfit_core.fit_result import SEP, Evaluation, FitResult, flatten_dict, unflatten_dict
from chemfit_core.term_result import TermResult
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

    def fit_scipy(
        self, method: str = "L-BFGS-B", ctx: FitterEvaluateContext | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run ``scipy.optimize.minimize`` (any of its methods, by name); return best parameters.

        Keyword arguments go to ``minimize`` (``options``, ``tol``, ``jac``, ``callback``...).
        ``ctx`` is the context used for every evaluation (default: a new one). Each
        iteration is a step for :meth:`register_callback`. The full :class:`FitResult` is
        in ``self.result``.
        """
        bounds = None
        if np.isfinite(self._lower).any() or np.isfinite(self._upper).any():
            bounds = scipy.optimize.Bounds(self._to_internal(self._lower), self._to_internal(self._upper))
        self.init(contexts=None if ctx is None else [ctx])
        user_callback = kwargs.pop("callback", None)

        def step_done(intermediate_result: Any) -> Any:
            nit = getattr(intermediate_result, "nit", None)  # older methods pass x instead
            self.tell(int(nit) if isinstance(nit, (int, np.integer)) else self.contexts[0].n_evals)
            return None if user_callback is None else user_callback(intermediate_result)

        start = time.monotonic()
        self._announce(f"scipy {method}")
        try:
            raw = scipy.optimize.minimize(
                self._evaluate_internal,
                self._to_internal(self._x0()),
                method=method,
                bounds=bounds,
                callback=step_done,
                **kwargs,
            )
        except BaseException:
            self._close_session()
            raise
        return self._finish(method, raw, bool(raw.success), str(raw.message), start)

    def fit_nevergrad(
        self,
        budget: int,
        optimizer_str: str = "NgIohTuned",
        num_workers: int = 1,
        contexts: Sequence[FitterEvaluateContext] | None = None,
        executor: ExecutorLike | None = None,
        initial_observations: Iterable[tuple[Mapping[str, Any], float | None]] | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Derivative-free search with a nevergrad optimiser (``optimizer_str``, a name in
        ``nevergrad.optimizers.registry``).

        ``budget`` evaluations are made, ``num_workers`` at a time (in ``executor``, or
        a thread pool of the fitter's own), the first one at the initial parameters.
        ``initial_observations`` -- ``(parameters, loss)`` pairs from an earlier run --
        are told to the optimiser first without being evaluated again (pairs outside the
        bounds are left out). Each batch is a step for :meth:`register_callback`. Returns
        the best evaluated parameters; nevergrad's own recommendation is
        ``result.optimizer_result``. ``seed`` makes the search reproducible (with one worker).
        Needs the ``nevergrad`` extra.
        """
        ng = _import_nevergrad()
        if budget < 1:
            raise ValueError("budget must be >= 1")
        try:
            optimizer_cls = ng.optimizers.registry[optimizer_str]
        except KeyError:
            raise KeyError(
                f"unknown nevergrad optimizer {optimizer_str!r}; choose from {sorted(ng.optimizers.registry)}"
            ) from None
        scalars = {}
        for i, name in enumerate(self.names):
            lo = None if np.isinf(self._lower[i]) else float(self._lower[i])
            hi = None if np.isinf(self._upper[i]) else float(self._upper[i])
            scalars[name] = ng.p.Scalar(init=float(self._flat_initial[name]), lower=lo, upper=hi)
        parametrization = ng.p.Dict(**scalars)
        if seed is not None:
            parametrization.random_state = np.random.RandomState(seed)
        optimizer = optimizer_cls(parametrization=parametrization, budget=budget, num_workers=num_workers)
        self.init(num_workers=num_workers, contexts=contexts, executor=executor)
        start = time.monotonic()
        self._announce(f"nevergrad {optimizer_str} (budget {budget}, {num_workers} at a time)")
        try:
            for params, loss in initial_observations or ():
                flat = {n: float(v) for n, v in flatten_dict(params).items()}
                inside = set(flat) == set(self.names) and all(
                    self._lower[i] <= flat[n] <= self._upper[i] for i, n in enumerate(self.names)
                )
                if not inside:
                    logger.info("initial observation %s is outside the bounds or incomplete; left out", flat)
                    continue
                told = self.value_bad_params if loss is None or not math.isfinite(loss) else float(loss)
                optimizer.suggest(flat)
                optimizer.tell(optimizer.ask(), told)
                self.contexts[0].observe(unflatten_dict(flat), told)
            done, step = 0, 0
            optimizer.suggest({n: float(self._flat_initial[n]) for n in self.names})
            while done < budget:
                candidates = [optimizer.ask() for _ in range(min(num_workers, budget - done))]
                losses = self.ask([unflatten_dict(c.value) for c in candidates])
                for candidate, loss in zip(candidates, losses):
                    optimizer.tell(candidate, loss)
                done += len(candidates)
                self.tell(step)
                step += 1
            recommendation = optimizer.provide_recommendation()
        except BaseException:
            self._close_session()
            raise
        return self._finish(f"nevergrad {optimizer_str}", recommendation, True, f"budget of {budget} spent", start)

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
        self.init()
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
        self.init()
        start = time.monotonic()
        self._announce(method)
        raw = optimisers[method](self._evaluate_internal, box, **kwargs)
        return self._finish(method, raw, bool(raw.success), str(raw.message), start)

    def evaluate(self, parameters: Mapping[str, Any]) -> float:
        """Evaluate the objective once at ``parameters`` (recorded in the history)."""
        return self._evaluate(parameters, self._context())

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
        return self._evaluate(unflatten_dict({name: float(v) for name, v in zip(self.names, x)}), self._context())

    def _context(self) -> FitterEvaluateContext:
        """The context of a one-at-a-time evaluation: worker 0's during a fit, else a new one."""
        return self.contexts[0] if self._session is not None and self.contexts else FitterEvaluateContext()

    def _flat(self, parameters: Mapping[str, Any]) -> dict[str, float]:
        flat = flatten_dict(parameters)
        missing = [n for n in self.names if n not in flat]
        if missing:
            raise KeyError(f"parameters lack {', '.join(missing)}")
        return {name: float(flat[name]) for name in self.names}

    def _evaluate(self, parameters: Mapping[str, Any], ctx: FitterEvaluateContext) -> float:
        """Evaluate (or replay from the cache) in ``ctx``; record it; judge failures and NaN."""
        flat = self._flat(parameters)
        if self.cache is not None and (cached := self.cache.get(flat)) is not None:
            return self._observe(ctx, flat, self._replay(flat, cached), None)
        ctx.reset()
        value, error, wall, _ = _run_objective(self.objective_function, unflatten_dict(flat), ctx)
        return self._complete(flat, ctx, value, error, wall)

    def _evaluate_batch(self, batch: list[Mapping[str, Any]], executor: ExecutorLike) -> list[float]:
        """Evaluate candidates concurrently (candidate k in ``contexts[k]``); bookkeeping stays here."""
        flats = [self._flat(p) for p in batch]
        losses: list[float | None] = [None] * len(batch)
        jobs = {}
        for k, (flat, ctx) in enumerate(zip(flats, self.contexts)):
            if self.cache is not None and (cached := self.cache.get(flat)) is not None:
                losses[k] = self._observe(ctx, flat, self._replay(flat, cached), None)
                continue
            ctx.reset()
            jobs[k] = executor.submit(_run_objective, self.objective_function, unflatten_dict(flat), ctx)
        if all(isinstance(f, concurrent.futures.Future) for f in jobs.values()):
            concurrent.futures.wait(list(jobs.values()))  # every job ends before any error is raised
        outcomes = {k: future.result() for k, future in jobs.items()}
        first_error: BaseException | None = None
        for k, (value, error, wall, state) in sorted(outcomes.items()):
            ctx = self.contexts[k]
            if ctx.meta is not state["meta"]:  # evaluated in another process: take over its context
                ctx.apply_result_state(state)
            try:
                losses[k] = self._complete(flats[k], ctx, value, error, wall)
            except Exception as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return [float(v) for v in losses]  # type: ignore[arg-type]

    def _complete(
        self, flat: dict[str, float], ctx: FitterEvaluateContext, value: Any, exc: BaseException | None, wall: float
    ) -> float:
        """Judge one evaluation's outcome, record it, update ``ctx``'s best; return the loss for the optimiser."""
        error = None
        if exc is None:
            try:
                value = float(value)
            except (TypeError, ValueError) as conversion:
                exc = TypeError(f"objective returned {type(value).__name__} {value!r}, expected a float")
                exc.__cause__ = conversion
        if exc is not None:
            if not self.swallow_exceptions:
                self._record(flat, math.nan, ctx, wall, repr(exc))
                ctx.n_evals += 1
                raise exc
            if self.log_exceptions:
                logger.error("objective failed at %s; using %g", flat, self.value_bad_params, exc_info=exc)
            value, error = self.value_bad_params, f"{type(exc).__name__}: {exc}"
        if not math.isfinite(value):
            terms = ctx.meta.get("terms")
            detail = ""
            if terms is not None:
                names = ctx.meta.get("term_names") or [f"term{i}" for i in range(len(terms))]
                detail = "; per-term values: " + ", ".join(f"{n}={t}" for n, t in zip(names, terms))
            # A non-finite point proposed by the optimiser (nevergrad's one-shot steps in 1-D can
            # be ±inf) gets the penalty: the objective did not fail, the candidate was bad.
            proposed_badly = not all(math.isfinite(v) for v in flat.values())
            if self.on_nonfinite == "raise" and not proposed_badly:
                self._record(flat, value, ctx, wall, "non-finite objective")
                ctx.n_evals += 1
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
        return self._observe(ctx, flat, value, ctx.meta)

    @staticmethod
    def _observe(ctx: FitterEvaluateContext, flat: dict[str, float], value: float, meta: Any) -> float:
        ctx.n_evals += 1
        ctx.observe(unflatten_dict(flat), value, meta)
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
                "eval %4d%s  f=%.6e%s  best=%.6e  %s%s  (%s; %s)",
                evaluation.index,
                "" if self.budget is None else f"/{self.budget}",
                evaluation.objective,
                best,
                math.nan if self._best is None else self._best.objective,
                params,
                terms_txt,
                timing,
                self._elapsed_text(),
            )
        for func, n_evaluations in self.evaluation_callbacks:
            if len(self.history) % n_evaluations == 0:
                func(len(self.history), self.history)

    def _elapsed_text(self) -> str:
        """Time since the fit started and, within a budget, the time its remaining evaluations take
        at the mean rate so far."""
        if self._progress_start is None:
            self._progress_start = time.monotonic()
        elapsed = time.monotonic() - self._progress_start
        text = f"{elapsed:.0f} s elapsed"
        done = len(self.history)
        if self.budget is not None and done and self.budget > done:
            text += f", ~{elapsed / done * (self.budget - done):.0f} s left at most"
        return text

    def _announce(self, what: str) -> None:
        self._progress_start = time.monotonic()
        if self.progress:
            _ensure_progress_handler()
            logger.info("fit with %s over %s", what, ", ".join(self.names))

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


def _import_nevergrad() -> Any:
    """nevergrad, with its metamodel made safe for numpy >= 2.4 (see :func:`_tolerate_metamodel_failure`)."""
    try:
        import nevergrad as ng
    except ImportError as exc:
        raise ImportError("fit_nevergrad needs the nevergrad package: pip install 'chemfit-core[nevergrad]'") from exc
    _tolerate_metamodel_failure(ng)
    return ng


def _tolerate_metamodel_failure(ng: Any) -> None:
    """nevergrad 1.0's surrogate-model step calls ``float()`` on a one-element array, a TypeError
    since numpy 2.4; report it as nevergrad's own ``MetaModelFailure``, after which its
    optimisers (NgIohTuned, Carola3...) fall back to their base step, as they do for any
    failed metamodel."""
    from nevergrad.optimization import optimizerlib

    learn = getattr(optimizerlib, "learn_on_k_best", None)
    failure = getattr(optimizerlib, "MetaModelFailure", None)
    if learn is None or failure is None or getattr(learn, "_chemfit_tolerant", False):
        return

    def learn_on_k_best(*args: Any, **kwargs: Any) -> Any:
        try:
            return learn(*args, **kwargs)
        except TypeError as exc:
            raise failure(str(exc)) from exc

    learn_on_k_best._chemfit_tolerant = True  # type: ignore[attr-defined]
    optimizerlib.learn_on_k_best = learn_on_k_best


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
