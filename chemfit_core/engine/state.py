"""Batched atomic structures: one flat atom array plus a per-atom system index.

:class:`SimState` follows torch-sim's model — the only ways to change a batch are
splitting and concatenating — with two differences: every system carries its
own periodic boundary conditions (``system_pbc`` is ``[n_systems, 3]``), so a batch
may mix bulk crystals, slabs and molecules — ``pbc`` reads as torch-sim's ``[3]``
vector whenever the systems agree, and as ``[n_systems, 3]`` only for a mixed batch;
and ``cell`` holds the lattice vectors as rows, as ASE and LAMMPS write them
(``column_vector_cell`` gives torch-sim's layout). Units: Å, amu; results in eV, eV/Å, eV/Å³.

Subclasses (the FIRE state, say) declare extra per-atom and per-system tensors in
``_atom_attributes`` / ``_system_attributes``; split, concatenation, indexing and
:meth:`SimState.pop` carry them along.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

T = TypeVar("T", bound="SimState")


@dataclasses.dataclass(eq=False)
class SimState:
    """Atoms of one or more systems, batched.

    Attributes:
        positions: ``[n_atoms, 3]`` Cartesian positions, Å.
        masses: ``[n_atoms]`` atomic masses, amu.
        cell: ``[n_systems, 3, 3]`` lattice vectors as rows, Å.
        pbc: periodic along each lattice vector: given as a bool, a ``[3]`` vector for
            every system or ``[n_systems, 3]``; read back as ``[3]`` when all systems
            agree, else ``[n_systems, 3]``. ``system_pbc`` is always ``[n_systems, 3]``.
        atomic_numbers: ``[n_atoms]``.
        system_idx: ``[n_atoms]`` system of each atom, non-decreasing from 0.
        info: one dict per system (extxyz ``info``: labels, reference data...).
    """

    positions: torch.Tensor
    masses: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    atomic_numbers: torch.Tensor
    system_idx: torch.Tensor | None = None
    info: list[dict[str, Any]] | None = None
    neighbor_lists: list[Any] | None = dataclasses.field(default=None, repr=False)

    _atom_attributes: ClassVar[tuple[str, ...]] = ("positions", "masses", "atomic_numbers")
    _system_attributes: ClassVar[tuple[str, ...]] = ("cell", "pbc")
    _system_lists: ClassVar[tuple[str, ...]] = ("info", "neighbor_lists")

    def __post_init__(self) -> None:
        n_atoms = self.positions.shape[0]
        if self.positions.ndim != 2 or self.positions.shape[1] != 3:
            raise ValueError(f"positions must be [n_atoms, 3], got {tuple(self.positions.shape)}")
        device = self.positions.device
        if self.system_idx is None:
            self.system_idx = torch.zeros(n_atoms, dtype=torch.long, device=device)
        self.system_idx = self.system_idx.to(device=device, dtype=torch.long)
        if self.cell.ndim == 2:
            self.cell = self.cell.unsqueeze(0)
        n_systems = self.cell.shape[0]
        self.pbc = self.__dict__["system_pbc"]  # coerced to [n_systems, 3] now that the cell is 3-D
        if self.info is None:
            self.info = [{} for _ in range(n_systems)]
        if self.neighbor_lists is None or len(self.neighbor_lists) != n_systems:
            self.neighbor_lists = [None] * n_systems
        for name in ("masses", "atomic_numbers", "system_idx"):
            if getattr(self, name).shape[0] != n_atoms:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} entries for {n_atoms} atoms")
        if self.system_pbc.shape != (n_systems, 3) or len(self.info) != n_systems:
            raise ValueError(f"pbc must be [n_systems, 3] and info one dict per system ({n_systems})")
        if n_atoms and (int(self.system_idx.max()) != n_systems - 1 or bool((self.system_idx.diff() < 0).any())):
            raise ValueError("system_idx must run from 0 to n_systems - 1 without decreasing")

    # -- sizes ------------------------------------------------------------------------------
    @property
    def n_atoms(self) -> int:
        """Number of atoms in the batch."""
        return self.positions.shape[0]

    @property
    def n_systems(self) -> int:
        """Number of systems in the batch."""
        return self.cell.shape[0]

    @property
    def n_atoms_per_system(self) -> torch.Tensor:
        """``[n_systems]`` atom counts."""
        return torch.bincount(self.system_idx, minlength=self.n_systems)

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of positions and cells."""
        return self.positions.dtype

    @property
    def volume(self) -> torch.Tensor:
        """``[n_systems]`` cell volumes, Å³."""
        return torch.linalg.det(self.cell).abs()

    @property
    def row_vector_cell(self) -> torch.Tensor:
        """Lattice vectors as rows (this class's own layout)."""
        return self.cell

    @property
    def column_vector_cell(self) -> torch.Tensor:
        """Lattice vectors as columns (torch-sim's layout)."""
        return self.cell.mT

    # -- copying and moving ---------------------------------------------------------------
    def _fields(self) -> dict[str, Any]:
        """Every dataclass field by name, ``pbc`` in its per-system ``[n_systems, 3]`` form."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["pbc"] = self.system_pbc
        return values

    def clone(self: T) -> T:
        """Deep copy (tensors cloned, info dicts copied)."""
        values = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in self._fields().items()}
        values["info"] = [dict(i) for i in self.info]
        values["neighbor_lists"] = list(self.neighbor_lists)
        return type(self)(**values)

    def to(self: T, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> T:
        """Copy on another device and/or with another float dtype (integer tensors keep theirs)."""
        values = {}
        for key, value in self._fields().items():
            if isinstance(value, torch.Tensor):
                value = value.to(device=device) if device is not None else value
                if dtype is not None and value.is_floating_point():
                    value = value.to(dtype=dtype)
            values[key] = value
        if device is not None and torch.device(device) != self.device:
            values["neighbor_lists"] = None  # built on the old device
        return type(self)(**values)

    # -- selecting, splitting, joining -----------------------------------------------------
    def _scopes(self) -> tuple[set[str], set[str]]:
        return set(self._atom_attributes), set(self._system_attributes)

    def __getitem__(self: T, systems: int | slice | Sequence[int] | torch.Tensor) -> T:
        """The systems ``systems`` (in the order given) as a new batch."""
        index = _system_index_list(systems, self.n_systems)
        return self._select(index)

    def _select(self: T, systems: list[int]) -> T:
        device = self.device
        sys_t = torch.as_tensor(systems, dtype=torch.long, device=device)
        starts = self._offsets()
        counts = self.n_atoms_per_system
        atom_index = (
            torch.cat([torch.arange(int(starts[s]), int(starts[s] + counts[s]), device=device) for s in systems])
            if systems
            else torch.zeros(0, dtype=torch.long, device=device)
        )
        atom_attrs, system_attrs = self._scopes()
        values = {}
        for key, value in self._fields().items():
            if value is None:
                values[key] = None
            elif key in atom_attrs:
                values[key] = value[atom_index]
            elif key in system_attrs:
                values[key] = value[sys_t]
            elif key == "system_idx":
                values[key] = torch.repeat_interleave(torch.arange(len(systems), device=device), counts[sys_t])
            elif key in self._system_lists:
                values[key] = [value[s] for s in systems]
            else:
                values[key] = value
        return type(self)(**values)

    def _offsets(self) -> torch.Tensor:
        counts = self.n_atoms_per_system
        return torch.cumsum(counts, 0) - counts

    def split(self: T) -> list[T]:
        """One single-system state per system, in order."""
        return [self._select([s]) for s in range(self.n_systems)]

    def pop(self: T, systems: int | Sequence[int] | torch.Tensor) -> list[T]:
        """Remove ``systems`` from this batch in place and return them as single states."""
        index = sorted(set(_system_index_list(systems, self.n_systems)))
        popped = [self._select([s]) for s in index]
        keep = [s for s in range(self.n_systems) if s not in set(index)]
        remaining = self._select(keep)
        for key, value in remaining._fields().items():
            setattr(self, key, value)
        return popped

    @classmethod
    def from_state(cls: type[T], state: SimState, **extra: Any) -> T:
        """A new ``cls`` holding copies of the fields ``state`` shares with it, ``extra`` overriding.

        Fields only ``cls`` has take their defaults unless given in ``extra``; any
        field may be overridden (``pbc=[True, True, False]``, ``positions=...``).
        Used when a plain state joins a batch of a subclass (a structure entering
        a running relaxation gets a fresh optimiser state this way). ``state`` is
        never modified or shared: tensors are cloned, ``info`` dicts copied.
        """
        own = {f.name for f in dataclasses.fields(cls)}
        base = {k: _copy_value(v) for k, v in state._fields().items() if k in own and k not in extra}
        if "info" in base:
            base["info"] = [dict(i) for i in state.info]
        if "neighbor_lists" in base and {"positions", "cell", "pbc"} & set(extra):
            base["neighbor_lists"] = None  # built for the geometry being replaced
        return cls._with_defaults(base, extra)

    @classmethod
    def _with_defaults(cls: type[T], base: dict[str, Any], extra: dict[str, Any]) -> T:
        return cls(**base, **extra)

    # -- ASE --------------------------------------------------------------------------------
    def to_atoms(self) -> list[Any]:
        """One ``ase.Atoms`` per system, ``info`` kept."""
        import ase

        out = []
        positions = self.positions.detach().cpu().numpy()
        numbers = self.atomic_numbers.cpu().numpy()
        masses = self.masses.detach().cpu().numpy()
        cells = self.cell.detach().cpu().numpy()
        pbcs = self.system_pbc.cpu().numpy()
        bounds = np.concatenate([[0], np.cumsum(self.n_atoms_per_system.cpu().numpy())])
        for s in range(self.n_systems):
            a, b = bounds[s], bounds[s + 1]
            atoms = ase.Atoms(
                numbers=numbers[a:b], positions=positions[a:b], cell=cells[s], pbc=pbcs[s], masses=masses[a:b]
            )
            atoms.info.update(self.info[s])
            out.append(atoms)
        return out


def _get_pbc(state: SimState) -> torch.Tensor:
    """torch-sim's ``[3]`` when every system has the same pbc, else ``[n_systems, 3]``."""
    per_system = state.system_pbc
    if per_system.shape[0] and bool((per_system == per_system[0]).all()):
        return per_system[0]
    return per_system


def _set_pbc(state: SimState, value: Any) -> None:
    """Store ``pbc`` per system: a bool or a ``[3]`` vector (torch-sim's forms) applies to every system."""
    if "cell" in state.__dict__ and "positions" in state.__dict__:
        cell = state.__dict__["cell"]
        value = _as_pbc(value, cell.shape[0] if cell.ndim == 3 else 1, state.__dict__["positions"].device)
    state.__dict__["system_pbc"] = value  # raw until __post_init__ knows the number of systems


# The dataclass field ``pbc`` (constructor argument, copied by split/concatenate as
# ``system_pbc``) reads and writes through this property.
SimState.pbc = property(_get_pbc, _set_pbc, doc=_get_pbc.__doc__)  # type: ignore[assignment]


def _as_pbc(value: Any, n_systems: int, device: torch.device) -> torch.Tensor:
    """``[n_systems, 3]`` bool from a bool, a ``[3]`` vector (torch-sim's forms) or ``[n_systems, 3]``."""
    pbc = torch.as_tensor(value, dtype=torch.bool, device=device)
    if pbc.ndim == 0:
        pbc = pbc.expand(3)
    if pbc.ndim == 1:
        pbc = pbc.expand(n_systems, 3)
    return pbc.clone()


def _copy_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return list(value)
    return value


def detach_state_graph(state: T) -> T:
    """Detach, in place, every tensor of ``state`` that carries an autograd graph; return ``state``.

    A completed state that keeps a graph-carrying tensor (a model's ``energy``
    with ``requires_grad``) pins that step's whole forward graph in memory.
    Tensors without a graph are left as they are (same objects, same values).
    """
    for field in dataclasses.fields(state):
        value = getattr(state, field.name)
        if isinstance(value, torch.Tensor) and value.requires_grad:
            setattr(state, field.name, value.detach())
    return state


def _system_index_list(systems: int | slice | Sequence[int] | torch.Tensor, n_systems: int) -> list[int]:
    if isinstance(systems, int):
        systems = [systems]
    elif isinstance(systems, slice):
        systems = list(range(n_systems))[systems]
    elif isinstance(systems, torch.Tensor):
        systems = (
            torch.nonzero(systems).flatten().tolist() if systems.dtype == torch.bool else systems.flatten().tolist()
        )
    out = [s + n_systems if s < 0 else int(s) for s in systems]
    bad = [s for s in out if not 0 <= s < n_systems]
    if bad:
        raise IndexError(f"system indices {bad} out of range for {n_systems} systems")
    return out


def concatenate_states(states: Sequence[T]) -> T:
    """Join states (of one type, on one device) into one batch, systems in order."""
    if not states:
        raise ValueError("concatenate_states needs at least one state")
    cls = max((type(s) for s in states), key=lambda c: len(c.__mro__))
    states = [s if type(s) is cls else cls.from_state(s) for s in states]
    first = states[0]
    atom_attrs, system_attrs = first._scopes()
    values: dict[str, Any] = {}
    fields = [s._fields() for s in states]
    for key in fields[0]:
        items = [f[key] for f in fields]
        if any(item is None for item in items):
            if not all(item is None for item in items):
                raise ValueError(f"cannot join states where only some have {key}")
            values[key] = None
        elif key in atom_attrs or key in system_attrs:
            values[key] = torch.cat(items)
        elif key == "system_idx":
            offsets = np.cumsum([0] + [s.n_systems for s in states[:-1]])
            values[key] = torch.cat([idx + int(o) for idx, o in zip(items, offsets)])
        elif key in first._system_lists:
            values[key] = [item for s in states for item in getattr(s, key)]
        else:
            values[key] = items[0]
    return cls(**values)


def atoms_to_state(
    atoms: Any | Iterable[Any],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> SimState:
    """Batch one ``ase.Atoms`` or a sequence of them; ``info`` dicts are kept."""
    import ase

    atoms_list = [atoms] if isinstance(atoms, ase.Atoms) else list(atoms)
    if not atoms_list:
        raise ValueError("no structures given")
    counts = [len(a) for a in atoms_list]
    return SimState(
        positions=torch.tensor(np.concatenate([a.positions for a in atoms_list]), dtype=dtype, device=device),
        masses=torch.tensor(np.concatenate([a.get_masses() for a in atoms_list]), dtype=dtype, device=device),
        cell=torch.tensor(np.stack([a.cell.array for a in atoms_list]), dtype=dtype, device=device),
        pbc=torch.tensor(np.stack([a.pbc for a in atoms_list]), dtype=torch.bool, device=device),
        atomic_numbers=torch.tensor(np.concatenate([a.numbers for a in atoms_list]), dtype=torch.long, device=device),
        system_idx=torch.repeat_interleave(
            torch.arange(len(atoms_list), device=device), torch.tensor(counts, device=device)
        ),
        info=[dict(a.info) for a in atoms_list],
    )
