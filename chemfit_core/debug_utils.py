"""Debugging helpers at ChemFit's module path: log every method call of an object."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def log_invocation(func: Callable[..., T], log: Callable[[str], None], name: str | None = None) -> Callable[..., T]:
    """``func`` wrapped so that each call is logged with its arguments and its return value."""
    label = name or getattr(func, "__qualname__", repr(func))

    @functools.wraps(func)
    def logged(*args: Any, **kwargs: Any) -> T:
        log(f"call {label}(args={args!r}, kwargs={kwargs!r})")
        result = func(*args, **kwargs)
        log(f"return {label} -> {result!r}")
        return result

    return logged


class _MethodLogger:
    """Proxy of an object: attribute access goes to the object, method calls are logged."""

    __slots__ = ("_target", "_log")

    def __init__(self, target: Any, log: Callable[[str], None]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_log", log)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if callable(value) and not isinstance(value, type):
            return log_invocation(value, self._log, f"{type(self._target).__name__}.{name}")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return f"<logged {self._target!r}>"


def log_all_methods(obj: T, log: Callable[[str], None]) -> T:
    """A proxy of ``obj`` whose method calls are reported to ``log`` (a one-argument callable).

    Attribute reads and writes go to ``obj`` itself (read-only properties stay read-only).
    """
    return _MethodLogger(obj, log)  # type: ignore[return-value]
