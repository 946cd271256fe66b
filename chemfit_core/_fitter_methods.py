"""The optimisers a :class:`~chemfit_core.fitter.Fitter` runs: ``scipy.optimize.minimize``,
``least_squares`` (with the covariance at the optimum), scipy's global searches and nevergrad.

:class:`FitterMethods` is a part of :class:`~chemfit_core.fitter.Fitter` (it uses its
evaluation and its ask/tell loop); it is not used on its own.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.optimize

from chemfit_core._fitter_context import FitterEvaluateContext
from chemfit_core.abstract_objective_function import ExecutorLike
from chemfit_core.fit_result import flatten_dict, unflatten_dict

logger = logging.getLogger("chemfit_core.fitter")  # one logger for the fitter's progress and warnings


class FitterMethods:
    """The ``fit_*`` methods of :class:`~chemfit_core.fitter.Fitter`."""

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
