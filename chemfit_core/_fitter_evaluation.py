"""How a :class:`~chemfit_core.fitter.Fitter` evaluates: parameter scaling, one evaluation or a
concurrent batch, judging failures and NaN, the cache's replays, the history and the progress lines.

:class:`FitterEvaluation` is a part of :class:`~chemfit_core.fitter.Fitter` (it reads the
attributes ``Fitter.__init__`` sets); it is not used on its own.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from chemfit_core._fitter_context import FitterEvaluateContext, _run_objective
from chemfit_core.abstract_objective_function import EvaluateContext, ExecutorLike
from chemfit_core.errors import NonFiniteObjectiveError
from chemfit_core.fit_result import Evaluation, flatten_dict, unflatten_dict
from chemfit_core.term_result import TermResult

logger = logging.getLogger("chemfit_core.fitter")  # one logger for the fitter's progress and warnings


class FitterEvaluation:
    """The evaluation machinery of :class:`~chemfit_core.fitter.Fitter`."""

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
