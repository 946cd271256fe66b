"""Machinery shared by the three-body potentials (Stillinger–Weber, Tersoff).

- LAMMPS's per-element-triplet parameter files: :func:`read_triplet_file` reads them as
  LAMMPS's ``PotentialFileReader`` does (``#`` comments, an entry may span lines, only
  entries whose three elements are all modelled are kept; a duplicate or missing entry
  and an illegal value are errors naming the file and the line), :func:`write_triplet_file`
  writes them back (every value exactly, as ``repr`` of the float).
- :class:`ThreeBodyModel`: parameter tables ``[n, n, n]`` per file column (entry i-j-k at
  ``[i, j, k]``, types in the order of ``species``), directed bonds from the half
  neighbour list, triplets of bonds sharing their centre, and forces and stress from one
  autograd pass over the pair vectors (like :class:`~chemfit_core.models.eam.EAM`).
- :class:`ColumnRules` and :func:`tied_entries`: which entries of a column the energy
  uses and which a fit keeps equal (LAMMPS picks one of them by atom IDs or neighbour
  order), i.e. which entries are fitted independently;
- :class:`ThreeBodyForm`: a fit of some entries of a file (the forms ``sw``, ``tersoff``).
"""

from __future__ import annotations

import atexit
import dataclasses
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from chemfit_core.engine.state import SimState
from chemfit_core.models.base import Model
from chemfit_core.models.forms import PotentialForm
from chemfit_core.models.registry import potential_file

Triplet = tuple[int, int, int]
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")  # what LAMMPS reads as a number


@dataclasses.dataclass(frozen=True)
class ColumnRules:
    """Which entries of each column matter, and which a fit keeps equal.

    ``pair_only``: columns used from i-j-j entries only (two-body and bond parameters);
    ``swap_ij``: columns whose i-j-j and j-i-i entries are one fitted value (LAMMPS evaluates
    a pair term from one end, chosen by atom IDs: the models do the same, and a fit keeps
    the result independent of them); ``swap_jk``: columns whose i-j-k and i-k-j entries are
    one fitted value (LAMMPS takes j, k in neighbour-list order); ``fixed``: columns that
    cannot be fitted (integers, cutoff shortcuts).
    """

    pair_only: frozenset[str] = frozenset()
    swap_ij: frozenset[str] = frozenset()
    swap_jk: frozenset[str] = frozenset()
    fixed: frozenset[str] = frozenset()


def tied_entries(column: str, n: int, rules: ColumnRules) -> list[list[Triplet]]:
    """Classes of entries of ``column`` that the energy uses, each class one free value.

    Each class is sorted; its first entry names it. Entries the energy never reads
    (a pair-only column of an i-j-k entry with j ≠ k) are in no class.
    """
    seen: set[Triplet] = set()
    classes = []
    for entry in np.ndindex(n, n, n):
        i, j, k = entry
        if entry in seen or (column in rules.pair_only and j != k):
            continue
        members, todo = {entry}, [entry]
        while todo:
            a, b, c = todo.pop()
            partners = []
            if column in rules.swap_ij and b == c:
                partners.append((b, a, a))
            if column in rules.swap_jk:
                partners.append((a, c, b))
            for p in partners:
                if p not in members:
                    members.add(p)
                    todo.append(p)
        seen |= members
        classes.append(sorted(members))
    return classes


@dataclasses.dataclass
class TripletFile:
    """Entries of a parameter file for ``elements`` (in that order): ``values[i, j, k]`` holds
    the columns of entry i-j-k, ``lines[(i, j, k)]`` the line it starts on."""

    path: Path
    elements: list[str]
    columns: tuple[str, ...]
    values: np.ndarray  # [n, n, n, n_columns] float64
    lines: dict[Triplet, int]

    def name(self, entry: Triplet) -> str:
        """``A-B-C``: the entry's elements."""
        return "-".join(self.elements[t] for t in entry)


def read_triplet_file(
    path: Path | str,
    columns: Sequence[str],
    style: str,
    elements: Sequence[str] | None = None,
    check: Callable[[dict[str, float]], str | None] | None = None,
) -> TripletFile:
    """Read a LAMMPS parameter file of ``style`` (``sw``, ``tersoff``): three element names
    and ``len(columns)`` numbers per entry.

    ``elements``: the elements to keep (LAMMPS's ``pair_coeff * * file A B``), default all
    of the file's in order of first appearance. ``check(values)`` returns why an entry is
    illegal (LAMMPS's own test), or None. Errors name the file and the line.
    """
    from ase.data import atomic_numbers

    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the {style} parameter file ({exc})") from None
    width = 3 + len(columns)
    raw: list[tuple[int, list[str]]] = []
    number = 0
    while number < len(lines):
        words = lines[number].split("#", 1)[0].split()
        number += 1
        if not words:
            continue
        start = number
        while len(words) < width:
            if number >= len(lines):
                raise ValueError(
                    f"{path}:{start}: the entry starting here has {len(words)} of {width} words "
                    f"(three elements, then {', '.join(columns)}) when the file ends"
                )
            words += lines[number].split("#", 1)[0].split()
            number += 1
        raw.append((start, words))
    if elements is None:
        elements = list(dict.fromkeys(w for _, words in raw for w in words[:3]))
    elements = list(elements)
    for start, words in raw:
        for element in words[:3]:
            if element in elements and element not in atomic_numbers:
                raise ValueError(
                    f"{path}:{start}: {element!r} is not a chemical symbol (name the elements to read, "
                    "as the species of the model)"
                )
    n = len(elements)
    values = np.zeros((n, n, n, len(columns)))
    found: dict[Triplet, int] = {}
    for start, words in raw:
        if not all(w in elements for w in words[:3]):
            continue  # as LAMMPS: entries of other elements are skipped
        entry, name = tuple(elements.index(w) for w in words[:3]), "-".join(words[:3])
        if entry in found:
            raise ValueError(f"{path}:{start}: a second entry for {name} (the first is on line {found[entry]})")
        row = {}
        for column, word in zip(columns, words[3:]):
            if not _NUMBER.match(word):
                raise ValueError(f"{path}:{start}: {column} of {name} is {word!r}, not a number")
            row[column] = float(word)
        if len(words) > width:  # LAMMPS ignores what follows; it is more likely a mistake
            raise ValueError(
                f"{path}:{start}: {len(words)} words where a {style} entry has {width} "
                f"(three elements, then {', '.join(columns)})"
            )
        problem = check(row) if check else None
        if problem:
            raise ValueError(f"{path}:{start}: illegal {style} parameters for {name}: {problem}")
        values[entry] = [row[c] for c in columns]
        found[entry] = start
    missing = [e for e in np.ndindex(n, n, n) if e not in found]
    if missing:
        names = ", ".join("-".join(elements[t] for t in e) for e in missing)
        raise ValueError(f"{path}: no entry for {names} (a {style} file needs one per triplet of {elements})")
    return TripletFile(path, elements, tuple(columns), values, found)


def _number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def write_triplet_file(path: Path | str, elements: Sequence[str], values: np.ndarray, header: Sequence[str]) -> Path:
    """Write every entry i-j-k of ``values`` ``[n, n, n, n_columns]`` (two lines each, exact
    values); ``header`` lines become ``#`` comments after LAMMPS's ``UNITS: metal`` tag."""
    path = Path(path)
    split = (values.shape[-1] + 1) // 2
    out = ["# UNITS: metal CONTRIBUTOR: chemfit_core", *(f"# {line}" for line in header), ""]
    n = len(elements)
    for entry in np.ndindex(n, n, n):
        row = [_number(v) for v in values[entry]]
        out.append(" ".join(elements[t] for t in entry) + "  " + " ".join(row[:split]))
        out.append("    " + " ".join(row[split:]))
    path.write_text("\n".join(out) + "\n")
    return path


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
            out["stress"] = torch.where(state.pbc.all(dim=1).view(-1, 1, 1), stress, torch.zeros_like(stress))
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


def diamond_bond_length(model: Model, element: str, guess: float) -> float:
    """Nearest-neighbour distance (Å) of the lowest-energy diamond lattice of ``element``
    near ``guess``: a scan of ±30 %, a finer one around its minimum, then a parabola."""
    from ase.build import bulk

    from chemfit_core.engine.state import atoms_to_state

    centre, half_width = guess, 0.3 * guess
    for _ in range(2):
        distances = np.linspace(centre - half_width, centre + half_width, 41)
        cells = [bulk(element, "diamond", a=4 * d / np.sqrt(3), cubic=True) for d in distances]
        with torch.no_grad():
            out = model(atoms_to_state(cells, dtype=model.dtype), compute_stress=False)
        energies = out["energy"].double().numpy()
        k = int(np.clip(np.argmin(energies), 1, len(distances) - 2))
        centre, half_width = distances[k], 2 * (distances[1] - distances[0])
    e0, e1, e2 = energies[k - 1 : k + 2]
    curvature = e0 - 2 * e1 + e2
    h = distances[1] - distances[0]
    return float(centre + (0.5 * h * (e0 - e2) / curvature if curvature > 0 else 0.0))


@dataclasses.dataclass(frozen=True)
class ThreeBodyForm(PotentialForm):
    """A fit of some entries of a LAMMPS parameter file; the others stay as in the file.

    Options: ``file`` (a path, or the name of a file shipped with LAMMPS), ``species`` (the
    elements to read, in LAMMPS type order; default ``[]``: all of the file's, in order of
    first appearance) and ``fit``: what is fitted, each item a column (every entry of it the
    energy uses, e.g. ``epsilon``) or one entry (``epsilon:Si-Si-Si``). Parameters are named
    ``<column>:<A>-<B>-<C>`` (units of the file: eV, Å); entries a fit keeps equal
    (:class:`ColumnRules`) are one parameter, named by the first of them. LAMMPS runs the
    parameter file :meth:`lammps_commands` writes (``fitted.<suffix>``).
    """

    model_class: ClassVar[type[ThreeBodyModel]] = ThreeBodyModel
    option_help: ClassVar[Mapping[str, str]] = {
        "file": "a LAMMPS parameter file (a path or a file shipped with LAMMPS)"
    }

    def __post_init__(self) -> None:
        cls = self.model_class
        file = cls.read(potential_file(self.option("file")), list(self.option("species")) or None)
        if self.element not in file.elements:
            raise ValueError(f"{file.path} has no entries for {self.element}; it holds {file.elements}")
        items = self.option("fit")
        if isinstance(items, str) or not isinstance(items, Sequence) or not items:
            raise ValueError(f"{self.name}: fit must be a non-empty list of columns or entries, got {items!r}")
        n = len(file.elements)
        classes = {c: {tuple(m[0]): m for m in tied_entries(c, n, cls.rules)} for c in cls.columns}
        fitted: dict[str, tuple[int, list[Triplet]]] = {}
        for item in items:
            column, _, entry = str(item).partition(":")
            if column not in cls.columns:
                raise ValueError(f"{self.name}: fit names {item!r}; the columns are {', '.join(cls.columns)}")
            if column in cls.rules.fixed:
                raise ValueError(f"{self.name}: {column} cannot be fitted (it is not a smooth parameter)")
            chosen = list(classes[column].values())
            if entry:
                names = entry.split("-")
                if len(names) != 3 or not all(e in file.elements for e in names):
                    raise ValueError(f"{self.name}: fit names {item!r}; entries are A-B-C of {file.elements}")
                key = tuple(file.elements.index(e) for e in names)
                owner = [m for m in classes[column].values() if key in m]
                if not owner:
                    raise ValueError(
                        f"{self.name}: {column} of {entry} is never used by the energy: it cannot be fitted"
                    )
                if owner[0][0] != key:
                    raise ValueError(
                        f"{self.name}: {column}:{entry} must equal {column}:{file.name(owner[0][0])}: "
                        f"fit {column}:{file.name(owner[0][0])} (it sets both)"
                    )
                chosen = owner
            for members in chosen:
                fitted[f"{column}:{file.name(members[0])}"] = (cls.columns.index(column), members)
        object.__setattr__(self, "_file", file)
        object.__setattr__(self, "_fitted", fitted)

    @property
    def parameter_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._fitted)

    def file_values(self) -> dict[str, float]:
        """The parameter file's values of the fitted parameters (the natural start of a fit)."""
        return {name: float(self._file.values[members[0]][c]) for name, (c, members) in self._fitted.items()}

    def model(self, params, dtype=torch.float64):
        self.check(params)
        values = self._file.values.copy()
        for name, (c, members) in self._fitted.items():
            for entry in members:
                values[entry][c] = float(params[name])
        same = np.array_equal(values, self._file.values)
        path = self._file.path.resolve() if same else None
        return self.model_class(self._file.elements, values, file=path).to(dtype)

    def model_tensors(self, params):
        tables = {}
        for c, column in enumerate(self.model_class.columns):
            entries = [(e, params[name]) for name, (k, members) in self._fitted.items() if k == c for e in members]
            if entries:
                value = torch.stack([v.reshape(()) for _, v in entries])
                index = tuple(torch.tensor([e[axis] for e, _ in entries]) for axis in range(3))
                base = torch.from_numpy(self._file.values[..., c].copy()).to(value.dtype)
                tables[column] = base.index_put(index, value)
        return tables

    def lammps_commands(self, params, workdir=None):
        if workdir is None:
            raise ValueError(f"{self.name} reaches LAMMPS through a parameter file: give the folder to write it to")
        model = self.model(params)
        model.write(Path(workdir).resolve() / f"fitted.{model.suffix}")
        return model.lammps_commands(model.elements)

    def nearest_neighbour_A(self, params):
        model = self.model(params)
        e = self._file.elements.index(self.element)
        return diamond_bond_length(model, self.element, model.bond_guess(e))
