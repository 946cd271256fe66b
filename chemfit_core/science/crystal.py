"""Crystal properties of a model, computed in-process with the batched relaxation engine.

:func:`crystal_properties` relaxes the crystal (cell included), then builds
every strained, defective and surface cell it needs from the relaxed lattice and
relaxes all of them together in one batch:

- lattice constant ``a0_A`` (Å) and cohesive energy ``Ec_eV`` (eV/atom, relative
  to the isolated atom's energy under the model);
- elastic constants ``C11_GPa``, ``C12_GPa``, ``C44_GPa`` from the stress of cells
  strained by ±``strain`` with internal relaxation; ``B_GPa`` = (C11 + 2 C12)/3;
- relaxed vacancy formation energy ``vacancy_eV`` in an n×n×n supercell at a0;
- surface energies ``surface_111_J_m2``, ``surface_100_J_m2`` (relaxed slabs);
- structure energy differences ``E_bcc_eV``, ``E_hcp_eV`` (eV/atom, minus fcc).

The cubic-crystal formulas assume an fcc (or bcc) ground state, as for copper
and argon. Each property is a deterministic function of the parameters, so
finite differences of it are clean (no MD noise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from chemfit_core.engine.relax import relax_structures
from chemfit_core.errors import ChemFitError
from chemfit_core.units import EV_A2_TO_J_M2, EV_A3_TO_GPA

PROPERTIES = (
    "a0_A",
    "Ec_eV",
    "B_GPa",
    "C11_GPa",
    "C12_GPa",
    "C44_GPa",
    "vacancy_eV",
    "surface_111_J_m2",
    "surface_100_J_m2",
    "E_bcc_eV",
    "E_hcp_eV",
)
UNITS = {
    "a0_A": "Å",
    "Ec_eV": "eV/atom",
    "B_GPa": "GPa",
    "C11_GPa": "GPa",
    "C12_GPa": "GPa",
    "C44_GPa": "GPa",
    "vacancy_eV": "eV",
    "surface_111_J_m2": "J/m²",
    "surface_100_J_m2": "J/m²",
    "E_bcc_eV": "eV/atom",
    "E_hcp_eV": "eV/atom",
}


@dataclasses.dataclass(frozen=True)
class CrystalSetup:
    """How the crystal properties are computed.

    Args:
        element: chemical symbol.
        lattice: ``"fcc"`` or ``"bcc"`` (the ground state).
        a_guess_A: starting lattice constant, Å.
        strain: strain amplitude for the elastic constants.
        vacancy_cells: supercell size (n×n×n conventional cells) for the vacancy.
        slab_layers: atomic layers of the surface slabs; vacuum in Å.
        fmax: relaxation threshold, eV/Å.
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


def _strained(atoms: Any, deformation: np.ndarray, label: str) -> Any:
    strained = atoms.copy()
    strained.set_cell(atoms.cell.array @ deformation.T, scale_atoms=True)
    strained.info["label"] = label
    return strained


ATOMS_PER_CUBIC_CELL = {"fcc": 4, "bcc": 2, "diamond": 8}
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


def crystal_properties(model: Any, setup: CrystalSetup, wanted: Iterable[str] = PROPERTIES) -> dict[str, float]:
    """The ``wanted`` properties of ``model`` (names in :data:`PROPERTIES`, units in :data:`UNITS`)."""
    from ase.build import bulk, fcc100, fcc111

    wanted = set(wanted)
    unknown = wanted - set(PROPERTIES)
    if unknown:
        raise ValueError(f"unknown crystal properties {sorted(unknown)}; known: {', '.join(PROPERTIES)}")
    common = dict(fmax=setup.fmax, max_steps=setup.max_steps, engine="torch", progress_every_s=None, dtype=model.dtype)

    # 1. ground state and other prototypes, cells relaxed
    cells = [bulk(setup.element, setup.lattice, a=setup.a_guess_A, cubic=True)]
    others = [k for k in ("bcc", "hcp") if f"E_{k}_eV" in wanted and k != setup.lattice]
    nn = setup.a_guess_A / np.sqrt(2) if setup.lattice == "fcc" else setup.a_guess_A * np.sqrt(3) / 2
    for kind in others:
        a = nn * (2 / np.sqrt(3) if kind == "bcc" else 1.0)
        cells.append(
            bulk(setup.element, kind, a=a, cubic=kind != "hcp")
            if kind != "hcp"
            else bulk(setup.element, "hcp", a=a, c=np.sqrt(8 / 3) * a)
        )
    relaxed = relax_structures(cells, model, relax_cell=True, **common)
    ground = relaxed.structures[0]
    e0 = relaxed.energies[0] / len(ground)
    a0 = cubic_lattice_constant(ground, setup.lattice)
    if not relaxed.converged[0] or not 0.6 < a0 / setup.a_guess_A < 1.5:
        # a collapsed or exploded lattice would make the defect and surface cells unphysical
        # (and their neighbour lists huge): stop here with the reason
        raise ChemFitError(
            f"{setup.element} {setup.lattice} collapsed or expanded: the lattice relaxed to a0 = {a0:.3f} Å from "
            f"a_guess_A = {setup.a_guess_A} Å (converged: {bool(relaxed.converged[0])}); these parameters do "
            "not describe the crystal (bound them, or start nearer)"
        )
    energies = structure_energies(
        [ground],
        dict(zip(others, ([a] for a in relaxed.structures[1:]))),
        setup.lattice,
        isolated_atom_energy(model, setup.element) if "Ec_eV" in wanted else 0.0,
    )
    out: dict[str, float] = {k: v for k, v in energies.items() if k != "Ec_eV" or "Ec_eV" in wanted}

    # 2. everything built on the relaxed lattice, relaxed together at fixed cells
    perfect = bulk(setup.element, setup.lattice, a=a0, cubic=True)
    batch: list[Any] = []
    elastic = wanted & {"B_GPa", "C11_GPa", "C12_GPa", "C44_GPa"}
    d = setup.strain
    if elastic:
        for sign in (1, -1):
            e_xx = np.eye(3)
            e_xx[0, 0] += sign * d
            shear = np.eye(3)
            shear[1, 2] = shear[2, 1] = sign * d / 2  # engineering shear gamma_yz = d
            batch += [_strained(perfect, e_xx, f"xx{sign:+d}"), _strained(perfect, shear, f"yz{sign:+d}")]
    n = setup.vacancy_cells
    if "vacancy_eV" in wanted:
        defect = perfect.repeat((n, n, n))
        del defect[0]
        defect.info["label"] = "vacancy"
        batch.append(defect)
    slabs = {"surface_111_J_m2": fcc111, "surface_100_J_m2": fcc100}
    for name, builder in slabs.items():
        if name in wanted:
            slab = builder(
                setup.element, size=(1, 1, setup.slab_layers), a=a0, vacuum=setup.slab_vacuum_A, periodic=True
            )
            slab.info["label"] = name
            batch.append(slab)
    if not batch:
        return out
    fixed = relax_structures(batch, model, **common)
    by_label = {a.info["label"]: (a, e) for a, e in zip(fixed.structures, fixed.energies)}
    if elastic:

        def voigt(label: str) -> np.ndarray:
            return by_label[label][0].get_stress(voigt=True)  # xx yy zz yz xz xy, eV/Å3

        d_xx = (voigt("xx+1") - voigt("xx-1")) / (2 * d)
        d_yz = (voigt("yz+1") - voigt("yz-1")) / (2 * d)
        c11, c12 = d_xx[0] * EV_A3_TO_GPA, 0.5 * (d_xx[1] + d_xx[2]) * EV_A3_TO_GPA
        out.update({"C11_GPa": c11, "C12_GPa": c12, "C44_GPa": d_yz[3] * EV_A3_TO_GPA, "B_GPa": (c11 + 2 * c12) / 3})
    if "vacancy_eV" in wanted:
        atoms, energy = by_label["vacancy"]
        out["vacancy_eV"] = energy - len(atoms) * e0
    for name in slabs:
        if name in wanted:
            atoms, energy = by_label[name]
            area = np.linalg.norm(np.cross(atoms.cell[0], atoms.cell[1]))
            out[name] = (energy - len(atoms) * e0) / (2 * area) * EV_A2_TO_J_M2
    return {k: float(v) for k, v in out.items() if k in wanted or k == "a0_A"}
