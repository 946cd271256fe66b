"""Batched FIRE relaxation: ASE's flavour (with the cell filter as an option) and FIRE 2.0.

Each system of a batch runs its own FIRE exactly as ``ase.optimize.FIRE`` does
(unit masses; dt, α and the step counter per system; the step vector of a system
capped at ``max_step`` in norm), so a structure takes the same path and the same
number of steps here as in ASE. With the cell filter (``cell_filter=CellFilter.unit``
or ``relax_cell=True``) the degrees of freedom are those of ASE's ``UnitCellFilter``
(:mod:`chemfit_core.engine.cell_filter`).

Systems may join a running batch at any time: a joining system first gets its
forces evaluated, then starts FIRE from scratch (zero velocity, ``dt_start``), as
a fresh ASE optimiser would — no halved time step, no lost steps.

FIRE 2.0 (Guénolé et al., Comput. Mater. Sci. 175, 109584 (2020)) is LAMMPS's
``min_style fire`` with its defaults (:class:`Fire2Parameters`: semi-implicit Euler,
real masses, dt and dmax in LAMMPS ``metal`` units, the half step back after an uphill
step, no ABC), per system; a structure takes LAMMPS's steps (``tests/test_fire2.py``).
It relaxes fixed cells. Choose it with ``fire_flavor="fire2"`` or by passing
:class:`Fire2Parameters`.

Functional style, torch-sim's signatures: :func:`fire_init` makes a
:class:`FireState`, :func:`fire_step` advances it by one step.
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
    evaluate,
    make_state,
    max_force,
    move_dofs,
    moving_systems,
    per_atom,
    per_system_abs_max,
    per_system_sum,
    row_dot,
)
from chemfit_core.engine.state import SimState
from chemfit_core.units import LAMMPS_METAL_FTM2V

__all__ = [
    "FIRE_FLAVORS",
    "Fire2Parameters",
    "FireParameters",
    "FireState",
    "evaluate",
    "fire_init",
    "fire_step",
    "max_force",
    "move",
    "move_fire2",
]


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


DEFAULT_PARAMETERS = FireParameters()


@dataclasses.dataclass(frozen=True)
class Fire2Parameters:
    """FIRE 2.0's constants, LAMMPS's ``min_style fire`` defaults (``min_modify``'s names).

    ``dt_start`` is LAMMPS's ``timestep`` (ps, metal units' default); ``tmax``/``tmin``
    bound dt as multiples of it; ``dmax`` (Å) caps the largest displacement component.
    """

    dt_start: float = 0.001
    tmax: float = 10.0
    tmin: float = 0.02
    delaystep: int = 20
    dtgrow: float = 1.1
    dtshrink: float = 0.5
    alpha0: float = 0.25
    alphashrink: float = 0.99
    dmax: float = 0.1
    halfstepback: bool = True


FIRE_FLAVORS = {"ase_fire": FireParameters, "ase": FireParameters, "fire2": Fire2Parameters}
"""FIRE flavours by name (``"ase"`` is short for torch-sim's ``"ase_fire"``) and their constants."""


@dataclasses.dataclass(eq=False)
class FireState(OptimState):
    """A batch under FIRE: :class:`OptimState` plus velocities, dt, α and the downhill count per system.

    ``dt``/``alpha`` are NaN until a system's first step, which sets them to
    ``dt_start``/``alpha_start`` unless :func:`fire_init` was given its own.
    """

    velocities: torch.Tensor | None = None  # [n_atoms, 3]
    dt: torch.Tensor | None = None  # [n_systems]
    alpha: torch.Tensor | None = None
    n_pos: torch.Tensor | None = None
    cell_velocities: torch.Tensor | None = None  # [n_systems, 3, 3] (cell filter)

    _atom_attributes = (*OptimState._atom_attributes, "velocities")
    _system_attributes = (*OptimState._system_attributes, "dt", "alpha", "n_pos", "cell_velocities")

    def _defaults(self) -> dict[str, Callable[[], torch.Tensor]]:
        n, s, dev, dt = self.n_atoms, self.n_systems, self.device, self.dtype
        defaults = super()._defaults()
        defaults["velocities"] = lambda: torch.zeros((n, 3), dtype=dt, device=dev)
        defaults["dt"] = lambda: torch.full((s,), float("nan"), dtype=dt, device=dev)
        defaults["alpha"] = lambda: torch.full((s,), float("nan"), dtype=dt, device=dev)
        defaults["n_pos"] = lambda: torch.zeros(s, dtype=torch.long, device=dev)
        if self.relax_cell:
            defaults["cell_velocities"] = lambda: torch.zeros((s, 3, 3), dtype=dt, device=dev)
        return defaults


def fire_init(
    state: SimState,
    model: Any,
    *,
    relax_cell: bool = False,
    pressure: float | None = None,
    cell_filter: CellFilter | str | None = None,
    dt_start: float | None = None,
    alpha_start: float | None = None,
    fire_flavor: str = "ase_fire",
    **filter_kwargs: Any,
) -> FireState:
    """Wrap ``state`` for FIRE (a :class:`FireState` is reused) and evaluate the model once.

    Args:
        state: structures (Å) or a FireState.
        model: any model with ``model(state) -> {"energy", "forces", "stress"}``.
        relax_cell / cell_filter: relax the cell too (ASE's UnitCellFilter).
        pressure: target pressure for the cell filter, eV/Å³ (torch-sim: ``scalar_pressure``).
        dt_start, alpha_start: this state's first time step and mixing (default: the step's parameters).
        fire_flavor: ``"ase_fire"`` (``"ase"``) or ``"fire2"`` (fixed cells only).
        filter_kwargs: torch-sim's cell-filter options (``scalar_pressure``, ``cell_factor``,
            ``hydrostatic_strain``, ``constant_volume``).
    """
    _check_flavor(fire_flavor, relax_cell or cell_filter not in (None, False))
    with torch.no_grad():
        fire_state = make_state(
            FireState, state, model, cell_filter=cell_filter, relax_cell=relax_cell, pressure=pressure, **filter_kwargs
        )
    for name, value in (("dt", dt_start), ("alpha", alpha_start)):
        if value is not None:
            current = getattr(fire_state, name)
            setattr(fire_state, name, torch.where(fire_state.fresh, torch.full_like(current, value), current))
    return fire_state


def _check_flavor(fire_flavor: str, relax_cell: bool = False) -> type:
    if fire_flavor not in FIRE_FLAVORS:
        raise ValueError(f"fire_flavor must be one of {sorted(FIRE_FLAVORS)}, got {fire_flavor!r}")
    if relax_cell and FIRE_FLAVORS[fire_flavor] is Fire2Parameters:
        raise ValueError("fire_flavor='fire2' relaxes fixed cells; relax cells with fire_flavor='ase_fire'")
    return FIRE_FLAVORS[fire_flavor]


def fire_step(
    state: FireState,
    model: Any,
    params: FireParameters | Fire2Parameters | None = None,
    *,
    active: torch.Tensor | None = None,
    fire_flavor: str | None = None,
    **overrides: float,
) -> FireState:
    """Move every evaluated system by one FIRE step, then evaluate the whole batch; return ``state``.

    The flavour is that of ``params`` (:class:`FireParameters`: ASE's, :class:`Fire2Parameters`:
    FIRE 2.0), else ``fire_flavor`` (default ``"ase_fire"``). Systems that joined without
    results are only evaluated. ``active`` (bool per system) can hold systems still.
    ``overrides`` set the flavour's constants by name (torch-sim's keywords for ASE's:
    ``dt_max``, ``n_min``, ``f_inc``, ``f_dec``, ``alpha_start``, ``f_alpha``, ``max_step``),
    applied on top of ``params``.
    """
    kind = type(params) if params is not None else _check_flavor(fire_flavor or "ase_fire")
    if fire_flavor is not None and _check_flavor(fire_flavor) is not kind:
        raise ValueError(f"fire_flavor={fire_flavor!r} does not match the {kind.__name__} given")
    params = params or kind()
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(kind)}
        if unknown:
            raise TypeError(f"fire_step got unknown parameters {sorted(unknown)}")
        params = dataclasses.replace(params, **{k: type(getattr(params, k))(v) for k, v in overrides.items()})
    with torch.no_grad():  # forces only: no autograd graph is kept (see models.base.tracks_graph)
        if isinstance(params, Fire2Parameters):
            move_fire2(state, model, params, active=active)
        else:
            move(state, params, active=active)
        evaluate(state, model)
    return state


def move(state: FireState, params: FireParameters = DEFAULT_PARAMETERS, *, active: torch.Tensor | None = None) -> None:
    """The position (and cell) update of one FIRE step, ASE's algorithm per system."""
    n_sys, sys_idx = state.n_systems, state.system_idx
    moving = moving_systems(state, active)
    fresh = _start_fresh(state, moving, params.dt_start, params.alpha_start)  # as a new ASE optimiser

    g_atoms, g_cell = dof_forces(state)
    v_atoms = state.velocities
    vf = per_system_sum(row_dot(g_atoms, v_atoms), sys_idx, n_sys)
    gg = per_system_sum(row_dot(g_atoms, g_atoms), sys_idx, n_sys)
    vv = per_system_sum(row_dot(v_atoms, v_atoms), sys_idx, n_sys)
    if state.relax_cell:
        v_cell = state.cell_velocities
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
    v_atoms = per_atom(keep, state) * v_atoms + per_atom(scale, state) * g_atoms
    v_atoms = v_atoms + per_atom(dt, state) * g_atoms
    dr_atoms = per_atom(dt, state) * v_atoms
    norm2 = per_system_sum(row_dot(dr_atoms, dr_atoms), sys_idx, n_sys)
    dr_cell = None
    if state.relax_cell:
        v_cell = keep.view(-1, 1, 1) * v_cell + scale.view(-1, 1, 1) * g_cell + dt.view(-1, 1, 1) * g_cell
        dr_cell = dt.view(-1, 1, 1) * v_cell
        norm2 = norm2 + (dr_cell * dr_cell).sum((1, 2))
    norm = torch.sqrt(norm2)
    limit = torch.where(norm > params.max_step, params.max_step / norm.clamp_min(1e-300), torch.ones_like(norm))
    moving_atoms = per_atom(moving, state)
    # held and not-yet-evaluated systems (dt may be NaN there) do not move
    dr_atoms = torch.where(moving_atoms, dr_atoms * per_atom(limit, state), torch.zeros_like(dr_atoms))

    state.velocities = torch.where(moving_atoms, v_atoms, state.velocities)
    state.dt = dt
    state.alpha = torch.where(moving, new_alpha, state.alpha)
    state.n_pos = torch.where(moving, new_npos, state.n_pos)
    if state.relax_cell:
        dr_cell = torch.where(moving.view(-1, 1, 1), dr_cell * limit.view(-1, 1, 1), torch.zeros_like(dr_cell))
        state.cell_velocities = torch.where(moving.view(-1, 1, 1), v_cell, state.cell_velocities)
    _end_step(state, moving, dr_atoms, dr_cell)


def _start_fresh(state: FireState, moving: torch.Tensor, dt_start: float, alpha_start: float) -> torch.Tensor:
    """Start the moving systems that have not stepped yet from rest; return which those are.

    v = 0, no downhill steps, and dt/α from :func:`fire_init`'s values where it set
    them, else ``dt_start``/``alpha_start`` (both flavours start this way).
    """
    fresh = state.fresh & moving
    dt0 = torch.where(torch.isnan(state.dt), torch.full_like(state.dt, dt_start), state.dt)
    alpha0 = torch.where(torch.isnan(state.alpha), torch.full_like(state.alpha, alpha_start), state.alpha)
    state.dt = torch.where(fresh, dt0, state.dt)
    state.alpha = torch.where(fresh, alpha0, state.alpha)
    state.n_pos = torch.where(fresh, torch.zeros_like(state.n_pos), state.n_pos)
    zero = fresh[state.system_idx].unsqueeze(1)
    state.velocities = torch.where(zero, torch.zeros_like(state.velocities), state.velocities)
    return fresh


def _end_step(state: FireState, moving: torch.Tensor, dr_atoms: torch.Tensor, dr_cell: torch.Tensor | None) -> None:
    """Count the step of the moving systems and move them by ``dr`` (Å; cell DOFs too): they need forces again."""
    state.n_steps = state.n_steps + moving.to(state.n_steps.dtype)
    state.fresh = state.fresh & ~moving
    move_dofs(state, dr_atoms, dr_cell)
    state.evaluated = state.evaluated & ~moving


def move_fire2(
    state: FireState, model: Any, params: Fire2Parameters = Fire2Parameters(), *, active: torch.Tensor | None = None
) -> None:
    """The position update of one FIRE 2.0 step per system, LAMMPS's ``MinFire::iterate``.

    Velocities are in Å/ps with the atoms' masses (amu), dt in ps. After an uphill step
    (P = v·f ≤ 0) a system steps back by ½·dt·v, and the model is evaluated there
    (as LAMMPS does) before the next move; this costs one more batched evaluation when
    any system needs it.
    """
    if state.relax_cell:
        raise ValueError("FIRE 2.0 relaxes fixed cells; relax cells with ASE's flavour (FireParameters)")
    n_sys, sys_idx = state.n_systems, state.system_idx
    moving = moving_systems(state, active)
    _start_fresh(state, moving, params.dt_start, params.alpha0)
    atom_moving = per_atom(moving, state)

    v, f = state.velocities, state.forces
    vf = per_system_sum(row_dot(v, f), sys_idx, n_sys)
    vv = per_system_sum(row_dot(v, v), sys_idx, n_sys)
    ff = per_system_sum(row_dot(f, f), sys_idx, n_sys)
    since_negative = state.n_pos + 1  # LAMMPS: ntimestep - last_negative
    uphill_free = moving & (vf > 0)
    uphill = moving & ~(vf > 0)
    scale1 = 1.0 - state.alpha
    scale2 = torch.where(ff <= 1e-20, torch.zeros_like(ff), state.alpha * torch.sqrt(vv / ff.clamp_min(1e-300)))
    grow = uphill_free & (since_negative > params.delaystep)
    dt, alpha = state.dt, state.alpha
    dt = torch.where(grow, torch.clamp(dt * params.dtgrow, max=params.tmax * params.dt_start), dt)
    alpha = torch.where(grow, alpha * params.alphashrink, alpha)
    settled = uphill & (state.n_steps + 1 >= params.delaystep)  # no resets in the first delaystep steps
    alpha = torch.where(settled, torch.full_like(alpha, params.alpha0), alpha)
    dt = torch.where(settled & (dt * params.dtshrink >= params.tmin * params.dt_start), dt * params.dtshrink, dt)
    state.n_pos = torch.where(
        uphill, torch.zeros_like(since_negative), torch.where(moving, since_negative, state.n_pos)
    )
    back = per_atom(uphill, state)
    if params.halfstepback and bool((back & (v != 0)).any()):
        # LAMMPS steps back by half the new (shrunk) dt times v, not by half the last move
        step_back = torch.where(back, -0.5 * per_atom(dt, state) * v, torch.zeros_like(v))
        move_dofs(state, step_back, None)
        evaluate(state, model)  # LAMMPS evaluates at the stepped-back positions
        f = state.forces
    v = torch.where(back, torch.zeros_like(v), v)
    accel = LAMMPS_METAL_FTM2V * f / state.masses.unsqueeze(1)  # Å/ps² per eV/Å
    # dmax: no component moves further than dmax, judged on v (or on dt·a after a reset)
    vmax = per_system_abs_max(torch.where(back, per_atom(dt, state) * accel, v), state)
    dtv = torch.where(dt * vmax > params.dmax, params.dmax / vmax.clamp_min(1e-300), dt)
    v = v + per_atom(dtv, state) * accel
    mixed = per_atom(scale1, state) * v + per_atom(scale2, state) * f
    v = torch.where(per_atom(uphill_free, state), mixed, v)
    dx = torch.where(atom_moving, per_atom(dtv, state) * v, torch.zeros_like(v))

    state.velocities = torch.where(atom_moving, v, state.velocities)
    state.dt = torch.where(moving, dt, state.dt)
    state.alpha = torch.where(moving, alpha, state.alpha)
    _end_step(state, moving, dx, None)
