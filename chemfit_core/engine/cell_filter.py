"""Cell relaxation as a filter beside the optimisers, and the state FIRE, BFGS and L-BFGS share.

An optimiser moves degrees of freedom (DOF) along forces on them. Without a cell
filter those are the atom positions (Å) and the atomic forces (eV/Å). With the
cell filter (:attr:`CellFilter.unit`, ASE's ``UnitCellFilter``) each system has
``n_atoms + 3`` DOF rows: the atom positions in the undeformed frame (x·F⁻ᵀ) and the
deformation gradient F times ``cell_factor`` (the number of atoms by default),
with the forces f·F on the atoms and the virial −V(σ + p)·F⁻ᵀ / cell_factor on the
cell rows, where ``cell = reference_cell · Fᵀ``. A DOF vector is a pair
``(atoms [n_atoms, 3], cell [n_systems, 3, 3] or None)``; this module maps states
to DOF vectors and back, so each optimiser is written once for both cases.

Models are called the way torch-sim's ``ModelInterface`` is (``model(state)``);
``compute_stress=`` is passed only to models whose ``forward`` takes it.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable
from typing import Any

import torch

from chemfit_core.engine.state import SimState


class CellFilter(enum.StrEnum):
    """Cell filters (torch-sim's names): ``unit`` is ASE's ``UnitCellFilter``."""

    unit = "unit"


def wants_cell(cell_filter: CellFilter | str | bool | None, relax_cell: bool = False) -> bool:
    """Whether an optimiser should relax the cell, from torch-sim's ``cell_filter`` or our ``relax_cell``."""
    if cell_filter is None or cell_filter is False:
        return relax_cell
    if cell_filter is True:
        return True
    try:
        CellFilter(cell_filter)
    except ValueError:
        raise ValueError(f"unknown cell filter {cell_filter!r}; implemented: {[f.value for f in CellFilter]}") from None
    return True


@dataclasses.dataclass(eq=False)
class OptimState(SimState):
    """A batch under relaxation: structures, model results and the cell filter's state.

    ``forces``/``energy``/``stress`` are NaN for a system that has joined but not been
    evaluated yet; ``fresh`` marks systems that have not taken a step, ``evaluated``
    those whose results belong to the current positions. Cell fields exist only with
    ``relax_cell``: ``reference_cell`` (Å, rows), ``cell_forces`` (eV/Å, the filter's
    cell rows), ``cell_factor`` (per system). ``pressure`` is in eV/Å³.
    """

    forces: torch.Tensor | None = None  # [n_atoms, 3] eV/Å
    energy: torch.Tensor | None = None  # [n_systems] eV
    stress: torch.Tensor | None = None  # [n_systems, 3, 3] eV/Å³
    n_steps: torch.Tensor | None = None  # steps taken, per system
    fresh: torch.Tensor | None = None  # [n_systems] bool
    evaluated: torch.Tensor | None = None  # [n_systems] bool: results are current
    reference_cell: torch.Tensor | None = None  # [n_systems, 3, 3]
    cell_forces: torch.Tensor | None = None  # [n_systems, 3, 3]
    cell_factor: torch.Tensor | None = None  # [n_systems]
    relax_cell: bool = False
    pressure: float = 0.0  # eV/Å³
    hydrostatic_strain: bool = False
    constant_volume: bool = False

    _atom_attributes = (*SimState._atom_attributes, "forces")
    _system_attributes = (
        *SimState._system_attributes,
        "energy",
        "stress",
        "n_steps",
        "fresh",
        "evaluated",
        "reference_cell",
        "cell_forces",
        "cell_factor",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, make in self._defaults().items():
            value = getattr(self, name)
            if value is None:
                setattr(self, name, make())
            elif not isinstance(value, torch.Tensor) and name in self._system_attributes:
                # a scalar for every system (e.g. alpha=70.0 given to from_state)
                setattr(self, name, torch.full((self.n_systems,), float(value), dtype=self.dtype, device=self.device))

    def _defaults(self) -> dict[str, Callable[[], torch.Tensor]]:
        """Factories for fields left as None (subclasses extend this)."""
        n, s, dev, dt = self.n_atoms, self.n_systems, self.device, self.dtype
        nan = float("nan")
        defaults: dict[str, Callable[[], torch.Tensor]] = {
            "forces": lambda: torch.full((n, 3), nan, dtype=dt, device=dev),
            "energy": lambda: torch.full((s,), nan, dtype=dt, device=dev),
            "stress": lambda: torch.full((s, 3, 3), nan, dtype=dt, device=dev),
            "n_steps": lambda: torch.zeros(s, dtype=torch.long, device=dev),
            "fresh": lambda: torch.ones(s, dtype=torch.bool, device=dev),
            "evaluated": lambda: torch.zeros(s, dtype=torch.bool, device=dev),
        }
        if self.relax_cell:
            defaults["reference_cell"] = lambda: self.cell.detach().clone()
            defaults["cell_forces"] = lambda: torch.full((s, 3, 3), nan, dtype=dt, device=dev)
            defaults["cell_factor"] = lambda: self.n_atoms_per_system.to(dt)
        return defaults

    def converged(self, fmax: float) -> torch.Tensor:
        """``[n_systems]``: evaluated and the largest force (cell rows included) ≤ ``fmax`` (eV/Å)."""
        return self.evaluated & (max_force(self) <= fmax)

    def drop_optimizer_memory(self) -> None:
        """Free what only further steps need (a BFGS Hessian, an L-BFGS history); no-op here."""


def make_state(
    cls: type[OptimState],
    state: SimState,
    model: Any,
    *,
    cell_filter: CellFilter | str | bool | None = None,
    relax_cell: bool = False,
    pressure: float | None = None,
    scalar_pressure: float | None = None,
    cell_factor: float | torch.Tensor | None = None,
    hydrostatic_strain: bool = False,
    constant_volume: bool = False,
    **extra: Any,
) -> OptimState:
    """``state`` as a ``cls`` (reused if it already is one), evaluated once: every optimiser's init.

    Accepts torch-sim's filter keywords (``scalar_pressure``, eV/Å³; ``cell_factor``;
    ``hydrostatic_strain``; ``constant_volume``) and ours (``relax_cell``, ``pressure``).
    ``extra`` sets optimiser fields of a new state (``alpha=70.0``...).
    """
    relax = wants_cell(cell_filter, relax_cell)
    if pressure is not None and scalar_pressure is not None and pressure != scalar_pressure:
        raise ValueError(f"pressure={pressure} and scalar_pressure={scalar_pressure} disagree")
    p = float(pressure if pressure is not None else scalar_pressure if scalar_pressure is not None else 0.0)
    if isinstance(state, cls) and (state.relax_cell or not relax) and not extra:
        optim_state = state
    else:
        options: dict[str, Any] = {"relax_cell": relax, "pressure": p, **extra}
        if relax:
            options.update(hydrostatic_strain=hydrostatic_strain, constant_volume=constant_volume)
            if cell_factor is not None:
                factor = torch.as_tensor(cell_factor, dtype=state.dtype, device=state.device)
                options["cell_factor"] = factor.expand(state.n_systems).clone()
        plain = SimState.from_state(state) if isinstance(state, OptimState) else state
        optim_state = cls.from_state(plain, **options)
    evaluate(optim_state, model)
    return optim_state


_TAKES_COMPUTE_STRESS: dict[type, bool] = {}


def _takes_compute_stress(model: Any) -> bool:
    kind = type(model)
    if kind not in _TAKES_COMPUTE_STRESS:
        target = model.forward if isinstance(model, torch.nn.Module) else model
        try:
            parameters = inspect.signature(target).parameters
        except (TypeError, ValueError):
            parameters = {}
        _TAKES_COMPUTE_STRESS[kind] = "compute_stress" in parameters
    return _TAKES_COMPUTE_STRESS[kind]


def call_model(model: Any, state: SimState, *, compute_stress: bool) -> dict[str, torch.Tensor]:
    """``model(state)``; our models also get ``compute_stress`` (others decide by their own attribute).

    The engine runs without autograd (our models need no graph for forces); another model
    (torch-sim's ``ModelInterface``) may take its forces by autograd, so it runs with grad mode
    on and its outputs are detached."""
    if _takes_compute_stress(model):
        return model(state, compute_stress=compute_stress)
    with torch.enable_grad():
        out = model(state)
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in out.items()}


def deformation_gradient(state: OptimState) -> torch.Tensor:
    """``[n_systems, 3, 3]``: F with cell = reference_cell · Fᵀ (ASE's UnitCellFilter)."""
    return torch.linalg.solve(state.reference_cell, state.cell).mT


def evaluate(state: OptimState, model: Any) -> None:
    """Run the model on the whole batch; store energies, forces, stresses and the cell forces."""
    out = call_model(model, state, compute_stress=state.relax_cell)
    state.energy = out["energy"].detach()
    state.forces = out["forces"].detach()
    if out.get("stress") is not None:
        state.stress = out["stress"].detach()
    state.evaluated = torch.ones_like(state.evaluated)
    if state.relax_cell:
        if out.get("stress") is None:
            raise ValueError("cell relaxation needs a model that returns the stress (compute_stress)")
        volume = torch.linalg.det(state.cell).abs()
        eye = torch.eye(3, dtype=state.dtype, device=state.device)
        virial = -volume.view(-1, 1, 1) * (state.stress + state.pressure * eye)
        deform = deformation_gradient(state)
        virial = torch.linalg.solve(deform, virial.mT).mT
        if state.hydrostatic_strain:  # ASE: virial -> diag(tr/3)
            virial = (virial.diagonal(dim1=1, dim2=2).sum(1) / 3.0).view(-1, 1, 1) * eye
        if state.constant_volume:  # ASE: project out the trace
            virial = virial - (virial.diagonal(dim1=1, dim2=2).sum(1) / 3.0).view(-1, 1, 1) * eye
        cell_factor = state.cell_factor.view(-1, 1, 1)
        state.cell_forces = virial * state.system_pbc.all(dim=1).view(-1, 1, 1) / cell_factor


def dof_forces(state: OptimState) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forces on the DOF, eV/Å: atoms (f·F under the cell filter) and cell rows (or None)."""
    if not state.relax_cell:
        return state.forces, None
    return rows_times(state.forces, deformation_gradient(state), state), state.cell_forces


def dof_positions(state: OptimState) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The DOF, Å: atom positions (x·F⁻ᵀ under the cell filter) and cell rows cell_factor·F (or None)."""
    if not state.relax_cell:
        return state.positions, None
    deform = deformation_gradient(state)
    return rows_solved(state.positions, deform, state), state.cell_factor.view(-1, 1, 1) * deform


def move_dofs(state: OptimState, d_atoms: torch.Tensor, d_cell: torch.Tensor | None) -> None:
    """Displace the DOF by ``(d_atoms, d_cell)`` (Å; zero rows for systems that stay)."""
    if not state.relax_cell:
        state.positions = state.positions + d_atoms
        return
    deform = deformation_gradient(state)
    new_deform = deform + d_cell / state.cell_factor.view(-1, 1, 1)
    frame = rows_solved(state.positions, deform, state)  # pos @ F^-T
    state.positions = rows_times(frame + d_atoms, new_deform.mT, state)
    state.cell = state.reference_cell @ new_deform.mT


def rows_times(rows: torch.Tensor, matrices: torch.Tensor, state: SimState) -> torch.Tensor:
    """``[n_atoms, 3]``: each atom's row times its system's ``[3, 3]`` matrix (one matmul for one system)."""
    if state.n_systems == 1:
        return rows @ matrices[0]
    return torch.einsum("ni,nij->nj", rows, matrices[state.system_idx])


def rows_solved(rows: torch.Tensor, matrices: torch.Tensor, state: SimState) -> torch.Tensor:
    """``[n_atoms, 3]``: each atom's row times its system's matrix⁻ᵀ (``solve(M, row)``; one solve for one system)."""
    if state.n_systems == 1:
        return torch.linalg.solve(matrices[0], rows.mT).mT
    return torch.linalg.solve(matrices[state.system_idx], rows.unsqueeze(2)).squeeze(2)


def per_atom(values: torch.Tensor, state: SimState) -> torch.Tensor:
    """``[n_systems]`` values broadcast over the atoms: ``[n_atoms, 1]``, or ``[1, 1]`` for one
    system (no gather of n_atoms values per use: a FIRE step of one large cell uses ~10)."""
    if state.n_systems == 1:
        return values.view(1, 1)
    return values[state.system_idx].unsqueeze(1)


def per_system_abs_max(values: torch.Tensor, state: SimState) -> torch.Tensor:
    """``[n_systems]`` largest ``|value|`` of the ``[n_atoms, 3]`` ``values`` per system (0 for no atoms)."""
    magnitude = values.abs()
    if state.n_systems == 1:
        return magnitude.amax().view(1) if magnitude.numel() else magnitude.new_zeros(1)
    rows = torch.maximum(torch.maximum(magnitude[:, 0], magnitude[:, 1]), magnitude[:, 2])
    out = torch.zeros(state.n_systems, dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, state.system_idx, rows, reduce="amax")


def per_system_sum(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """``[n]`` sums of ``values`` grouped by ``index``."""
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, index, values)


def dof_dot(
    state: SimState, a: tuple[torch.Tensor, torch.Tensor | None], b: tuple[torch.Tensor, torch.Tensor | None]
) -> torch.Tensor:
    """``[n_systems]`` dot products of two DOF vectors."""
    out = per_system_sum(row_dot(a[0], b[0]), state.system_idx, state.n_systems)
    if a[1] is not None:
        out = out + (a[1] * b[1]).sum((1, 2))
    return out


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[n]`` row-wise dot products of two ``[n, 3]`` tensors, summed column by column in order.

    The same numbers as ``(a * b).sum(1)``, but fast for any layout: a model's forces are often a
    transposed ``[3, n]`` buffer, where torch's row reductions (``sum(1)``, ``norm(dim=1)``) take
    ~40x longer (1 ms at 11k atoms on a CPU core, a tenth of an LJ relaxation step).
    """
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def max_row_norm(state: SimState, atoms: torch.Tensor, cell: torch.Tensor | None) -> torch.Tensor:
    """``[n_systems]`` largest row norm of a DOF vector (ASE's per-atom norm, cell rows included)."""
    out = torch.zeros(state.n_systems, dtype=atoms.dtype, device=atoms.device)
    squared = out.scatter_reduce(0, state.system_idx, row_dot(atoms, atoms), reduce="amax", include_self=True)
    out = squared.sqrt()  # the largest norm is the root of the largest square (sqrt is monotonic)
    if cell is not None:
        out = torch.maximum(out, cell.norm(dim=2).amax(dim=1))
    return out


def max_force(state: OptimState) -> torch.Tensor:
    """``[n_systems]`` largest force norm on any atom (and cell row), eV/Å; inf where not evaluated."""
    out = max_row_norm(state, *dof_forces(state))
    return torch.where(torch.isnan(out), torch.full_like(out, float("inf")), out)


def moving_systems(state: OptimState, active: torch.Tensor | None) -> torch.Tensor:
    """``[n_systems]`` systems that take a step now: evaluated and (if given) active."""
    return state.evaluated.clone() if active is None else state.evaluated & active
