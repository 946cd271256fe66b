"""``executor.map`` for callables that fill an EvaluateContext (ChemFit's ``executor_utils``).

A process pool runs the callable on a copy of each context; :func:`map_with_context` has every
call send its context's results back (:meth:`EvaluateContext.to_result_state`) and applies them
to the caller's contexts, so thread and process executors leave the same state behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from chemfit_core.abstract_objective_function import EvaluateContext, ExecutorLike

__all__ = ["AttachContextAsReturnValue", "map_with_context"]

T_co = TypeVar("T_co", covariant=True)


class AttachContextAsReturnValue(Generic[T_co]):
    """``func(*args)`` whose last argument is an EvaluateContext, returning ``(value, context results)``."""

    def __init__(self, func: Callable[..., T_co]) -> None:
        self.func = func

    def __call__(self, *args: Any) -> tuple[T_co, dict[str, Any]]:
        """The value and ``args[-1].to_result_state()`` (a TypeError when the last argument is no context)."""
        ctx = args[-1] if args else None
        if not isinstance(ctx, EvaluateContext):
            raise TypeError(f"the last argument must be an EvaluateContext, got {type(ctx).__name__}")
        return self.func(*args), ctx.to_result_state()


def map_with_context(
    executor: ExecutorLike,
    fn: Callable[..., T_co],
    *iterables: Iterable[Any],
    ctxs: Iterable[EvaluateContext],
    timeout: float | None = None,
    chunksize: int = 1,
) -> list[T_co]:
    """``executor.map(fn, *iterables, ctxs)`` in order, each context updated in place with what its call did."""
    contexts = list(ctxs)
    results = executor.map(AttachContextAsReturnValue(fn), *iterables, contexts, timeout=timeout, chunksize=chunksize)
    values = []
    for ctx, (value, state) in zip(contexts, results, strict=True):
        ctx.apply_result_state(state)
        values.append(value)
    return values
