"""A weighted sum of objective terms, evaluated one after another.

:class:`CombinedObjectiveFunction` is the serial reference; the wrappers in
:mod:`chemfit_core.async_wrapper_cob` and :mod:`chemfit_core.mpi_wrapper_cob`
evaluate the same terms concurrently and reduce them with the same rules.

What a failing term does is a policy: ``"raise"`` (default) stops the
evaluation with the term's own exception, which names the term in a note and is
also a :class:`~chemfit_core.errors.TermEvaluationError` (see
:func:`~chemfit_core.errors.name_term_error`); ``"nan"`` makes the term (and so the
sum) NaN, ``"skip"`` leaves the term out of the sum. ChemFit's ``exception_handler``
callables are accepted too, also assigned after construction.

The reduction is a :class:`Reducer` (``reduce(values)``) or ChemFit's
:class:`Aggregator` (``aggregate(values, quantities, ctx)``); which of the two a
callable is, is decided once from its signature, when it is set.
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any, Literal, Protocol

from chemfit_core.abstract_objective_function import (
    ChildContextConfigurator,
    EvaluateContext,
    ObjectiveFunctor,
    Parameters,
    as_objective_functor,
)
from chemfit_core.errors import ChemFitError, TermEvaluationError, name_term_error

OnError = Literal["raise", "nan", "skip"]


class ExceptionHandler(Protocol):
    """``handler(exception, ctx, idx)`` returns a replacement value, or None to skip."""

    def __call__(self, exception: Exception, ctx: EvaluateContext, idx: int) -> float | None: ...


def raising_exception_handler(exception: Exception, ctx: EvaluateContext, idx: int) -> None:
    """Re-raise the term's exception (the caller adds the term's name to it)."""
    raise exception


def nan_exception_handler(exception: Exception, ctx: EvaluateContext, idx: int) -> float:
    """Replace a failed term by NaN."""
    return math.nan


def skip_exception_handler(exception: Exception, ctx: EvaluateContext, idx: int) -> None:
    """Leave a failed term out of the sum."""
    return None


_HANDLERS: dict[str, ExceptionHandler] = {
    "raise": raising_exception_handler,
    "nan": nan_exception_handler,
    "skip": skip_exception_handler,
}


class Reducer(Protocol):
    """``reduce(weighted_values) -> float``."""

    def __call__(self, terms: list[float]) -> float: ...


class Aggregator(Protocol):
    """``aggregate(weighted_values, quantities, ctx) -> float``: also sees each kept term's
    quantities and the parent context (ChemFit's extended reduction)."""

    def __call__(self, terms: list[float], quantities: list[dict[str, Any] | None], ctx: EvaluateContext) -> float: ...


def sum_reducer(terms: Sequence[float]) -> float:
    """Plain sum of the weighted term values."""
    return math.fsum(terms)


def mean_reducer(terms: Sequence[float]) -> float:
    """Mean of the weighted term values."""
    return math.fsum(terms) / len(terms)


def root_mean_reducer(terms: Sequence[float]) -> float:
    """Square root of the mean of the weighted term values."""
    return math.sqrt(mean_reducer(terms))


class WrappedReducer:
    """A :class:`Reducer` used as an :class:`Aggregator` (quantities and context ignored)."""

    def __init__(self, reducer: Reducer | Callable[[list[float]], float]) -> None:
        self.reducer = reducer

    def __call__(
        self, terms: Sequence[float], quantities: Sequence[dict[str, Any] | None], ctx: EvaluateContext
    ) -> float:
        return self.reducer(list(terms))

    def to_reducer(self) -> Reducer | Callable[[list[float]], float]:
        """The wrapped reducer."""
        return self.reducer


def is_aggregator(reduction: Callable[..., float]) -> bool:
    """True when ``reduction`` is to be called ``(values, quantities, ctx)``: it has three
    positional parameters without defaults (``np.std``, ``sum`` and ``lambda t: ...`` are reducers)."""
    if isinstance(reduction, WrappedReducer):
        return True
    try:
        signature = inspect.signature(reduction)
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(required) >= 3


def _child_errors(ctx: EvaluateContext) -> list[str]:
    return [child.meta["error"] for child in ctx.children if "error" in child.meta]


class CombinedObjectiveFunction(ObjectiveFunctor):
    """Weighted sum of objective terms (ChemFit-compatible).

    Args:
        objective_functions: callables ``f(parameters)`` or ``f(parameters, ctx)``,
            or other combined objectives (each counts as one term).
        weights: one non-negative weight per term (default 1.0 each).
        child_context_configurator: called on each term's context before it runs.
        reduction: a :class:`Reducer` ``reduce(weighted_values)`` or an :class:`Aggregator`
            ``aggregate(weighted_values, quantities, ctx)``; default: sum.
        exception_handler: ChemFit-style handler; overrides ``on_error``.
        on_error: ``"raise"``, ``"nan"`` or ``"skip"`` (see the module docstring).
        names: optional names of the terms, used in logs and error messages.
    """

    def __init__(
        self,
        objective_functions: Sequence[Callable[..., float]] = (),
        weights: Sequence[float] | None = None,
        child_context_configurator: ChildContextConfigurator | Callable[..., None] | None = None,
        reduction: Reducer | Aggregator | Callable[..., float] = sum_reducer,
        exception_handler: ExceptionHandler | None = None,
        *,
        on_error: OnError = "raise",
        names: Sequence[str] | None = None,
    ) -> None:
        if on_error not in _HANDLERS:
            raise ValueError(f"on_error must be one of {sorted(_HANDLERS)}, got {on_error!r}")
        self.objective_functions: list[ObjectiveFunctor] = []
        self.weights: list[float] = []
        self.names: list[str] = []
        self.child_context_configurator = child_context_configurator
        self.reduction = reduction  # a property: the call form is decided here, once
        self.on_error: OnError = on_error
        self.exception_handler: ExceptionHandler = exception_handler or _HANDLERS[on_error]
        self._last_lock = threading.Lock()
        self._last_contributions: list[float | None] = []
        funcs = list(objective_functions)
        if weights is not None and len(weights) != len(funcs):
            raise ValueError(
                f"got {len(weights)} weights for {len(funcs)} objective functions; give one weight per term"
            )
        if names is not None and len(names) != len(funcs):
            raise ValueError(f"got {len(names)} names for {len(funcs)} objective functions")
        for i, func in enumerate(funcs):
            self._append(
                func,
                1.0 if weights is None else weights[i],
                None if names is None else names[i],
            )

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        del state["_last_lock"]  # a process pool pickles the objective; locks do not pickle
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._last_lock = threading.Lock()

    @property
    def reduction(self) -> Aggregator:
        """The reduction as an :class:`Aggregator`: an aggregator as given, a reducer inside a
        :class:`WrappedReducer` (``.to_reducer()`` gives it back), as ChemFit stores it; assigning
        a new one decides its call form again."""
        return self._reduction

    @reduction.setter
    def reduction(self, reduction: Reducer | Aggregator | Callable[..., float]) -> None:
        if not callable(reduction):
            raise TypeError(f"reduction must be callable, got {type(reduction).__name__}")
        self._reduction = reduction if is_aggregator(reduction) else WrappedReducer(reduction)

    # -- building ---------------------------------------------------------------------
    def _append(self, func: Callable[..., float], weight: float, name: str | None) -> None:
        if not isinstance(weight, Real) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of term {len(self.weights)} must be a finite number >= 0, got {weight!r}")
        functor = as_objective_functor(func)
        self.objective_functions.append(functor)
        self.weights.append(float(weight))
        self.names.append(name or getattr(functor, "name", None) or f"term{len(self.names)}")

    def add(
        self,
        obj_funcs: Callable[..., float] | Sequence[Callable[..., float]],
        weights: float | Sequence[float] = 1.0,
        names: str | Sequence[str] | None = None,
    ) -> CombinedObjectiveFunction:
        """Append one term, a sequence of terms, or a whole combined objective (as one term).

        ``weights`` is one weight for all added terms or one per term. Returns self.
        """
        funcs = [obj_funcs] if callable(obj_funcs) else list(obj_funcs)
        if isinstance(weights, Real):
            weight_list = [float(weights)] * len(funcs)
        else:
            weight_list = list(weights)
            if len(weight_list) != len(funcs):
                raise ValueError(f"got {len(weight_list)} weights for {len(funcs)} added terms")
        if names is None or isinstance(names, str):
            name_list = [names] * len(funcs)
        else:
            name_list = list(names)
        for func, weight, name in zip(funcs, weight_list, name_list, strict=True):
            self._append(func, weight, name)
        return self

    @classmethod
    def add_flat(
        cls,
        combined_objective_functions_list: Sequence[CombinedObjectiveFunction],
        weights: Sequence[float] | None = None,
    ) -> CombinedObjectiveFunction:
        """Merge several combined objectives into one flat list of terms.

        Each input's weights are scaled by its entry in ``weights``.
        """
        scales = [1.0] * len(combined_objective_functions_list) if weights is None else weights
        if len(scales) != len(combined_objective_functions_list):
            raise ValueError("give one scaling weight per combined objective")
        merged = cls()
        for cob, scale in zip(combined_objective_functions_list, scales, strict=True):
            for func, weight, name in zip(cob.objective_functions, cob.weights, cob.names):
                merged._append(func, weight * scale, name)
        return merged

    def n_terms(self) -> int:
        """Number of terms."""
        return len(self.objective_functions)

    # -- evaluating -------------------------------------------------------------------
    def evaluate_term(self, parameters: Parameters, idx: int, ctx: EvaluateContext | None = None) -> float | None:
        """Weighted value of term ``idx``; None when the policy skips a failed term."""
        if ctx is None:
            ctx = EvaluateContext()
        try:
            value = self.objective_functions[idx](parameters, ctx)
            if not isinstance(value, Real):
                raise TypeError(f"returned {type(value).__name__} {value!r}, expected a float")
            return float(value) * self.weights[idx]
        except Exception as exc:  # the policy decides; nothing is swallowed by default
            return self.handle_exception(exc, ctx, idx)

    def handle_exception(self, exc: Exception, ctx: EvaluateContext, idx: int) -> float | None:
        """Apply the failure policy to an exception raised by term ``idx``.

        An exception the policy raises keeps its type and gets the term's name (see
        :func:`~chemfit_core.errors.name_term_error`).
        """
        ctx.meta["error"] = f"{type(exc).__name__}: {exc}"
        try:
            return self.exception_handler(exc, ctx, idx)
        except TermEvaluationError:
            raise
        except Exception as raised:
            named = name_term_error(raised, idx, self.names[idx])
            if named is raised:
                raise
            raise named from raised.__cause__

    def spawn_term_contexts(self, ctx: EvaluateContext) -> list[EvaluateContext]:
        """One child context per term (configured like ChemFit does)."""
        ctx.meta["n_terms"] = self.n_terms()
        return ctx.spawn_children(self.n_terms(), self.child_context_configurator)

    def reduce(self, values: Sequence[float | None], ctx: EvaluateContext) -> float:
        """Record per-term contributions in ``ctx.meta`` and reduce the kept ones."""
        values = list(values)
        ctx.meta["terms"] = values
        ctx.meta["term_names"] = self.names
        ctx.meta["weights"] = self.weights
        ctx.meta["skipped_indices"] = [i for i, v in enumerate(values) if v is None]
        with self._last_lock:
            self._last_contributions = values
        kept = [v for v in values if v is not None]
        if not kept and values:
            raise ChemFitError(
                f"all {len(values)} objective terms failed and were skipped; "
                f"first error: {next(iter(_child_errors(ctx)), 'unknown')}"
            )
        if not kept:
            ctx.loss = 0.0
        else:
            quantities = [child.quantities for child, v in zip(ctx.children, values) if v is not None]
            if len(quantities) != len(kept):  # no per-term contexts (a caller reducing by hand)
                quantities = [None] * len(kept)
            ctx.loss = self._reduction(kept, quantities, ctx)
        return ctx.loss

    def __call__(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> float:
        if ctx is None:
            ctx = EvaluateContext()
        ctx.parameters = parameters
        children = self.spawn_term_contexts(ctx)
        try:
            values = [self.evaluate_term(parameters, idx, child) for idx, child in enumerate(children)]
        finally:
            ctx.collect_child_meta_data()
        return self.reduce(values, ctx)

    @property
    def last_contributions(self) -> list[float | None]:
        """Weighted value of each term in the last finished evaluation (None: skipped)."""
        with self._last_lock:
            return list(self._last_contributions)

    def contributions(self) -> dict[str, float | None]:
        """Last evaluation's weighted term values keyed by term name."""
        return dict(zip(self.names, self.last_contributions))
