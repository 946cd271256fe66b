"""Batched BFGS, ASE's algorithm per system, with the cell filter as an option.

Each system keeps its own dense Hessian over its degrees of freedom (3·n_atoms,
plus 9 under the cell filter), starting from ``alpha`` · I (70 eV/Å², ASE's) and
updated as ``ase.optimize.BFGS`` does; the step −|H|⁻¹·g from H's eigenvectors is
scaled so that no row (atom or cell row) moves more than ``max_step`` (0.2 Å).
Systems of equal size share one batched eigendecomposition; a system joining a
running batch starts from ``alpha`` · I, as a fresh ASE optimiser would.

Functional style, torch-sim's signatures: :func:`bfgs_init` makes a
:class:`BFGSState`, :func:`bfgs_step` advances it by one step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from chemfit_core.engine.cell_filter import (
    CellFilter,
    OptimState,
    dof_forces,
    dof_positions,
    evaluate,
    make_state,
    max_row_norm,
    move_dofs,
    moving_systems,
)
from chemfit_core.engine.state import SimState

__all__ = ["BFGSState", "QuasiNewtonState", "bfgs_init", "bfgs_step"]


@dataclasses.dataclass(eq=False)
class QuasiNewtonState(OptimState):
    """What BFGS and L-BFGS share: the previous DOF positions and forces, ``alpha`` and ``max_step``.

    ``alpha`` (eV/Å²) is the initial Hessian's scale, ``max_step`` (Å) the largest
    row displacement per step, both per system.
    """

    prev_positions: torch.Tensor | None = None  # [n_atoms, 3] DOF positions at the last step
    prev_forces: torch.Tensor | None = None  # [n_atoms, 3] DOF forces at the last step
    prev_cell_positions: torch.Tensor | None = None  # [n_systems, 3, 3] (cell filter)
    prev_cell_forces: torch.Tensor | None = None
    alpha: torch.Tensor | None = None  # [n_systems] eV/Å²
    max_step: torch.Tensor | None = None  # [n_systems] Å

    _atom_attributes = (*OptimState._atom_attributes, "prev_positions", "prev_forces")
    _system_attributes = (
        *OptimState._system_attributes,
        "prev_cell_positions",
        "prev_cell_forces",
        "alpha",
        "max_step",
    )

    def _defaults(self) -> dict[str, Callable[[], torch.Tensor]]:
        n, s, dev, dt = self.n_atoms, self.n_systems, self.device, self.dtype
        defaults = super()._defaults()
        defaults["prev_positions"] = lambda: torch.zeros((n, 3), dtype=dt, device=dev)
        defaults["prev_forces"] = lambda: torch.zeros((n, 3), dtype=dt, device=dev)
        defaults["alpha"] = lambda: torch.full((s,), 70.0, dtype=dt, device=dev)
        defaults["max_step"] = lambda: torch.full((s,), 0.2, dtype=dt, device=dev)
        if self.relax_cell:
            defaults["prev_cell_positions"] = lambda: torch.zeros((s, 3, 3), dtype=dt, device=dev)
            defaults["prev_cell_forces"] = lambda: torch.zeros((s, 3, 3), dtype=dt, device=dev)
        return defaults

    def remember(self, moving: torch.Tensor, positions: tuple, forces: tuple) -> None:
        """Store this step's DOF positions and forces for the systems that move."""
        atoms = moving[self.system_idx].unsqueeze(1)
        self.prev_positions = torch.where(atoms, positions[0], self.prev_positions)
        self.prev_forces = torch.where(atoms, forces[0], self.prev_forces)
        if self.relax_cell:
            cells = moving.view(-1, 1, 1)
            self.prev_cell_positions = torch.where(cells, positions[1], self.prev_cell_positions)
            self.prev_cell_forces = torch.where(cells, forces[1], self.prev_cell_forces)

    def take_step(
        self,
        moving: torch.Tensor,
        positions: tuple,
        forces: tuple,
        d_atoms: torch.Tensor,
        d_cell: torch.Tensor | None,
        step_size: torch.Tensor | None = None,
    ) -> None:
        """Move the ``moving`` systems by ``d_atoms``/``d_cell`` (Å), scaled so that no row moves
        more than ``max_step`` (then times ``step_size`` per system, when given); remember this
        step's DOF ``positions`` and ``forces`` and count the step (ASE's step-length rule)."""
        longest = max_row_norm(self, d_atoms, d_cell)
        scale = torch.where(
            longest >= self.max_step, self.max_step / longest.clamp_min(1e-300), torch.ones_like(longest)
        )
        if step_size is not None:
            scale = scale * step_size
        d_atoms = d_atoms * scale[self.system_idx].unsqueeze(1)
        if d_cell is not None:
            d_cell = d_cell * scale.view(-1, 1, 1)
        self.remember(moving, positions, forces)
        move_dofs(self, d_atoms, d_cell)
        self.n_steps = self.n_steps + moving.to(self.n_steps.dtype)
        self.fresh = self.fresh & ~moving
        self.evaluated = self.evaluated & ~moving


@dataclasses.dataclass(eq=False)
class BFGSState(QuasiNewtonState):
    """A batch under BFGS: one Hessian per system (a list: systems differ in size), eV/Å².

    ``hessian[s]`` is ``None`` until system ``s`` has taken its first step. The
    matrices are never modified in place, so states may share them.
    """

    hessian: list[torch.Tensor | None] | None = None

    _system_lists = (*SimState._system_lists, "hessian")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hessian is None or len(self.hessian) != self.n_systems:
            self.hessian = [None] * self.n_systems

    def clone(self) -> BFGSState:
        """Deep copy, Hessians included."""
        copy = super().clone()
        copy.hessian = [None if h is None else h.clone() for h in self.hessian]
        return copy

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> BFGSState:
        """Copy on another device and/or float dtype, Hessians included."""
        moved = super().to(device=device, dtype=dtype)
        moved.hessian = [None if h is None else h.to(device=device, dtype=dtype) for h in self.hessian]
        return moved

    def drop_optimizer_memory(self) -> None:
        """Forget the Hessians (a finished relaxation does not need them)."""
        self.hessian = [None] * self.n_systems


def bfgs_init(
    state: SimState,
    model: Any,
    *,
    max_step: float = 0.2,
    alpha: float = 70.0,
    relax_cell: bool = False,
    pressure: float | None = None,
    cell_filter: CellFilter | str | None = None,
    **filter_kwargs: Any,
) -> BFGSState:
    """A fresh BFGS state for ``state``, evaluated once (ASE's defaults: alpha 70 eV/Å², max_step 0.2 Å).

    ``relax_cell``/``cell_filter`` add the cell (ASE's UnitCellFilter) at ``pressure``
    (eV/Å³); ``filter_kwargs`` are torch-sim's cell-filter options.
    """
    return make_state(
        BFGSState,
        state,
        model,
        cell_filter=cell_filter,
        relax_cell=relax_cell,
        pressure=pressure,
        alpha=alpha,
        max_step=max_step,
        **filter_kwargs,
    )


def bfgs_step(state: BFGSState, model: Any, *, active: torch.Tensor | None = None) -> BFGSState:
    """Move every evaluated system by one BFGS step, then evaluate the whole batch; return ``state``."""
    move(state, active=active)
    evaluate(state, model)
    return state


def pack(state: SimState, systems: torch.Tensor, n: int, atoms: torch.Tensor, cell: torch.Tensor | None):
    """``[len(systems), 3n (+9)]``: the DOF vectors of ``systems`` (all of ``n`` atoms), ASE's order."""
    offsets = torch.cumsum(state.n_atoms_per_system, 0) - state.n_atoms_per_system
    rows = offsets[systems].unsqueeze(1) + torch.arange(n, device=state.device)
    flat = atoms[rows].reshape(len(systems), 3 * n)
    return flat if cell is None else torch.cat([flat, cell[systems].reshape(len(systems), 9)], dim=1)


def unpack(state: SimState, systems: torch.Tensor, n: int, vectors: torch.Tensor, atoms: torch.Tensor, cell):
    """Write DOF vectors of ``systems`` (from :func:`pack`'s layout) into ``atoms``/``cell``, out of place."""
    offsets = torch.cumsum(state.n_atoms_per_system, 0) - state.n_atoms_per_system
    rows = (offsets[systems].unsqueeze(1) + torch.arange(n, device=state.device)).reshape(-1)
    atoms = atoms.index_copy(0, rows, vectors[:, : 3 * n].reshape(-1, 3))
    if cell is not None:
        cell = cell.index_copy(0, systems, vectors[:, 3 * n :].reshape(-1, 3, 3))
    return atoms, cell


def _update(hessian: torch.Tensor, dx: torch.Tensor, dg: torch.Tensor, started: torch.Tensor) -> torch.Tensor:
    """ASE's BFGS update of ``[G, d, d]`` Hessians; skipped where not started or the step was < 1e-7 Å."""
    a = (dx * dg).sum(1).view(-1, 1, 1)
    hdx = (hessian @ dx.unsqueeze(2)).squeeze(2)
    b = (dx * hdx).sum(1).view(-1, 1, 1)
    updated = hessian + (dg.unsqueeze(2) * dg.unsqueeze(1) / a - hdx.unsqueeze(2) * hdx.unsqueeze(1) / b)
    apply = started & (dx.abs().amax(1) >= 1e-7)
    return torch.where(apply.view(-1, 1, 1), updated, hessian)


def newton_step(hessian: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """``[G, d]``: ASE's step −V·diag(1/|ω|)·Vᵀ·g from the eigenpairs (ω, V) of each Hessian.

    Where a Hessian is positive definite that is −H⁻¹·g, found by a Cholesky solve
    (the same step to rounding, many times cheaper than the eigendecomposition);
    the others take ASE's eigendecomposition.
    """
    factor, info = torch.linalg.cholesky_ex(hessian)
    definite = info == 0
    step = torch.empty_like(gradient)
    if bool(definite.any()):
        step[definite] = -torch.cholesky_solve(gradient[definite].unsqueeze(2), factor[definite]).squeeze(2)
    if not bool(definite.all()):
        omega, vectors = torch.linalg.eigh(hessian[~definite])
        projected = (gradient[~definite].unsqueeze(1) @ vectors).squeeze(1) / omega.abs()
        step[~definite] = -(vectors @ projected.unsqueeze(2)).squeeze(2)
    return step


def move(state: BFGSState, *, active: torch.Tensor | None = None) -> None:
    """The position (and cell) update of one BFGS step, ASE's algorithm per system."""
    moving = moving_systems(state, active)
    positions = dof_positions(state)
    forces = dof_forces(state)
    d_atoms = torch.zeros_like(state.positions)
    d_cell = torch.zeros_like(state.cell) if positions[1] is not None else None
    counts = state.n_atoms_per_system
    hessians = list(state.hessian)
    for n in torch.unique(counts[moving]).tolist():
        systems = torch.nonzero(moving & (counts == n)).squeeze(1)
        x = pack(state, systems, n, *positions)
        g = -pack(state, systems, n, *forces)
        dim = x.shape[1]
        eye = torch.eye(dim, dtype=x.dtype, device=x.device)
        start = [hessians[s] is None or bool(state.fresh[s]) for s in systems.tolist()]
        h0 = [state.alpha[s] * eye if fresh else hessians[s] for s, fresh in zip(systems.tolist(), start)]
        hessian = torch.stack(h0)
        started = ~torch.tensor(start, device=x.device)
        if bool(started.any()):
            x0 = pack(state, systems, n, state.prev_positions, state.prev_cell_positions)
            g0 = -pack(state, systems, n, state.prev_forces, state.prev_cell_forces)
            hessian = _update(hessian, x - x0, g - g0, started)
        d_atoms, d_cell = unpack(state, systems, n, newton_step(hessian, g), d_atoms, d_cell)
        for s, h in zip(systems.tolist(), hessian.unbind(0)):
            hessians[s] = h.clone()  # own storage: a finished system must not pin the group's
    state.hessian = hessians
    state.take_step(moving, positions, forces, d_atoms, d_cell)
