"""The optimisers by name (torch-sim's ``Optimizer`` and ``OPTIM_REGISTRY``), for :func:`relax_structures`.

Each entry is an ``(init, step)`` pair of functional optimisers sharing the cell
filter of :mod:`chemfit_core.engine.cell_filter`: ``init(state, model, ...) -> state``,
``step(state, model) -> state``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final

from chemfit_core.engine.bfgs import BFGSState, bfgs_init, bfgs_step
from chemfit_core.engine.cell_filter import OptimState
from chemfit_core.engine.fire import FireState, fire_init, fire_step
from chemfit_core.engine.lbfgs import LBFGSState, lbfgs_init, lbfgs_step

__all__ = ["OPTIM_REGISTRY", "OPTIMIZER_OPTIONS", "STATE_TYPES", "Optimizer", "optimizer"]


class Optimizer(enum.StrEnum):
    """The optimisers (torch-sim's names)."""

    fire = "fire"
    bfgs = "bfgs"
    lbfgs = "lbfgs"


OPTIM_REGISTRY: Final[dict[Optimizer, tuple[Callable[..., Any], Callable[..., Any]]]] = {
    Optimizer.fire: (fire_init, fire_step),
    Optimizer.bfgs: (bfgs_init, bfgs_step),
    Optimizer.lbfgs: (lbfgs_init, lbfgs_step),
}
"""``(init, step)`` per optimiser."""

STATE_TYPES: Final[dict[Optimizer, type[OptimState]]] = {
    Optimizer.fire: FireState,
    Optimizer.bfgs: BFGSState,
    Optimizer.lbfgs: LBFGSState,
}
"""The state class of each optimiser (what a structure joining a batch becomes)."""

OPTIMIZER_OPTIONS: Final[dict[Optimizer, tuple[str, ...]]] = {
    Optimizer.fire: (),
    Optimizer.bfgs: ("alpha", "max_step"),
    Optimizer.lbfgs: ("alpha", "max_step", "step_size", "max_history"),
}
"""Per-structure settings each optimiser's state takes (FIRE's constants are FireParameters)."""


def optimizer(name: Optimizer | str) -> Optimizer:
    """The :class:`Optimizer` called ``name``, with a clear error for an unknown one."""
    try:
        return Optimizer(name)
    except ValueError:
        raise ValueError(f"optimizer must be one of {[o.value for o in Optimizer]}, got {name!r}") from None
