"""Objective terms, quantity computers and the per-evaluation context.

An objective term is any callable ``term(parameters) -> float`` or
``term(parameters, ctx) -> float`` (ChemFit's functors take an optional
:class:`EvaluateContext`). Which of the two a callable accepts is decided once,
when it is wrapped, from its signature: a ``TypeError`` raised inside the term
is never mistaken for a signature mismatch.

A :class:`QuantityComputer` maps parameters to a dict of quantities (density,
energies, ...); :class:`QuantityComputerObjectiveFunction` pairs one with a loss
function. Names and signatures follow ChemFit 3.1.1.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any, Protocol, TypeVar, runtime_checkable

from chemfit_core.term_result import TermResult

Parameters = dict[str, Any]

T_co = TypeVar("T_co", covariant=True)


@runtime_checkable
class FutureLike(Protocol[T_co]):
    """The part of :class:`concurrent.futures.Future` the objective API uses."""

    def result(self, timeout: float | None = None) -> T_co: ...

    def cancel(self) -> bool: ...


@runtime_checkable
class ExecutorLike(Protocol):
    """The part of :class:`concurrent.futures.Executor` the objective API uses (ChemFit's protocol)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> FutureLike[Any]: ...

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1
    ) -> Iterable[Any]: ...


class ChildContextConfigurator(Protocol):
    """``configurator(idx_child_ctx=, child_ctx=, num_children=, parent_ctx=)``, called once per child."""

    def __call__(
        self, idx_child_ctx: int, child_ctx: EvaluateContext, num_children: int, parent_ctx: EvaluateContext
    ) -> None: ...


class EvaluateContext:
    """Per-evaluation state: parameters, quantities, loss and free-form metadata.

    One context is made per evaluation (and one child per term), so objective
    objects never hold per-call state and can be evaluated concurrently. A term that
    computes more than its loss (residuals, properties, derivatives) puts a
    :class:`~chemfit_core.term_result.TermResult` in ``result``.
    ``shared`` is one namespace for a context and all its children; the
    combined objective uses it to cancel sibling terms when one fails. ``config`` is
    deep-copied into each child, so children can be configured independently.
    ``executor`` (an :class:`ExecutorLike`) is inherited by children; the concurrent
    wrappers run their terms in it when it is set.
    """

    __slots__ = (
        "quantities",
        "parameters",
        "loss",
        "result",
        "meta",
        "temp",
        "config",
        "shared",
        "executor",
        "_children",
    )

    def __init__(
        self,
        config: SimpleNamespace | None = None,
        shared: SimpleNamespace | None = None,
        executor: ExecutorLike | None = None,
    ):
        self.quantities: dict[str, Any] | None = None
        self.parameters: Parameters | None = None
        self.loss: float | None = None
        self.result: TermResult | None = None
        self.meta: dict[str, Any] = {}
        self.temp = SimpleNamespace()
        self.config = SimpleNamespace() if config is None else config
        self.shared = SimpleNamespace() if shared is None else shared
        self.executor: ExecutorLike | None = executor
        self._children: list[EvaluateContext] = []

    @property
    def children(self) -> list[EvaluateContext]:
        """Child contexts of the last :meth:`spawn_children` call."""
        return self._children

    def spawn_children(
        self, n_children: int, configurator: ChildContextConfigurator | Callable[..., None] | None = None
    ) -> list[EvaluateContext]:
        """Make ``n_children`` child contexts (copies of ``config``, sharing ``shared`` and ``executor``)."""
        # each child gets its own copy of config; an empty one (the usual case) needs no deepcopy
        empty = not vars(self.config) if isinstance(self.config, SimpleNamespace) else False
        children = [
            EvaluateContext(SimpleNamespace() if empty else copy.deepcopy(self.config), self.shared, self.executor)
            for _ in range(n_children)
        ]
        if configurator is not None:
            for idx, child in enumerate(children):
                configurator(idx_child_ctx=idx, child_ctx=child, num_children=n_children, parent_ctx=self)
        self._children = children
        return children

    def collect_child_meta_data(self, recursive: bool = True) -> None:
        """Store the children's :meth:`to_meta_data` in ``meta["children"]``."""
        if self._children:
            if recursive:
                for child in self._children:
                    child.collect_child_meta_data(recursive)
            self.meta["children"] = [child.to_meta_data() for child in self._children]

    @contextlib.contextmanager
    def child_contexts(
        self,
        n_children: int,
        configurator: ChildContextConfigurator | Callable[..., None] | None = None,
        recursive: bool = True,
    ) -> Iterator[list[EvaluateContext]]:
        """Spawn children for a block and collect their metadata when it ends."""
        children = self.spawn_children(n_children, configurator)
        try:
            yield children
        finally:
            self.collect_child_meta_data(recursive)

    def to_meta_data(self) -> dict[str, Any]:
        """Return ``quantities``, ``parameters``, ``loss`` and ``meta`` as a dict."""
        return {
            "quantities": self.quantities,
            "parameters": self.parameters,
            "loss": self.loss,
            "meta": self.meta,
        }

    def __getstate__(self) -> dict[str, Any]:
        # What a worker process needs (MPI): no executor, no temp, no children.
        return {
            "parameters": self.parameters,
            "config": self.config,
            "shared": self.shared,
            "meta": self.meta,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        EvaluateContext.__init__(self, state["config"], state["shared"])
        self.parameters = state["parameters"]
        self.meta = state["meta"]

    def to_result_state(self) -> dict[str, Any]:
        """What an evaluation wrote here (parameters, loss, quantities, meta, result), to send back
        from a worker process."""
        return {
            "parameters": self.parameters,
            "loss": self.loss,
            "quantities": self.quantities,
            "meta": self.meta,
            "result": self.result,
        }

    def apply_result_state(self, state: dict[str, Any]) -> None:
        """Take over a :meth:`to_result_state` made elsewhere (a worker's copy of this context)."""
        self.parameters = state["parameters"]
        self.loss = state["loss"]
        self.quantities = state["quantities"]
        self.meta = state["meta"]
        self.result = state.get("result")

    def reset(self) -> None:
        """Forget the previous evaluation (quantities, loss, result, meta, temp, children)."""
        self.quantities = None
        self.loss = None
        self.result = None
        self.meta = {}
        self.temp = SimpleNamespace()
        self._children = []


class ObjectiveFunctor:
    """Base class of objective terms: ``__call__(parameters, ctx=None) -> float``."""

    def __call__(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> float:
        raise NotImplementedError


def takes_second_argument(func: Callable[..., Any], names: tuple[str, ...]) -> bool:
    """True when ``func(first, second)`` is the intended call, decided from the signature.

    The second positional parameter counts when it has no default, or when its
    name is one of ``names`` (``ctx=None`` is a context, ``scale=2.0`` is not).
    """
    if isinstance(func, (ObjectiveFunctor, QuantityComputer)):
        return True
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature take what they take
        return False
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if len(positional) < 2:
        return False
    second = positional[1]
    return second.kind is second.VAR_POSITIONAL or second.default is second.empty or second.name in names


def accepts_context(func: Callable[..., Any]) -> bool:
    """True when ``func(parameters, ctx)`` is a valid call."""
    return takes_second_argument(func, ("ctx", "context"))


def as_objective_functor(func: Callable[..., float]) -> ObjectiveFunctor:
    """Return ``func`` itself if it is an :class:`ObjectiveFunctor`, else wrap it."""
    if isinstance(func, ObjectiveFunctor):
        return func
    if not callable(func):
        raise TypeError(f"an objective term must be callable, got {type(func).__name__}")
    from chemfit_core.wrap_funcs import WrappedObjectiveFunctor

    return WrappedObjectiveFunctor(func)


def __getattr__(name: str) -> Any:
    if name == "WrappedObjectiveFunctor":  # its home is chemfit_core.wrap_funcs, ChemFit's path
        from chemfit_core.wrap_funcs import WrappedObjectiveFunctor

        return WrappedObjectiveFunctor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class QuantityComputer:
    """Maps a parameter dict to a dict of quantities; subclasses implement ``_compute``.

    ``static_meta_data`` is merged into ``ctx.meta`` on every call.
    """

    def __init__(self) -> None:
        self.static_meta_data: dict[str, Any] = {}

    def __call__(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> dict[str, Any]:
        if ctx is None:
            ctx = EvaluateContext()
        ctx.parameters = parameters
        ctx.meta.update(self.static_meta_data)
        ctx.quantities = self._compute(parameters, ctx)
        return ctx.quantities

    def _compute(self, parameters: Parameters, ctx: EvaluateContext) -> dict[str, Any]:
        raise NotImplementedError

    def with_loss(self, loss_function: Callable[..., float], /, **kwargs: Any) -> QuantityComputerObjectiveFunction:
        """Return an objective applying ``loss_function`` (with ``kwargs`` bound)."""
        loss = functools.partial(loss_function, **kwargs) if kwargs else loss_function
        return QuantityComputerObjectiveFunction(loss, self)


class QuantityComputerObjectiveFunction(ObjectiveFunctor):
    """Objective = ``loss_function(quantities)`` or ``loss_function(quantities, parameters)``.

    Which of the two forms the loss takes is decided once from its signature.
    """

    def __init__(
        self,
        loss_function: Callable[..., float],
        quantity_computer: QuantityComputer | Callable[..., dict[str, Any]],
    ) -> None:
        self.loss_function = loss_function
        self.quantity_computer = quantity_computer
        self.static_meta_data: dict[str, Any] = {}
        self._loss_takes_parameters = takes_second_argument(loss_function, ("parameters", "params"))
        self._computer_takes_ctx = accepts_context(quantity_computer)
        self.name = getattr(quantity_computer, "name", None)

    def __call__(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> float:
        if ctx is None:
            ctx = EvaluateContext()
        if self._computer_takes_ctx:
            quantities = self.quantity_computer(parameters, ctx)
        else:
            quantities = self.quantity_computer(parameters)
        ctx.parameters = parameters
        ctx.quantities = quantities
        ctx.meta.update(self.static_meta_data)
        if self._loss_takes_parameters:
            ctx.loss = self.loss_function(quantities, parameters)
        else:
            ctx.loss = self.loss_function(quantities)
        return ctx.loss
