"""Crystal properties of a model, computed in-process with the batched relaxation engine.

:func:`crystal_properties` relaxes the crystal (cell included), then builds every strained,
defective and surface cell it needs from the relaxed lattice and relaxes all of them together
in one batch. The crystal is any ASE prototype of :data:`LATTICES` (elements and compounds:
``CrystalSetup("MgO", "rocksalt", 4.2)``) or a structure file. Properties (units in :func:`unit_of`):

- ``a0_A`` (cubic lattices; hexagonal: ``a0_A`` and ``c_A``; a structure file: ``a_A``,
  ``b_A``, ``c_A``), ``Ec_eV`` (eV/atom against the isolated atoms under the model);
- elastic constants from stress–strain (:mod:`chemfit_core.science.elastic`): cubic C11, C12,
  C44; hexagonal C11, C12, C13, C33, C44, C66; otherwise all 21 C_ij; ``B_GPa`` (Voigt);
- vacancy formation energies: ``vacancy_eV`` for an element, ``vacancy_<X>_eV`` per species of
  a compound (with the species' chemical potential from ``element_references``);
- ``formation_eV`` (eV/atom) against the elements' ground states (``element_references``);
- surface energies ``surface_111_J_m2``, ``surface_100_J_m2`` (fcc elements);
- structure energy differences ``E_<lattice>_eV`` (eV/atom above the ground state, elements).

Each property is a deterministic function of the parameters, so finite differences of it are
clean (no MD noise).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from chemfit_core.engine.relax import relax_structures
from chemfit_core.errors import ChemFitError
from chemfit_core.science.elastic import constants_of, elastic_constants, is_elastic_name, strained_cells, symmetry_of
from chemfit_core.units import EV_A2_TO_J_M2

LATTICES = ("sc", "fcc", "bcc", "hcp", "diamond", "zincblende", "rocksalt", "cesiumchloride", "fluorite", "wurtzite")
"""ASE prototypes (``ase.build.bulk`` crystal structures) a crystal target builds; or ``"file"``."""
PHASES = ("sc", "fcc", "bcc", "hcp", "diamond")
"""Elemental structures whose energy above the ground state is a property ``E_<phase>_eV``."""
PROPERTIES = (
    "a0_A",
    "c_A",
    "Ec_eV",
    "B_GPa",
    "C11_GPa",
    "C12_GPa",
    "C13_GPa",
    "C33_GPa",
    "C44_GPa",
    "C66_GPa",
    "vacancy_eV",
    "formation_eV",
    "surface_111_J_m2",
    "surface_100_J_m2",
    *(f"E_{phase}_eV" for phase in PHASES),
)
"""The properties of the common crystals; :func:`is_property` also accepts every C_ij and
``vacancy_<X>_eV``."""
_SPECIES_VACANCY = re.compile(r"vacancy_([A-Z][a-z]?)_eV")


def is_property(name: str) -> bool:
    """Whether ``name`` is a crystal property :func:`crystal_properties` can compute."""
    return (
        name in PROPERTIES or is_elastic_name(name) or bool(_SPECIES_VACANCY.fullmatch(name)) or name in ("a_A", "b_A")
    )


def unit_of(name: str) -> str:
    """The unit of a crystal property."""
    if name.endswith("_GPa"):
        return "GPa"
    if name.endswith("_J_m2"):
        return "J/m²"
    if name.endswith("_A"):
        return "Å"
    if name.startswith("vacancy"):
        return "eV"
    return "eV/atom"


class _Units(dict):
    """``UNITS[name]`` for any property name (kept for readers of the old mapping)."""

    def __missing__(self, key: str) -> str:
        return unit_of(key)


UNITS: Mapping[str, str] = _Units({name: unit_of(name) for name in PROPERTIES})
"""Unit of every crystal property (any name :func:`is_property` accepts)."""


@dataclasses.dataclass(frozen=True)
class CrystalSetup:
    """How the crystal properties are computed.

    Args:
        element: chemical symbol, or a compound's formula (``"MgO"``, ``"SiC"``, ``"CaF2"``).
        lattice: the ground state: one of :data:`LATTICES`, or ``"file"`` (``structure_file``).
        a_guess_A: starting lattice constant, Å (a hexagonal crystal's a).
        c_over_a: hexagonal c/a to start from (default: ideal √(8/3) for hcp, ASE's for wurtzite).
        structure_file: the crystal to start from, with ``lattice="file"`` (any ASE-readable file).
        strain: strain amplitude for the elastic constants.
        vacancy_cells: supercell size (n×n×n cells) for the vacancy.
        slab_layers: atomic layers of the surface slabs; vacuum in Å.
        fmax: relaxation threshold, eV/Å.
        element_references: ``{element: (lattice, a_guess_A)}``: each element's ground state, for
            ``formation_eV`` and a compound's vacancies (chemical potentials).
    """

    element: str
    lattice: str = "fcc"
    a_guess_A: float = 3.6
    strain: float = 0.005
    vacancy_cells: int = 3
    slab_layers: int = 8
    slab_vacuum_A: float = 12.0
    fmax: float = 1e-5
    max_steps: int = 5000
    c_over_a: float | None = None
    structure_file: str | None = None
    element_references: Mapping[str, tuple[str, float]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lattice not in (*LATTICES, "file"):
            raise ValueError(f"crystal lattice {self.lattice!r}: expected one of {', '.join(LATTICES)} or 'file'")
        if (self.lattice == "file") != (self.structure_file is not None):
            raise ValueError("a structure_file goes with lattice 'file', and lattice 'file' needs one")

    @property
    def species(self) -> list[str]:
        """The chemical symbols of the crystal, in formula order."""
        from ase.formula import Formula

        return list(Formula(self.element).count())

    @property
    def symmetry(self) -> str:
        """``"cubic"``, ``"hexagonal"`` or ``"general"``."""
        return symmetry_of(self.lattice)

    def build(self, a: float | None = None, c: float | None = None) -> Any:
        """The crystal's cell (conventional cubic cell for cubic lattices) at lattice constant ``a``."""
        from ase.build import bulk

        if self.lattice == "file":
            from chemfit_core.engine.structures import read_structures

            return read_structures(self.structure_file)[0]
        a = self.a_guess_A if a is None else a
        if self.symmetry == "hexagonal":
            ratio = self.c_over_a or (np.sqrt(8 / 3) if self.lattice == "hcp" else None)
            return bulk(
                self.element, self.lattice, a=a, c=c if c is not None else (None if ratio is None else ratio * a)
            )
        return bulk(self.element, self.lattice, a=a, cubic=True)


ATOMS_PER_CUBIC_CELL = {
    "sc": 1,
    "fcc": 4,
    "bcc": 2,
    "diamond": 8,
    "zincblende": 8,
    "rocksalt": 8,
    "cesiumchloride": 2,
    "fluorite": 12,
}
"""Atoms in the conventional cubic cell of each cubic lattice."""


def isolated_atom_energy(model: Any, element: str) -> float:
    """Energy of one ``element`` atom alone under ``model``, eV (the zero of the cohesive energy)."""
    from ase import Atoms

    from chemfit_core.engine.state import atoms_to_state

    atom = Atoms(element, positions=[[0, 0, 0]], cell=[30, 30, 30], pbc=False)
    return float(model(atoms_to_state(atom, dtype=model.dtype))["energy"][0].detach())


def cubic_lattice_constant(atoms: Any, lattice: str) -> float:
    """Lattice constant (Å) of a cubic ``lattice`` crystal from its volume per atom (any supercell)."""
    return float((atoms.get_volume() * ATOMS_PER_CUBIC_CELL[lattice] / len(atoms)) ** (1 / 3))


def structure_energies(
    ground: Sequence[Any], others: Mapping[str, Sequence[Any]], lattice: str, isolated_atom_energy_eV: float
) -> dict[str, float]:
    """Properties of relaxed crystals with ASE results: ``a0_A`` and ``Ec_eV`` (eV/atom, against
    the isolated atom) of the ``ground``-state cells (energies per atom averaged, a0 of the
    first), and ``E_<kind>_eV`` (eV/atom above the ground state) of every other kind.

    The one implementation of these properties: the in-fit crystal target and the
    workflow's solid stage both call it."""
    e0 = float(np.mean([atoms.get_potential_energy() / len(atoms) for atoms in ground]))
    out = {"a0_A": cubic_lattice_constant(ground[0], lattice), "Ec_eV": isolated_atom_energy_eV - e0}
    for kind, cells in others.items():
        out[f"E_{kind}_eV"] = float(np.mean([a.get_potential_energy() / len(a) for a in cells])) - e0
    return out


def _phase_cell(element: str, phase: str, volume_per_atom: float) -> Any:
    """An ``element`` crystal of ``phase`` scaled to ``volume_per_atom`` (Å³): where it starts from."""
    from ase.build import bulk

    atoms = bulk(element, phase, a=1.0, c=np.sqrt(8 / 3) if phase == "hcp" else None, cubic=phase != "hcp")
    atoms.set_cell(atoms.cell.array * (volume_per_atom * len(atoms) / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
    atoms.info["label"] = f"phase-{phase}"
    return atoms


def _lattice_properties(setup: CrystalSetup, ground: Any) -> dict[str, float]:
    if setup.symmetry == "cubic":
        return {"a0_A": cubic_lattice_constant(ground, setup.lattice)}
    a, b, c = ground.cell.lengths()
    if setup.symmetry == "hexagonal":
        return {"a0_A": float(a), "c_A": float(c)}
    return {"a_A": float(a), "b_A": float(b), "c_A": float(c)}


def property_problem(setup: CrystalSetup, wanted: Iterable[str]) -> str | None:
    """Why ``setup``'s crystal cannot give the properties ``wanted`` (None: it can): unknown names,
    properties the lattice or a compound does not have, chemical potentials without references."""
    wanted = set(wanted)
    unknown = {name for name in wanted if not is_property(name)}
    if unknown:
        return (
            f"unknown crystal properties {sorted(unknown)}; known: {', '.join(PROPERTIES)}, "
            "C<ij>_GPa, vacancy_<element>_eV"
        )
    species, symmetry = setup.species, setup.symmetry
    elemental = len(species) == 1
    elastic_names = set(constants_of(symmetry))
    not_here = {n for n in wanted if is_elastic_name(n) and n not in elastic_names}
    not_here |= {n for n in wanted if n.startswith(("E_", "surface_")) and not elemental}
    not_here |= {n for n in wanted if n.startswith("surface_") and setup.lattice != "fcc"}
    not_here |= {"vacancy_eV"} & wanted if not elemental else set()
    not_here |= {n for n in wanted if (m := _SPECIES_VACANCY.fullmatch(n)) and m.group(1) not in species}
    if not_here:
        return (
            f"{sorted(not_here)} are not properties of {setup.element} {setup.lattice}; it has "
            f"{sorted(elastic_names)}" + ("" if elemental else ", vacancy_<element>_eV, formation_eV")
        )
    needs_mu = {n for n in wanted if n == "formation_eV" or (_SPECIES_VACANCY.fullmatch(n) and not elemental)}
    missing = [s for s in species if s not in setup.element_references] if needs_mu else []
    if missing:
        return f"{sorted(needs_mu)} need each element's ground state: give element_references for {missing}"
    return None


def crystal_properties(model: Any, setup: CrystalSetup, wanted: Iterable[str] = PROPERTIES) -> dict[str, float]:
    """The ``wanted`` properties of ``model`` (names :func:`is_property` accepts; units :func:`unit_of`)."""
    wanted = set(wanted)
    problem = property_problem(setup, wanted)
    if problem:
        raise ValueError(problem)
    species, symmetry = setup.species, setup.symmetry
    elemental = len(species) == 1
    elastic_names = set(constants_of(symmetry))
    needs_mu = {n for n in wanted if n == "formation_eV" or (_SPECIES_VACANCY.fullmatch(n) and not elemental)}
    common = dict(fmax=setup.fmax, max_steps=setup.max_steps, engine="torch", progress_every_s=None, dtype=model.dtype)

    # 1. ground state, other phases and the elements' references, cells relaxed
    start = setup.build()
    start.info["label"] = "ground"
    volume_per_atom = start.get_volume() / len(start)
    phases = [k for k in PHASES if f"E_{k}_eV" in wanted and k != setup.lattice] if elemental else []
    cells = [start, *(_phase_cell(setup.element, k, volume_per_atom) for k in phases)]
    references = {s: setup.element_references[s] for s in species if s in setup.element_references and needs_mu}
    for element, (lattice, a_guess) in references.items():
        cell = CrystalSetup(element, lattice, a_guess).build()
        cell.info["label"] = f"element-{element}"
        cells.append(cell)
    relaxed = relax_structures(cells, model, relax_cell=True, **common)
    by_label = {a.info["label"]: a for a in relaxed.structures}
    ground = by_label["ground"]
    e0 = ground.get_potential_energy() / len(ground)
    lattice = _lattice_properties(setup, ground)
    scale = (ground.get_volume() / start.get_volume()) ** (1 / 3)
    if not relaxed.converged[0] or not 0.6 < scale < 1.5:
        # a collapsed or exploded lattice would make the defect and surface cells unphysical
        # (and their neighbour lists huge): stop here with the reason
        raise ChemFitError(
            f"{setup.element} {setup.lattice} collapsed or expanded: the lattice relaxed to {lattice} from "
            f"a_guess_A = {setup.a_guess_A} Å (converged: {bool(relaxed.converged[0])}); these parameters do "
            "not describe the crystal (bound them, or start nearer)"
        )
    out: dict[str, float] = dict(lattice)
    if "Ec_eV" in wanted:
        counts = ground.symbols.formula.count()
        free = sum(n * isolated_atom_energy(model, s) for s, n in counts.items()) / len(ground)
        out["Ec_eV"] = free - e0
    for phase in phases:
        atoms = by_label[f"phase-{phase}"]
        out[f"E_{phase}_eV"] = atoms.get_potential_energy() / len(atoms) - e0
    mu = {s: by_label[f"element-{s}"].get_potential_energy() / len(by_label[f"element-{s}"]) for s in references}
    if elemental:
        mu.setdefault(species[0], e0)
    if "formation_eV" in wanted:
        counts = ground.symbols.formula.count()
        out["formation_eV"] = e0 - sum(n * mu[s] for s, n in counts.items()) / len(ground)

    # 2. everything built on the relaxed lattice, relaxed together at fixed cells
    perfect = ground.copy()
    perfect.calc = None
    batch: list[Any] = []
    elastic = wanted & elastic_names
    if elastic:
        batch += strained_cells(perfect, symmetry, setup.strain)
    n = setup.vacancy_cells
    vacancies = {
        name: (species[0] if name == "vacancy_eV" else _SPECIES_VACANCY.fullmatch(name).group(1))
        for name in wanted
        if name.startswith("vacancy")
    }
    supercell = perfect.repeat((n, n, n)) if vacancies else None
    for name, element in vacancies.items():
        defect = supercell.copy()
        del defect[next(k for k, s in enumerate(defect.get_chemical_symbols()) if s == element)]
        defect.info["label"] = name
        batch.append(defect)
    slabs = [name for name in ("surface_111_J_m2", "surface_100_J_m2") if name in wanted]
    for name in slabs:
        from ase.build import fcc100, fcc111

        builder = fcc111 if "111" in name else fcc100
        a0 = out["a0_A"]
        slab = builder(setup.element, size=(1, 1, setup.slab_layers), a=a0, vacuum=setup.slab_vacuum_A, periodic=True)
        slab.info["label"] = name
        batch.append(slab)
    if batch:
        fixed = relax_structures(batch, model, **common)
        done = {a.info["label"]: a for a in fixed.structures}
        if elastic:
            out.update(elastic_constants(done, symmetry, setup.strain))
        for name, element in vacancies.items():
            atoms = done[name]
            out[name] = atoms.get_potential_energy() - len(supercell) * e0 + mu[element]
        for name in slabs:
            atoms = done[name]
            area = np.linalg.norm(np.cross(atoms.cell[0], atoms.cell[1]))
            out[name] = (atoms.get_potential_energy() - len(atoms) * e0) / (2 * area) * EV_A2_TO_J_M2
    return {k: float(v) for k, v in out.items() if k in wanted or k in lattice}
