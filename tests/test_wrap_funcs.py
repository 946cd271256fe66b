"""ChemFit's helper modules: plain functions as terms (wrap_funcs), asyncio evaluation
(async_helpers) and executor maps that carry the contexts back (executor_utils)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from chemfit_core import CombinedObjectiveFunction, EvaluateContext
from chemfit_core.async_helpers import async_eval_many
from chemfit_core.executor_utils import AttachContextAsReturnValue, map_with_context
from chemfit_core.wrap_funcs import (
    WrappedObjectiveFunctor,
    WrappedQuantityComputer,
    to_objective_functor,
    to_quantity_computer,
)


@to_objective_functor()
def offset_square(params, offset=0.0):
    return (params["x"] - offset) ** 2


@to_objective_functor(pass_ctx=True)
def noted(params, scale, ctx):
    ctx.meta["scale"] = scale
    return scale * params["x"]


@to_quantity_computer()
def quantities(params, power=1):
    return {"y": params["x"] ** power}


def test_decorated_functions_are_terms_and_bind_adds_arguments():
    assert isinstance(offset_square, WrappedObjectiveFunctor) and isinstance(quantities, WrappedQuantityComputer)
    ctx = EvaluateContext()
    assert offset_square({"x": 3.0}, ctx) == 9.0 and ctx.loss == 9.0 and ctx.parameters == {"x": 3.0}
    shifted = offset_square.bind(1.0)
    assert shifted({"x": 3.0}) == 4.0 and offset_square({"x": 3.0}) == 9.0  # bind makes a copy
    ctx = EvaluateContext()
    assert noted.bind(2.0)({"x": 3.0}, ctx) == 6.0 and ctx.meta["scale"] == 2.0  # ctx by keyword
    assert quantities.bind(power=3)({"x": 2.0}) == {"y": 8.0}
    cob = CombinedObjectiveFunction([offset_square.bind(1.0), offset_square.bind(offset=2.0)])
    assert cob({"x": 3.0}) == 4.0 + 1.0


def test_a_function_taking_the_context_positionally_gets_it_after_the_parameters():
    seen = []
    term = WrappedObjectiveFunctor(lambda p, c: seen.append(c) or p["x"], pass_ctx=True)
    ctx = EvaluateContext()
    assert term({"x": 1.5}, ctx) == 1.5 and seen == [ctx]


def test_async_eval_many_fills_one_context_per_parameter_set_in_order():
    params = [{"x": float(k)} for k in range(6)]
    ctxs = [EvaluateContext() for _ in params]
    values = asyncio.run(async_eval_many(offset_square, params, ctxs))
    assert values == [k * k for k in range(6)] and [c.loss for c in ctxs] == values
    with pytest.raises(ValueError):
        asyncio.run(async_eval_many(offset_square, params, ctxs[:2]))


def _record(params, ctx):
    ctx.meta["seen"] = params["x"]
    ctx.loss = 2 * params["x"]
    return ctx.loss


@pytest.mark.parametrize("pool", [ThreadPoolExecutor, ProcessPoolExecutor])
def test_map_with_context_brings_each_calls_context_back(pool):
    params = [{"x": float(k)} for k in range(4)]
    ctxs = [EvaluateContext() for _ in params]
    with pool(2) as executor:  # a process works on a copy of its context
        values = map_with_context(executor, _record, params, ctxs=ctxs)
    assert values == [0.0, 2.0, 4.0, 6.0]
    assert [c.meta["seen"] for c in ctxs] == [0.0, 1.0, 2.0, 3.0] and [c.loss for c in ctxs] == values
    with pytest.raises(TypeError, match="EvaluateContext"):
        AttachContextAsReturnValue(_record)({"x": 1.0}, "not a context")
