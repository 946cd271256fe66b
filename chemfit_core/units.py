"""Units and conventions, in one place.

chemfit_core works in ASE's and LAMMPS ``metal`` units inside (eV, Å, amu, ps, bar,
g/cm³); conversions to the user's units (K, kJ/mol, kg/m³, GPa, J/m²) happen at the
edges with the constants below, all from :mod:`scipy.constants` (CODATA 2018) except
where LAMMPS's own factors must be matched exactly. Stress follows ASE's sign
(positive under tension), in eV/Å³; Voigt order is ASE's: xx, yy, zz, yz, xz, xy.
"""

from __future__ import annotations

from typing import Any

from scipy import constants

KB_EV_PER_K = constants.k / constants.e
"""Boltzmann constant, eV/K."""
AVOGADRO = constants.N_A
"""Avogadro constant, 1/mol (g/mol per atom to g)."""
EV_PER_ATOM_TO_KJ_PER_MOL = constants.e * constants.N_A / 1000.0
"""1 eV per atom (or molecule) in kJ/mol."""
GAS_CONSTANT_KJ_PER_MOL_K = constants.R / 1000.0
"""Molar gas constant, kJ/(mol K)."""
EV_PER_K_TO_J_PER_MOL_K = constants.e * constants.N_A
"""1 eV/K per atom (or molecule) in J/(mol K) (heat capacities)."""
BAR_A3_TO_KJ_PER_MOL = 1e5 * 1e-30 * constants.N_A / 1000.0
"""1 bar·Å³ per atom (or molecule) in kJ/mol."""
ATM_IN_BAR = constants.atm / constants.bar
"""One standard atmosphere, bar."""
EV_A3_TO_GPA = constants.e / 1e-30 / 1e9
"""1 eV/Å³ in GPa."""
EV_A2_TO_J_M2 = constants.e / 1e-20
"""1 eV/Å² in J/m²."""
G_CM3_TO_KG_M3 = 1000.0
"""1 g/cm³ (LAMMPS ``metal`` density) in kg/m³."""
A2_PER_PS_TO_1E9_M2_S = 1e-20 / 1e-12 / 1e-9
"""1 Å²/ps (LAMMPS ``metal`` diffusion) in 1e-9 m²/s."""

# LAMMPS's own factors: results are converted back with them to recover its numbers exactly.
LAMMPS_EV_PER_A3_IN_BAR = 1.6021765e6
"""1 eV/Å³ in bar as LAMMPS's ``metal`` units have it (``nktv2p``; CODATA: 1602176.634)."""
LAMMPS_HARTREE_BOHR = 27.2 * 0.529
"""Hartree·Bohr in eV·Å as LAMMPS's ``pair_style eam`` uses it for funcfl charges."""
LAMMPS_METAL_FTM2V = 1.0 / 1.0364269e-4
"""(eV/Å)/amu in Å/ps² as LAMMPS's ``metal`` units have it (``ftm2v``: force × time / mass → velocity)."""

VOIGT_INDEX = ((0, 1, 2, 1, 0, 0), (0, 1, 2, 2, 2, 1))
"""Row and column of each Voigt component (xx, yy, zz, yz, xz, xy) in a 3×3 tensor."""


def to_voigt(tensor: Any) -> Any:
    """``[..., 3, 3]`` symmetric tensors → ``[..., 6]`` in ASE's Voigt order (numpy or torch)."""
    rows, cols = VOIGT_INDEX
    return tensor[..., list(rows), list(cols)]
