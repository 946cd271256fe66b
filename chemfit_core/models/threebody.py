"""The torch model shared by the three-body potentials (Stillinger–Weber, Tersoff).

:class:`ThreeBodyModel`: parameter tables ``[n, n, n]`` per file column (entry i-j-k at
``[i, j, k]``, types in the order of ``species``), directed bonds from the half neighbour
list (:class:`Bonds`), triplets of bonds sharing their centre (:func:`triplet_indices`), and
forces and stress from one autograd pass over the pair vectors (like
:class:`~chemfit_core.models.eam.EAM`). The parameter files are read and written by
:mod:`chemfit_core.models.triplet_file`; the fit of some of their entries is
:class:`~chemfit_core.models.threebody_form.ThreeBodyForm`.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from chemfit_core.engine.state import SimState
from chemfit_core.models.base import Model
from chemfit_core.models.triplet_file import (
    ColumnRules,
    Triplet,
    TripletFile,
    read_triplet_file,
    tied_entries,
    write_triplet_file,
)

__all__ = [
    "Bonds",
    "ColumnRules",
    "ThreeBodyModel",
    "Triplet",
    "TripletFile",
    "entry_index",
    "gather",
    "read_triplet_file",
    "tied_entries",
    "triplet_indices",
    "write_triplet_file",
]


def triplet_indices(centre: torch.Tensor, n_atoms: int, ordered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Bond pairs ``(a, b)`` sharing their centre atom: every ``a ≠ b`` when ``ordered``,
    else each unordered pair once. Memory grows with Σ_i (bonds of i)²."""
    device = centre.device
    order = torch.argsort(centre, stable=True)
    sorted_centre = centre[order]
    counts = torch.bincount(sorted_centre, minlength=n_atoms)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=device) - start[sorted_centre]
    group = counts[sorted_centre]
    partners = group - 1 if ordered else group - 1 - rank
    first = torch.repeat_interleave(torch.arange(len(order), device=device), partners)
    offsets = torch.cumsum(partners, 0) - partners
    position = torch.arange(len(first), device=device) - offsets[first]
    if ordered:  # partners of rank r: every rank but r
        second = start[sorted_centre[first]] + position + (position >= rank[first]).long()
    else:  # partners of rank r: ranks r+1, r+2, ...
        second = first + 1 + position
    return order[first], order[second]


_SCRATCH: list[str] = []


def _scratch_dir() -> Path:
    """A folder for parameter files of models that have none, removed when Python exits."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="chemfit-threebody-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return Path(_SCRATCH[0])


class ThreeBodyModel(Model):
    """Base of the three-body models: one table ``[n, n, n]`` per file column.

    Subclasses set ``style``, ``columns``, ``rules`` (:class:`ColumnRules`), ``suffix``
    and implement :meth:`cutoffs` and :meth:`energy`. Fittable columns are
    ``nn.Parameter``\\ s (gradients by autograd), fixed ones buffers.

    Args:
        elements: chemical symbols in type order.
        values: ``[n, n, n, n_columns]`` entries in the file's units (eV, Å).
        file: the parameter file these values are (LAMMPS runs it), if any.
        skin: neighbour-list skin, Å.  compute_stress: return the stress.
    """

    style = ""
    columns: tuple[str, ...] = ()
    rules = ColumnRules()
    suffix = ""

    def __init__(
        self,
        elements: Sequence[str],
        values: np.ndarray,
        file: Path | None = None,
        skin: float = 0.5,
        compute_stress: bool = True,
    ):
        from ase.data import atomic_numbers

        values = np.asarray(values, dtype=np.float64)
        self.elements = list(elements)
        n = len(self.elements)
        if values.shape != (n, n, n, len(self.columns)):
            raise ValueError(f"{self.style} needs values [{n}, {n}, {n}, {len(self.columns)}], got {values.shape}")
        pair_cut, triplet_cut = self.cutoffs({c: torch.from_numpy(values[..., k]) for k, c in enumerate(self.columns)})
        cutoff = max(float(pair_cut.max()), float(triplet_cut.max()))
        super().__init__(cutoff, [atomic_numbers[e] for e in self.elements], skin, compute_stress)
        self.file = file
        for k, column in enumerate(self.columns):
            table = torch.from_numpy(values[..., k].copy())
            if column in self.rules.fixed:
                self.register_buffer(column, table)
            else:
                self.register_parameter(column, torch.nn.Parameter(table))

    @classmethod
    def check_entry(cls, row: dict[str, float]) -> str | None:
        """Why LAMMPS rejects an entry's values, or None."""
        return None

    @classmethod
    def read(cls, path: Path | str, elements: Sequence[str] | None = None) -> TripletFile:
        """The file's entries for ``elements`` (default: all), checked as LAMMPS checks them."""
        return read_triplet_file(path, cls.columns, cls.style, elements, cls.check_entry)

    @classmethod
    def from_file(cls, path: Path | str, species: Sequence[int] | None = None, **options) -> ThreeBodyModel:
        """The model of a LAMMPS parameter file; ``species`` (atomic numbers) picks and orders
        the elements (default: all of the file's, in order of first appearance)."""
        from ase.data import chemical_symbols

        elements = None if species is None else [chemical_symbols[z] for z in species]
        file = cls.read(path, elements)
        return cls(file.elements, file.values, file=Path(path).resolve(), **options)  # LAMMPS runs elsewhere

    def values(self) -> np.ndarray:
        """Current entries ``[n, n, n, n_columns]`` (float64)."""
        return np.stack([getattr(self, c).detach().double().cpu().numpy() for c in self.columns], axis=-1)

    def write(self, path: Path | str) -> Path:
        """Write the model's parameter file (LAMMPS reads it); the model then runs from it."""
        header = [f"{self.style} parameters written by chemfit_core", f"columns: {' '.join(self.columns)}"]
        self.file = write_triplet_file(Path(path).resolve(), self.elements, self.values(), header)
        return self.file

    def lammps_commands(self, species: Sequence[str]) -> list[str]:
        """``pair_style``/``pair_coeff`` lines (types in ``species`` order); a model that
        has no file (or has been changed since) gets one written in a scratch folder."""
        if self.file is None or not np.array_equal(self.read(self.file, self.elements).values, self.values()):
            self.write(Path(tempfile.mkdtemp(dir=_scratch_dir())) / f"model.{self.suffix}")
        return [f"pair_style {self.style}", f"pair_coeff * * {self.file} {' '.join(species)}"]

    def bond_guess(self, element: int) -> float:
        """A rough bond length (Å) of element ``element`` alone, to search its crystal from."""
        raise NotImplementedError

    def cutoffs(self, tables: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cutoffs (Å) ``[n, n]`` of a bond i→j, and ``[n, n, n]`` of the bond i→k of triplet i-j-k."""
        raise NotImplementedError

    def energy(
        self, bonds: Bonds, tables: dict[str, torch.Tensor], n_systems: int, n_atoms: int
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-system energies (eV) of the directed ``bonds`` (within :attr:`cutoff`)."""
        raise NotImplementedError

    def forward(self, state: SimState, compute_stress: bool | None = None) -> dict[str, torch.Tensor]:
        """Energies (eV), forces (eV/Å) and stresses (eV/Å³) of every system of ``state``."""
        stress_wanted = self.compute_stress if compute_stress is None else compute_stress
        types = self.types(state)
        pairs = self.neighbor_list.pairs(state)
        tables = {c: getattr(self, c).to(state.dtype) for c in self.columns}
        needs_graph = torch.is_grad_enabled() and any(t.requires_grad for t in tables.values())
        with torch.enable_grad():
            vectors = pairs.vectors(state).detach()
            r2 = (vectors * vectors).sum(0)
            inside = torch.nonzero(r2 < self.cutoff**2).squeeze(1)
            i, j, system = pairs.i[inside], pairs.j[inside], pairs.system[inside]
            vectors = vectors[:, inside].requires_grad_(True)
            bonds = Bonds.of(i, j, system, vectors, types)
            energy = self.energy(bonds, tables, state.n_systems, state.n_atoms)
            if energy.requires_grad:
                (grad,) = torch.autograd.grad(energy.sum(), vectors, create_graph=needs_graph, allow_unused=True)
            else:
                grad = None
        if grad is None:
            grad = torch.zeros_like(vectors)
        forces = torch.zeros((3, state.n_atoms), dtype=grad.dtype, device=state.device)
        forces = forces.index_add(1, i, grad).index_add(1, j, -grad).T
        out = {"energy": energy if needs_graph else energy.detach(), "forces": forces}
        if stress_wanted:
            virial = torch.zeros(state.n_systems, 3, 3, dtype=grad.dtype, device=state.device)
            virial = virial.index_add(0, system, torch.einsum("ap,bp->pab", vectors.detach(), grad))
            volume = torch.linalg.det(state.cell).abs().clamp_min(1e-30)
            stress = virial / volume.view(-1, 1, 1)
            out["stress"] = torch.where(state.system_pbc.all(dim=1).view(-1, 1, 1), stress, torch.zeros_like(stress))
        return out


@dataclasses.dataclass
class Bonds:
    """Directed bonds i→j: both directions of every pair within the model's cutoff.

    ``vectors`` ``[3, n_bonds]`` are r_j − r_i (Å), differentiable functions of the pair
    vectors. ``owned`` ``[n_pairs]``: the bond of each pair from which LAMMPS evaluates its
    pair term (its ``i``), by LAMMPS's rule on atom IDs (numbered as in the structure):
    the larger ID when the IDs add up to an odd number, the smaller when even.
    """

    centre: torch.Tensor
    neighbour: torch.Tensor
    system: torch.Tensor
    vectors: torch.Tensor
    ti: torch.Tensor
    tj: torch.Tensor
    owned: torch.Tensor

    @classmethod
    def of(cls, i: torch.Tensor, j: torch.Tensor, system: torch.Tensor, vectors: torch.Tensor, types: torch.Tensor):
        # atom IDs are the indices within each system plus one: a constant shift of the global
        # indices, which keeps both the order and the parity of i + j
        from_i = torch.where((i + j) % 2 == 1, i > j, i < j) | (i == j)
        owned = torch.arange(len(i), device=i.device) + len(i) * (~from_i).long()
        centre, neighbour = torch.cat([i, j]), torch.cat([j, i])
        both = torch.cat([system, system])
        return cls(centre, neighbour, both, torch.cat([vectors, -vectors], 1), types[centre], types[neighbour], owned)

    def select(self, keep: torch.Tensor) -> Bonds:
        """The bonds at the indices ``keep`` (``owned`` is not carried over)."""
        return Bonds(
            self.centre[keep],
            self.neighbour[keep],
            self.system[keep],
            self.vectors[:, keep],
            self.ti[keep],
            self.tj[keep],
            keep[:0],
        )


def entry_index(n: int, ti: torch.Tensor, tj: torch.Tensor, tk: torch.Tensor) -> torch.Tensor:
    """Flat index of entry ``(ti, tj, tk)`` in a table ``[n, n, n]``."""
    return (ti * n + tj) * n + tk


def gather(table: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Entries of a table ``[n, n, n]`` at flat ``index``; the scalar for one species (None)."""
    flat = table.reshape(-1)
    return flat[0] if index is None else flat[index]
