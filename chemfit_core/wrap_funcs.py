"""Plain functions as objective terms and quantity computers (ChemFit's ``wrap_funcs``).

``@to_objective_functor()`` turns ``f(parameters) -> float`` (or, with ``pass_ctx=True``,
``f(parameters, ctx)``) into an :class:`~chemfit_core.abstract_objective_function.ObjectiveFunctor`;
``@to_quantity_computer()`` turns ``f(parameters) -> dict`` into a
:class:`~chemfit_core.abstract_objective_function.QuantityComputer`. ``bind(*args, **kwargs)``
returns a copy that passes those arguments after ``parameters`` on every call (one function,
several terms: ``f.bind("water")``, ``f.bind("ice")``). The context goes in as ``ctx=`` (or
``context=``) when the function names it, else positionally right after ``parameters``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from chemfit_core.abstract_objective_function import (
    EvaluateContext,
    ObjectiveFunctor,
    Parameters,
    QuantityComputer,
    accepts_context,
)

__all__ = ["WrappedObjectiveFunctor", "WrappedQuantityComputer", "to_objective_functor", "to_quantity_computer"]


class _Wrapped:
    """A callable, whether it takes the context, and the arguments bound to it."""

    def __init__(
        self,
        func: Callable[..., Any],
        pass_ctx: bool | None = None,
        func_args: tuple[Any, ...] | None = None,
        func_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.func = func
        self.pass_ctx = accepts_context(func) if pass_ctx is None else bool(pass_ctx)
        self.func_args = tuple(func_args or ())
        self.func_kwargs = dict(func_kwargs or {})
        self.name = getattr(func, "name", None) or getattr(func, "__name__", None)

    def bind(self, /, *args: Any, **kwargs: Any):
        """A copy that passes ``args`` (after ``parameters``) and ``kwargs`` to the function on every call."""
        return type(self)(self.func, pass_ctx=self.pass_ctx, func_args=args, func_kwargs=kwargs)

    def _call(self, parameters: Parameters, ctx: EvaluateContext) -> Any:
        if not self.pass_ctx:
            return self.func(parameters, *self.func_args, **self.func_kwargs)
        keyword = _context_keyword(self.func)
        if keyword is not None:
            return self.func(parameters, *self.func_args, **self.func_kwargs, **{keyword: ctx})
        return self.func(parameters, ctx, *self.func_args, **self.func_kwargs)


def _context_keyword(func: Callable[..., Any]) -> str | None:
    """``ctx`` or ``context`` when ``func`` has a parameter of that name (passed by keyword), else None."""
    try:
        names = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return None
    return next((name for name in ("ctx", "context") if name in names), None)


class WrappedObjectiveFunctor(_Wrapped, ObjectiveFunctor):
    """A plain callable as an :class:`ObjectiveFunctor`: the loss it returns lands in ``ctx.loss``.

    ``pass_ctx=None`` (the default) decides from the signature whether the callable takes the
    context.
    """

    def __call__(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> float:
        """The function's loss at ``parameters``; ``ctx.parameters`` and ``ctx.loss`` are set."""
        if ctx is None:
            ctx = EvaluateContext()
        ctx.parameters = parameters
        ctx.loss = self._call(parameters, ctx)
        return ctx.loss


class WrappedQuantityComputer(_Wrapped, QuantityComputer):
    """A plain callable returning a dict of quantities as a :class:`QuantityComputer`."""

    def _compute(self, parameters: Parameters, ctx: EvaluateContext) -> dict[str, Any]:
        return self._call(parameters, ctx)


def to_objective_functor(pass_ctx: bool = False) -> Callable[[Callable[..., float]], WrappedObjectiveFunctor]:
    """Decorator: the function becomes a :class:`WrappedObjectiveFunctor` (``pass_ctx``: it takes ``ctx``)."""

    def wrap(func: Callable[..., float]) -> WrappedObjectiveFunctor:
        return WrappedObjectiveFunctor(func, pass_ctx=pass_ctx)

    return wrap


def to_quantity_computer(pass_ctx: bool = False) -> Callable[[Callable[..., dict[str, Any]]], WrappedQuantityComputer]:
    """Decorator: the function becomes a :class:`WrappedQuantityComputer` (``pass_ctx``: it takes ``ctx``)."""

    def wrap(func: Callable[..., dict[str, Any]]) -> WrappedQuantityComputer:
        return WrappedQuantityComputer(func, pass_ctx=pass_ctx)

    return wrap
