"""Batched L-BFGS, ASE's algorithm per system, with the cell filter as an option.

Each system keeps its own history of the last ``max_history`` (ASE's ``memory``,
100) position and gradient differences and runs ASE's two-loop recursion with the
initial inverse Hessian I/``alpha`` (70 eV/Å²); the step is scaled so that no row
(atom or cell row) moves more than ``max_step`` (0.2 Å), then multiplied by
``step_size`` (ASE's ``damping``, 1). No line search (``ase.optimize.LBFGS``'s
default). The histories are per-atom and per-system tensors, so batches split and
join like any state; a system joining a running batch starts with an empty history.

Functional style, torch-sim's signatures: :func:`lbfgs_init` makes an
:class:`LBFGSState`, :func:`lbfgs_step` advances it by one step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from chemfit_core.engine.bfgs import QuasiNewtonState
from chemfit_core.engine.cell_filter import (
    CellFilter,
    dof_dot,
    dof_forces,
    dof_positions,
    evaluate,
    make_state,
    moving_systems,
)
from chemfit_core.engine.state import SimState

__all__ = ["LBFGSState", "lbfgs_init", "lbfgs_step"]

DEFAULT_HISTORY = 100
"""ASE's ``memory``."""


@dataclasses.dataclass(eq=False)
class LBFGSState(QuasiNewtonState):
    """A batch under L-BFGS: per-system histories, oldest first, ``n_history`` entries valid.

    ``s_history``/``y_history`` hold the DOF position (Å) and gradient (eV/Å)
    differences, ``[n_atoms, max_history, 3]`` (cell rows: ``[n_systems, max_history,
    3, 3]``); ``rho_history`` their 1/(y·s); ``step_size`` is ASE's damping.
    """

    max_history: int = DEFAULT_HISTORY
    s_history: torch.Tensor | None = None
    y_history: torch.Tensor | None = None
    s_cell_history: torch.Tensor | None = None
    y_cell_history: torch.Tensor | None = None
    rho_history: torch.Tensor | None = None  # [n_systems, max_history]
    n_history: torch.Tensor | None = None  # [n_systems]
    step_size: torch.Tensor | None = None  # [n_systems]

    _atom_attributes = (*QuasiNewtonState._atom_attributes, "s_history", "y_history")
    _system_attributes = (
        *QuasiNewtonState._system_attributes,
        "s_cell_history",
        "y_cell_history",
        "rho_history",
        "n_history",
        "step_size",
    )

    def _defaults(self) -> dict[str, Callable[[], torch.Tensor]]:
        n, s, m, dev, dt = self.n_atoms, self.n_systems, self.max_history, self.device, self.dtype
        if m < 1:
            raise ValueError(f"max_history must be >= 1, got {m}")
        defaults = super()._defaults()
        defaults["s_history"] = lambda: torch.zeros((n, m, 3), dtype=dt, device=dev)
        defaults["y_history"] = lambda: torch.zeros((n, m, 3), dtype=dt, device=dev)
        defaults["rho_history"] = lambda: torch.zeros((s, m), dtype=dt, device=dev)
        defaults["n_history"] = lambda: torch.zeros(s, dtype=torch.long, device=dev)
        defaults["step_size"] = lambda: torch.ones(s, dtype=dt, device=dev)
        if self.relax_cell:
            defaults["s_cell_history"] = lambda: torch.zeros((s, m, 3, 3), dtype=dt, device=dev)
            defaults["y_cell_history"] = lambda: torch.zeros((s, m, 3, 3), dtype=dt, device=dev)
        return defaults

    def drop_optimizer_memory(self) -> None:
        """Shrink the histories to one empty entry (a finished relaxation does not need them)."""
        self.max_history = 1
        for name in ("s_history", "y_history", "s_cell_history", "y_cell_history", "rho_history"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, torch.zeros_like(value[:, :1]))
        self.n_history = torch.zeros_like(self.n_history)


def lbfgs_init(
    state: SimState,
    model: Any,
    *,
    step_size: float = 1.0,
    alpha: float | None = 70.0,
    max_history: int = DEFAULT_HISTORY,
    max_step: float = 0.2,
    relax_cell: bool = False,
    pressure: float | None = None,
    cell_filter: CellFilter | str | None = None,
    **filter_kwargs: Any,
) -> LBFGSState:
    """A fresh L-BFGS state for ``state``, evaluated once.

    ASE's defaults: ``alpha`` 70 eV/Å² (None: the same), ``max_history`` (memory) 100,
    ``max_step`` 0.2 Å, ``step_size`` (damping) 1. ``relax_cell``/``cell_filter`` add the
    cell (ASE's UnitCellFilter) at ``pressure`` (eV/Å³); ``filter_kwargs`` are
    torch-sim's cell-filter options.
    """
    return make_state(
        LBFGSState,
        state,
        model,
        cell_filter=cell_filter,
        relax_cell=relax_cell,
        pressure=pressure,
        alpha=70.0 if alpha is None else alpha,
        max_step=max_step,
        step_size=step_size,
        max_history=int(max_history),
        **filter_kwargs,
    )


def lbfgs_step(
    state: LBFGSState,
    model: Any,
    *,
    max_history: int | None = None,
    max_step: float | None = None,
    curvature_eps: float | None = None,
    active: torch.Tensor | None = None,
) -> LBFGSState:
    """Move every evaluated system by one L-BFGS step, then evaluate the whole batch; return ``state``.

    ``max_history`` and ``max_step`` (Å), when given, replace the state's (torch-sim
    passes them here); a shorter history keeps the newest entries. Pairs with
    y·s ≤ ``curvature_eps`` are left out of the recursion (default: none, as ASE —
    only y·s = 0 is).
    """
    if max_history is not None and int(max_history) != state.max_history:
        resize_history(state, int(max_history))
    if max_step is not None:
        state.max_step = torch.full_like(state.max_step, float(max_step))
    move(state, curvature_eps=curvature_eps, active=active)
    evaluate(state, model)
    return state


def resize_history(state: LBFGSState, max_history: int) -> None:
    """Give every system room for ``max_history`` entries, keeping its newest ones."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    kept = torch.clamp(state.n_history, max=max_history)
    first = state.n_history - kept  # oldest entry kept, per system
    slots = first.unsqueeze(1) + torch.arange(max_history, device=state.device)
    valid = slots < state.n_history.unsqueeze(1)
    slots = torch.where(valid, slots, torch.zeros_like(slots))

    def take(history: torch.Tensor | None, owner: torch.Tensor) -> torch.Tensor | None:
        if history is None:
            return None
        index = slots[owner].view(*slots[owner].shape, *([1] * (history.ndim - 2)))
        picked = torch.gather(history, 1, index.expand(-1, -1, *history.shape[2:]))
        mask = valid[owner].view(*index.shape)
        return torch.where(mask, picked, torch.zeros_like(picked))

    atoms, systems = state.system_idx, torch.arange(state.n_systems, device=state.device)
    state.s_history, state.y_history = take(state.s_history, atoms), take(state.y_history, atoms)
    state.s_cell_history = take(state.s_cell_history, systems)
    state.y_cell_history = take(state.y_cell_history, systems)
    state.rho_history = take(state.rho_history, systems)
    state.n_history, state.max_history = kept, max_history


def _append(state: LBFGSState, adding: torch.Tensor, s: tuple, y: tuple, rho: torch.Tensor) -> None:
    """Append (s, y, rho) for the ``adding`` systems, dropping the oldest entry of a full history."""
    m = state.max_history
    full = adding & (state.n_history >= m)
    slot = torch.clamp(state.n_history, max=m - 1)
    if bool(full.any()):
        state.s_history, state.y_history, state.rho_history = (
            _shift(state.s_history, full[state.system_idx]),
            _shift(state.y_history, full[state.system_idx]),
            _shift(state.rho_history, full),
        )
        if state.relax_cell:
            state.s_cell_history = _shift(state.s_cell_history, full)
            state.y_cell_history = _shift(state.y_cell_history, full)
    atoms = torch.nonzero(adding[state.system_idx]).squeeze(1)
    atom_slots = slot[state.system_idx][atoms]
    state.s_history = state.s_history.index_put((atoms, atom_slots), s[0][atoms])
    state.y_history = state.y_history.index_put((atoms, atom_slots), y[0][atoms])
    systems = torch.nonzero(adding).squeeze(1)
    state.rho_history = state.rho_history.index_put((systems, slot[systems]), rho[systems])
    if state.relax_cell:
        state.s_cell_history = state.s_cell_history.index_put((systems, slot[systems]), s[1][systems])
        state.y_cell_history = state.y_cell_history.index_put((systems, slot[systems]), y[1][systems])
    state.n_history = torch.where(adding, torch.clamp(state.n_history + 1, max=m), state.n_history)


def _shift(history: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Drop entry 0 of the selected rows (entries move down one slot)."""
    shifted = torch.roll(history, -1, dims=1)
    return torch.where(rows.view(-1, *([1] * (history.ndim - 1))), shifted, history)


def _entry(state: LBFGSState, name: str, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    atoms = getattr(state, f"{name}_history")[:, i]
    cell = getattr(state, f"{name}_cell_history")
    return atoms, None if cell is None else cell[:, i]


def _axpy(coef: torch.Tensor, x: tuple, y: tuple, state: LBFGSState) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y + coef·x for DOF vectors, ``coef`` per system."""
    atoms = y[0] + coef[state.system_idx].unsqueeze(1) * x[0]
    return atoms, None if y[1] is None else y[1] + coef.view(-1, 1, 1) * x[1]


def move(state: LBFGSState, *, curvature_eps: float | None = None, active: torch.Tensor | None = None) -> None:
    """The position (and cell) update of one L-BFGS step, ASE's algorithm per system."""
    moving = moving_systems(state, active)
    positions, forces = dof_positions(state), dof_forces(state)
    gradient = (-forces[0], None if forces[1] is None else -forces[1])
    state.n_history = torch.where(moving & state.fresh, torch.zeros_like(state.n_history), state.n_history)
    adding = moving & ~state.fresh
    if bool(adding.any()):
        prev_gradient = (-state.prev_forces, None if forces[1] is None else -state.prev_cell_forces)
        s = _axpy(
            torch.full_like(state.alpha, -1.0), (state.prev_positions, state.prev_cell_positions), positions, state
        )
        y = _axpy(torch.full_like(state.alpha, -1.0), prev_gradient, gradient, state)
        ys = dof_dot(state, y, s)
        ok = ys != 0 if curvature_eps is None else ys > curvature_eps
        rho = torch.where(ok, 1.0 / torch.where(ok, ys, torch.ones_like(ys)), torch.zeros_like(ys))
        _append(state, adding, s, y, rho)
    # two-loop recursion over each system's valid entries (newest last)
    count = torch.where(moving, state.n_history, torch.zeros_like(state.n_history))
    q = gradient
    a = torch.zeros_like(state.rho_history)
    for i in reversed(range(int(count.max()) if len(count) else 0)):
        valid = i < count
        a_i = torch.where(valid, state.rho_history[:, i] * dof_dot(state, _entry(state, "s", i), q), 0.0)
        q = _axpy(-a_i, _entry(state, "y", i), q, state)
        a[:, i] = a_i
    inverse_alpha = 1.0 / state.alpha  # ASE: H0 = diag(1/alpha), applied as a product
    z = (
        q[0] * inverse_alpha[state.system_idx].unsqueeze(1),
        None if q[1] is None else q[1] * inverse_alpha.view(-1, 1, 1),
    )
    for i in range(int(count.max()) if len(count) else 0):
        valid = i < count
        b = state.rho_history[:, i] * dof_dot(state, _entry(state, "y", i), z)
        z = _axpy(torch.where(valid, a[:, i] - b, 0.0), _entry(state, "s", i), z, state)
    keep = moving[state.system_idx].unsqueeze(1)
    d_atoms = torch.where(keep, -z[0], torch.zeros_like(z[0]))
    d_cell = None if z[1] is None else torch.where(moving.view(-1, 1, 1), -z[1], torch.zeros_like(z[1]))
    state.take_step(moving, positions, forces, d_atoms, d_cell, step_size=state.step_size)
