"""Evaluating an objective for several parameter sets at once with asyncio (ChemFit's ``async_helpers``).

Each evaluation runs in a worker thread (:func:`asyncio.to_thread`) with its own
:class:`~chemfit_core.abstract_objective_function.EvaluateContext`, so the event loop stays free
and the objective must not keep per-evaluation state on itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from chemfit_core.abstract_objective_function import EvaluateContext, Parameters

__all__ = ["async_eval_many", "async_eval_one"]


async def async_eval_one(
    obj: Callable[[Parameters, EvaluateContext], float], params: Parameters, ctx: EvaluateContext
) -> float:
    """``obj(params, ctx)`` in a worker thread; ``ctx`` (the caller's) receives the results."""
    return await asyncio.to_thread(obj, params, ctx)


async def async_eval_many(
    obj: Callable[[Parameters, EvaluateContext], float],
    params_list: Iterable[Parameters],
    ctxs: Iterable[EvaluateContext],
) -> list[Any]:
    """``obj`` at every parameter set concurrently, one context each; values in input order.

    Raises ``ValueError`` when ``params_list`` and ``ctxs`` differ in length.
    """
    pairs = list(zip(params_list, ctxs, strict=True))
    return list(await asyncio.gather(*(async_eval_one(obj, p, ctx) for p, ctx in pairs)))
