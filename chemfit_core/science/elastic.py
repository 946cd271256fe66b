"""Elastic constants from stress–strain: the strained cells to relax, and the constants they give.

Each strain is one Voigt component, applied as ±``strain`` to the relaxed crystal (normal
strains ε_jj; shears as the symmetric ε_ab = γ/2, so ``strain`` is the engineering shear γ),
with the atoms relaxed at the fixed strained cell. Column j of the stiffness matrix is the
central difference of the stress (ASE's sign: positive under tension) over the strain j.
Only the strains the crystal's symmetry needs are built: two for a cubic crystal (xx and yz),
four for a hexagonal one (xx, zz, yz, xy; c along z), all six otherwise. Units: GPa.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from chemfit_core.units import EV_A3_TO_GPA

VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
"""Cartesian indices of each Voigt component (xx, yy, zz, yz, xz, xy)."""
CUBIC = ("sc", "fcc", "bcc", "diamond", "zincblende", "rocksalt", "cesiumchloride", "fluorite")
"""Lattices of cubic symmetry (three independent constants: C11, C12, C44)."""
HEXAGONAL = ("hcp", "wurtzite")
"""Lattices of hexagonal symmetry, c along z (C11, C12, C13, C33, C44, C66)."""


def symmetry_of(lattice: str) -> str:
    """``"cubic"``, ``"hexagonal"`` or ``"general"`` (a structure file, or any other lattice)."""
    return "cubic" if lattice in CUBIC else "hexagonal" if lattice in HEXAGONAL else "general"


def strains_needed(symmetry: str) -> tuple[int, ...]:
    """The Voigt components to strain for a crystal of this symmetry."""
    return {"cubic": (0, 3), "hexagonal": (0, 2, 3, 5)}.get(symmetry, (0, 1, 2, 3, 4, 5))


def constants_of(symmetry: str) -> tuple[str, ...]:
    """Names of the independent elastic constants reported for this symmetry (and ``B_GPa``)."""
    if symmetry == "cubic":
        names = ("C11", "C12", "C44")
    elif symmetry == "hexagonal":
        names = ("C11", "C12", "C13", "C33", "C44", "C66")
    else:
        names = tuple(f"C{i + 1}{j + 1}" for i in range(6) for j in range(i, 6))
    return (*(f"{n}_GPa" for n in names), "B_GPa")


def strained_cells(perfect: Any, symmetry: str, strain: float) -> list[Any]:
    """Copies of ``perfect`` strained by ±``strain`` in each needed component, labelled
    ``strain<j><sign>`` (``info["label"]``)."""
    cells = []
    for j in strains_needed(symmetry):
        a, b = VOIGT_PAIRS[j]
        for sign in (1, -1):
            deformation = np.eye(3)
            if a == b:
                deformation[a, a] += sign * strain
            else:  # engineering shear γ = strain: ε_ab = ε_ba = γ/2
                deformation[a, b] = deformation[b, a] = sign * strain / 2
            cell = perfect.copy()
            cell.set_cell(perfect.cell.array @ deformation.T, scale_atoms=True)
            cell.info["label"] = f"strain{j}{sign:+d}"
            cells.append(cell)
    return cells


def elastic_constants(relaxed: Mapping[str, Any], symmetry: str, strain: float) -> dict[str, float]:
    """The constants of :func:`constants_of` (GPa) from the relaxed strained cells of
    :func:`strained_cells`, keyed by their labels; ``B_GPa`` is Voigt's bulk modulus."""
    stiffness = np.full((6, 6), np.nan)
    for j in strains_needed(symmetry):
        plus = relaxed[f"strain{j}+1"].get_stress(voigt=True)  # xx yy zz yz xz xy, eV/Å³
        minus = relaxed[f"strain{j}-1"].get_stress(voigt=True)
        stiffness[:, j] = (plus - minus) / (2 * strain) * EV_A3_TO_GPA
    c = stiffness
    if symmetry == "cubic":
        out = {"C11": c[0, 0], "C12": 0.5 * (c[1, 0] + c[2, 0]), "C44": c[3, 3]}
        out["B"] = (out["C11"] + 2 * out["C12"]) / 3
    elif symmetry == "hexagonal":
        out = {
            "C11": c[0, 0],
            "C12": c[1, 0],
            "C13": 0.5 * (c[2, 0] + c[0, 2]),
            "C33": c[2, 2],
            "C44": c[3, 3],
            "C66": c[5, 5],
        }
        out["B"] = (2 * out["C11"] + out["C33"] + 2 * out["C12"] + 4 * out["C13"]) / 9
    else:
        sym = 0.5 * (c + c.T)
        out = {f"C{i + 1}{j + 1}": sym[i, j] for i in range(6) for j in range(i, 6)}
        out["B"] = (sym[0, 0] + sym[1, 1] + sym[2, 2] + 2 * (sym[0, 1] + sym[0, 2] + sym[1, 2])) / 9
    return {f"{name}_GPa": float(value) for name, value in out.items()}


def is_elastic_name(name: str, symmetries: Sequence[str] = ("cubic", "hexagonal", "general")) -> bool:
    """Whether ``name`` is an elastic property some symmetry reports."""
    return any(name in constants_of(s) for s in symmetries)
