"""Single-point energies, forces and stresses of ASE structures computed by LAMMPS.

:func:`lammps_reference` evaluates many ASE structures in ONE LAMMPS process
(``clear`` + ``read_data`` per structure, ``run 0``) and returns the results in the
original Cartesian frame of each structure, with ASE's units and sign conventions: the
independent reference the tests and the round trip
(:func:`chemfit_core.science.roundtrip.round_trip`) compare torch models with.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.lammps import Prism

from chemfit_core.errors import ChemFitError
from chemfit_core.external.lammps import read_thermo, run_lammps
from chemfit_core.units import LAMMPS_EV_PER_A3_IN_BAR

MARGIN = 5.0  # Å of empty space around the atoms along non-periodic directions


def boxed(atoms: Atoms) -> Atoms:
    """A copy whose box contains all atoms along every non-periodic direction.

    Periodic lattice vectors are kept; each non-periodic one is replaced by an
    orthonormal complement direction, long enough to hold the atoms with
    :data:`MARGIN` on both sides, and the atoms are translated into it (a rigid
    translation: energies, forces and stresses are unchanged). This is what a
    LAMMPS ``f`` boundary needs; the Cartesian frame is not changed.
    """
    atoms = atoms.copy()
    pbc = np.asarray(atoms.pbc, bool)
    if pbc.all():
        return atoms
    periodic = atoms.cell.array[pbc]
    # orthonormal basis of the complement of span(periodic vectors)
    u, _, _ = np.linalg.svd(periodic.T if len(periodic) else np.zeros((3, 1)))
    complement = u[:, len(periodic) :].T
    cell = atoms.cell.array.copy()
    cell[~pbc] = complement
    if np.linalg.det(cell) < 0:  # keep the box right-handed
        complement[0] *= -1
    pos = atoms.positions
    shift = np.zeros(3)
    for k, axis in enumerate(np.flatnonzero(~pbc)):
        proj = pos @ complement[k]
        cell[axis] = complement[k] * (np.ptp(proj) + 2 * MARGIN)
        shift += (MARGIN - proj.min()) * complement[k]
    atoms.set_cell(cell, scale_atoms=False)
    atoms.positions = pos + shift
    return atoms


def lammps_reference(
    atoms_list: list[Atoms],
    pair_lines: list[str],
    workdir: Path | str,
    specorder: list[str],
    atom_style: str | None = None,
) -> list[dict]:
    """Energy, forces and stress of each structure from one LAMMPS run.

    Args:
        atoms_list: structures; ``pbc`` gives the ``boundary`` (``p`` or ``f``) per direction.
        pair_lines: ``pair_style`` / ``pair_coeff`` / ``pair_modify`` commands.
        workdir: folder for the data, input, log and dump files (created if needed).
        specorder: chemical symbols in the order of LAMMPS atom types.
        atom_style: ``atomic`` or ``charge`` (each atom's charge, e, from ``get_initial_charges()``;
            ``set`` commands among ``pair_lines`` may override them); None: ``charge`` when a
            ``pair_style`` line names a Coulomb style (``.../coul/...``), else ``atomic``.

    Returns:
        One dict per structure: ``energy`` (eV), ``forces`` ``[n, 3]`` (eV/Å) and
        ``stress`` ``[3, 3]`` (eV/Å³, ASE sign: minus the pressure tensor) in the
        structure's own frame; ``stress`` is None unless periodic in all directions.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if atom_style is None:
        styles = [line.split()[1:] for line in pair_lines if line.split()[:1] == ["pair_style"]]
        atom_style = "charge" if any("coul" in word for words in styles for word in words) else "atomic"
    prisms, lines = [], []
    for k, atoms in enumerate(atoms_list):
        box = boxed(atoms)
        prism = Prism(box.cell.array, pbc=box.pbc)
        prisms.append(prism)
        ase.io.write(
            workdir / f"data.{k}",
            box,
            format="lammps-data",
            specorder=specorder,
            masses=True,
            atom_style=atom_style,
            force_skew=True,
            prismobj=prism,
        )
        boundary = " ".join("p" if p else "f" for p in box.pbc)
        lines += [
            "clear",
            "units metal",
            f"atom_style {atom_style}",
            f"boundary {boundary}",
            f"read_data data.{k}",
            *pair_lines,
            "thermo_style custom step pe pxx pyy pzz pxy pxz pyz",
            "thermo_modify norm no format float %20.15g",
            f"dump d all custom 1 forces.{k} id fx fy fz",
            "dump_modify d sort id format float %20.15g",
            "run 0",
            "undump d",
        ]
    (workdir / "in.lammps").write_text("\n".join(lines) + "\n")
    runs = read_thermo(run_lammps(workdir, "in.lammps"))
    if len(runs) != len(atoms_list):
        raise ChemFitError(f"{workdir}: {len(runs)} thermo tables for {len(atoms_list)} structures")
    results = []
    for k, (atoms, prism, thermo) in enumerate(zip(atoms_list, prisms, runs)):
        dump = np.loadtxt(workdir / f"forces.{k}", skiprows=9, ndmin=2)
        if not np.array_equal(dump[:, 0], np.arange(1, len(atoms) + 1)):
            raise ChemFitError(f"{workdir}/forces.{k}: atoms missing from the dump")
        forces = prism.vector_to_ase(dump[:, 1:])
        p = {key: thermo[key][0] for key in ("Pxx", "Pyy", "Pzz", "Pxy", "Pxz", "Pyz")}
        pressure = np.array(
            [[p["Pxx"], p["Pxy"], p["Pxz"]], [p["Pxy"], p["Pyy"], p["Pyz"]], [p["Pxz"], p["Pyz"], p["Pzz"]]]
        )
        stress = prism.tensor2_to_ase(-pressure / LAMMPS_EV_PER_A3_IN_BAR) if atoms.pbc.all() else None
        results.append({"energy": float(thermo["PotEng"][0]), "forces": forces, "stress": stress})
    return results
