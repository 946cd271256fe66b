"""Batched FIRE relaxation, ASE's flavour, with optional cell relaxation.

Each system of a batch runs its own FIRE exactly as ``ase.optimize.FIRE`` does
(unit masses; dt, α and the step counter per system; the step vector of a system
capped at ``max_step`` in norm), so a structure takes the same path and the same
number of steps here as in ASE. With ``relax_cell=True`` the degrees of freedom
are those of ASE's ``UnitCellFilter``: atom positions in the undeformed frame plus
the deformation gradient scaled by the number of atoms, driven by the stress.

Systems may join a running batch at any time: a joining system first gets its
forces evaluated, then starts FIRE from scratch (zero velocity, ``dt_start``), as
a fresh ASE optimiser would — no halved time step, no lost steps.

Functional style, as torch-sim's optimisers: :func:`fire_init` makes a
:class:`FireState`, :func:`fire_step` advances it by one step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from chemfit_core.engine.state import SimState


@dataclasses.dataclass(frozen=True)
class FireParameters:
    """FIRE's constants, ASE's defaults (time in ASE's units, distances in Å)."""

    dt_start: float = 0.1
    dt_max: float = 1.0
    n_min: int = 5
    f_inc: float = 1.1
    f_dec: float = 0.5
    alpha_start: float = 0.1
    f_alpha: float = 0.99
    max_step: float = 0.2


@dataclasses.dataclass(eq=False)
class FireState(SimState):
    """A batch under relaxation: structures plus results and FIRE's per-system state.

    ``forces``/``energy``/``stress`` are NaN for a system that has joined but not
    been evaluated yet; ``fresh`` marks systems that have not taken a step.
    """

    forces: torch.Tensor | None = None  # [n_atoms, 3] eV/Å
    energy: torch.Tensor | None = None  # [n_systems] eV
    stress: torch.Tensor | None = None  # [n_systems, 3, 3] eV/Å³
    velocities: torch.Tensor | None = None  # [n_atoms, 3]
    dt: torch.Tensor | None = None  # [n_systems]
    alpha: torch.Tensor | None = None
    n_pos: torch.Tensor | None = None
    n_steps: torch.Tensor | None = None  # steps taken, per system
    fresh: torch.Tensor | None = None  # [n_systems] bool
    evaluated: torch.Tensor | None = None  # [n_systems] bool: results are current
    reference_cell: torch.Tensor | None = None  # [n_systems, 3, 3] (cell relaxation)
    cell_velocities: torch.Tensor | None = None
    cell_forces: torch.Tensor | None = None
    relax_cell: bool = False
    pressure: float = 0.0  # eV/Å³, for cell relaxation

    _atom_attributes = (*SimState._atom_attributes, "forces", "velocities")
    _system_attributes = (
        *SimState._system_attributes,
        "energy",
        "stress",
        "dt",
        "alpha",
        "n_pos",
        "n_steps",
        "fresh",
        "evaluated",
        "reference_cell",
        "cell_velocities",
        "cell_forces",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        n, s, dev, dt = self.n_atoms, self.n_systems, self.device, self.dtype
        nan = float("nan")
        defaults: dict[str, Any] = {
            "forces": lambda: torch.full((n, 3), nan, dtype=dt, device=dev),
            "energy": lambda: torch.full((s,), nan, dtype=dt, device=dev),
            "stress": lambda: torch.full((s, 3, 3), nan, dtype=dt, device=dev),
            "velocities": lambda: torch.zeros((n, 3), dtype=dt, device=dev),
            "dt": lambda: torch.full((s,), nan, dtype=dt, device=dev),
            "alpha": lambda: torch.full((s,), nan, dtype=dt, device=dev),
            "n_pos": lambda: torch.zeros(s, dtype=torch.long, device=dev),
            "n_steps": lambda: torch.zeros(s, dtype=torch.long, device=dev),
            "fresh": lambda: torch.ones(s, dtype=torch.bool, device=dev),
            "evaluated": lambda: torch.zeros(s, dtype=torch.bool, device=dev),
        }
        if self.relax_cell:
            defaults["reference_cell"] = lambda: self.cell.detach().clone()
            defaults["cell_velocities"] = lambda: torch.zeros((s, 3, 3), dtype=dt, device=dev)
            defaults["cell_forces"] = lambda: torch.full((s, 3, 3), nan, dtype=dt, device=dev)
        for name, make in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, make())

    @classmethod
    def _with_defaults(cls, base: dict[str, Any], extra: dict[str, Any]) -> FireState:
        return cls(**base, **extra)

    def converged(self, fmax: float) -> torch.Tensor:
        """``[n_systems]``: evaluated and the largest force (cell rows included) ≤ ``fmax``."""
        return self.evaluated & (max_force(self) <= fmax)


def fire_init(state: SimState, model: Any, *, relax_cell: bool = False, pressure: float = 0.0) -> FireState:
    """Wrap ``state`` for FIRE and evaluate the model once (energies, forces, stress)."""
    if isinstance(state, FireState):
        fire_state = state
    else:
        fire_state = FireState.from_state(state, relax_cell=relax_cell, pressure=pressure)
    evaluate(fire_state, model)
    return fire_state


def deformation_gradient(state: FireState) -> torch.Tensor:
    """``[n_systems, 3, 3]``: F with cell = reference_cell · Fᵀ (ASE's UnitCellFilter)."""
    return torch.linalg.solve(state.reference_cell, state.cell).mT


def evaluate(state: FireState, model: Any) -> None:
    """Run the model on the whole batch and store its results (and the cell forces)."""
    out = model(state, compute_stress=state.relax_cell)
    state.energy = out["energy"].detach()
    state.forces = out["forces"].detach()
    if "stress" in out:
        state.stress = out["stress"].detach()
    state.evaluated = torch.ones_like(state.evaluated)
    if state.relax_cell:
        if "stress" not in out:
            raise ValueError("cell relaxation needs a model that returns the stress")
        volume = torch.linalg.det(state.cell).abs()
        eye = torch.eye(3, dtype=state.dtype, device=state.device)
        virial = -volume.view(-1, 1, 1) * (state.stress + state.pressure * eye)
        deform = deformation_gradient(state)
        virial = torch.linalg.solve(deform, virial.mT).mT
        cell_factor = state.n_atoms_per_system.to(state.dtype).view(-1, 1, 1)
        state.cell_forces = virial * state.pbc.all(dim=1).view(-1, 1, 1) / cell_factor


def _dof_forces(state: FireState) -> torch.Tensor:
    """Forces on the atom degrees of freedom (rotated into the reference frame under cell relaxation)."""
    if not state.relax_cell:
        return state.forces
    deform = deformation_gradient(state)
    return torch.einsum("ni,nij->nj", state.forces, deform[state.system_idx])


def max_force(state: FireState) -> torch.Tensor:
    """``[n_systems]`` largest force norm on any atom (and cell row), eV/Å."""
    norms = _dof_forces(state).norm(dim=1)
    out = torch.zeros(state.n_systems, dtype=state.dtype, device=state.device)
    out = out.scatter_reduce(0, state.system_idx, norms, reduce="amax", include_self=True)
    if state.relax_cell:
        out = torch.maximum(out, state.cell_forces.norm(dim=2).amax(dim=1))
    return torch.where(torch.isnan(out), torch.full_like(out, float("inf")), out)


def _per_system_sum(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, index, values)


def fire_step(
    state: FireState, model: Any, params: FireParameters = FireParameters(), *, active: torch.Tensor | None = None
) -> FireState:
    """Move every evaluated system by one FIRE step, then evaluate the whole batch.

    Systems that joined without results are only evaluated. ``active`` (bool per
    system) can hold systems still.
    """
    move(state, params, active=active)
    evaluate(state, model)
    return state


def move(state: FireState, params: FireParameters = FireParameters(), *, active: torch.Tensor | None = None) -> None:
    """The position (and cell) update of one FIRE step, ASE's algorithm per system."""
    n_sys, sys_idx = state.n_systems, state.system_idx
    moving = state.evaluated.clone() if active is None else state.evaluated & active
    fresh = state.fresh & moving
    # a fresh system starts as a new ASE optimiser: v = 0, dt = dt_start, a = alpha_start
    state.dt = torch.where(fresh, torch.full_like(state.dt, params.dt_start), state.dt)
    state.alpha = torch.where(fresh, torch.full_like(state.alpha, params.alpha_start), state.alpha)
    state.n_pos = torch.where(fresh, torch.zeros_like(state.n_pos), state.n_pos)
    state.velocities = torch.where(fresh[sys_idx].unsqueeze(1), torch.zeros_like(state.velocities), state.velocities)

    g_atoms = _dof_forces(state)
    v_atoms = state.velocities
    vf = _per_system_sum((g_atoms * v_atoms).sum(1), sys_idx, n_sys)
    gg = _per_system_sum((g_atoms * g_atoms).sum(1), sys_idx, n_sys)
    vv = _per_system_sum((v_atoms * v_atoms).sum(1), sys_idx, n_sys)
    if state.relax_cell:
        g_cell, v_cell = state.cell_forces, state.cell_velocities
        v_cell = torch.where(fresh.view(-1, 1, 1), torch.zeros_like(v_cell), v_cell)
        vf = vf + (g_cell * v_cell).sum((1, 2))
        gg = gg + (g_cell * g_cell).sum((1, 2))
        vv = vv + (v_cell * v_cell).sum((1, 2))

    uphill_free = (vf > 0) & ~fresh  # ASE: mix velocities while going downhill
    reset = ~(vf > 0) & ~fresh
    mix = torch.where(uphill_free, state.alpha, torch.zeros_like(state.alpha))
    scale = torch.where(uphill_free, mix * torch.sqrt(vv) / torch.sqrt(gg).clamp_min(1e-300), torch.zeros_like(mix))
    keep = torch.where(reset, torch.zeros_like(mix), 1.0 - mix)
    grow = uphill_free & (state.n_pos > params.n_min)
    new_dt = torch.where(grow, torch.clamp(state.dt * params.f_inc, max=params.dt_max), state.dt)
    new_dt = torch.where(reset, state.dt * params.f_dec, new_dt)
    new_alpha = torch.where(grow, state.alpha * params.f_alpha, state.alpha)
    new_alpha = torch.where(reset, torch.full_like(state.alpha, params.alpha_start), new_alpha)
    new_npos = torch.where(uphill_free, state.n_pos + 1, torch.where(reset, torch.zeros_like(state.n_pos), state.n_pos))

    dt = torch.where(moving, new_dt, state.dt)
    v_atoms = keep[sys_idx].unsqueeze(1) * v_atoms + scale[sys_idx].unsqueeze(1) * g_atoms
    v_atoms = v_atoms + dt[sys_idx].unsqueeze(1) * g_atoms
    dr_atoms = dt[sys_idx].unsqueeze(1) * v_atoms
    norm2 = _per_system_sum((dr_atoms * dr_atoms).sum(1), sys_idx, n_sys)
    if state.relax_cell:
        v_cell = keep.view(-1, 1, 1) * v_cell + scale.view(-1, 1, 1) * g_cell + dt.view(-1, 1, 1) * g_cell
        dr_cell = dt.view(-1, 1, 1) * v_cell
        norm2 = norm2 + (dr_cell * dr_cell).sum((1, 2))
    norm = torch.sqrt(norm2)
    limit = torch.where(norm > params.max_step, params.max_step / norm.clamp_min(1e-300), torch.ones_like(norm))
    moving_atoms = moving[sys_idx].unsqueeze(1)
    # held and not-yet-evaluated systems (dt may be NaN there) do not move
    dr_atoms = torch.where(moving_atoms, dr_atoms * limit[sys_idx].unsqueeze(1), torch.zeros_like(dr_atoms))

    state.velocities = torch.where(moving_atoms, v_atoms, state.velocities)
    state.dt = dt
    state.alpha = torch.where(moving, new_alpha, state.alpha)
    state.n_pos = torch.where(moving, new_npos, state.n_pos)
    state.n_steps = state.n_steps + moving.to(state.n_steps.dtype)
    state.fresh = state.fresh & ~moving
    if state.relax_cell:
        dr_cell = torch.where(moving.view(-1, 1, 1), dr_cell * limit.view(-1, 1, 1), torch.zeros_like(dr_cell))
        state.cell_velocities = torch.where(moving.view(-1, 1, 1), v_cell, state.cell_velocities)
        deform = deformation_gradient(state)
        cell_factor = state.n_atoms_per_system.to(state.dtype).view(-1, 1, 1)
        new_deform = deform + dr_cell / cell_factor
        frame = torch.linalg.solve(deform[sys_idx], state.positions.unsqueeze(2)).squeeze(2)  # pos @ F^-T
        state.positions = torch.einsum("nj,nij->ni", frame + dr_atoms, new_deform[sys_idx])
        state.cell = state.reference_cell @ new_deform.mT
    else:
        state.positions = state.positions + dr_atoms
    state.evaluated = state.evaluated & ~moving
