"""Fixed point charges by damped shifted-force (DSF) Coulomb, as LAMMPS evaluates it.

Fennell & Gezelter, J. Chem. Phys. 124, 234104 (2006); LAMMPS ``pair_style born/coul/dsf``
(the Coulomb part; ``coul/dsf`` is the same sum). For a pair of charges qᵢ, qⱼ (e) at
r < r_c (Å), with k = :data:`LAMMPS_QQR2E_METAL` (eV·Å/e²)::

    E(r) = k qᵢ qⱼ [erfc(αr)/r − e_shift − r f_shift]
    f_shift = −[erfc(αr_c)/r_c² + 2α/√π exp(−α²r_c²)/r_c],   e_shift = erfc(αr_c)/r_c − f_shift r_c

so that E and dE/dr vanish at r_c, and every atom adds the self energy
``−(e_shift/2 + α/√π) k qᵢ²``, whatever its neighbours. α is in 1/Å.

This wheel's ``coul/dsf`` evaluates erfc(αr) with the five-term Abramowitz–Stegun
polynomial (≈1e−7 absolute error), ``born/coul/dsf`` with the accurate libcerf ``erfcx``;
these functions use torch's erfc, which equals the latter to double precision (the
Buckingham model therefore runs in LAMMPS as ``born/coul/dsf``).
"""

from __future__ import annotations

import math

import torch

LAMMPS_QQR2E_METAL = 14.399645
"""e²/(4πε₀) in eV·Å, exactly as LAMMPS's ``metal`` units have it (``force->qqr2e``)."""


def dsf_shifts(alpha: float, cutoff: float) -> tuple[float, float]:
    """``(e_shift, f_shift)`` of DSF Coulomb with damping ``alpha`` (1/Å) and ``cutoff`` (Å):
    e_shift in 1/Å, f_shift in 1/Å² (LAMMPS ``init_style``)."""
    if alpha < 0 or cutoff <= 0:
        raise ValueError(f"DSF Coulomb needs alpha >= 0 (1/Å) and cutoff > 0 (Å), got {alpha}, {cutoff}")
    erfc_c = math.erfc(alpha * cutoff)
    f_shift = -(erfc_c / cutoff**2 + 2.0 / math.sqrt(math.pi) * alpha * math.exp(-(alpha**2) * cutoff**2) / cutoff)
    e_shift = erfc_c / cutoff - f_shift * cutoff
    return e_shift, f_shift


def dsf_pair_terms(
    r2: torch.Tensor, qq: torch.Tensor, alpha: float, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DSF pair energy (eV) and (dE/dr)/r (eV/Å²) from squared distances ``r2`` (Å²) and
    charge products ``qq`` (e²); zero at and beyond ``cutoff`` (Å)."""
    e_shift, f_shift = dsf_shifts(alpha, cutoff)
    r = torch.sqrt(r2)
    erfc = torch.special.erfc(alpha * r)
    gauss = torch.exp(-(alpha * alpha) * r2)
    k = LAMMPS_QQR2E_METAL * qq
    energy = k * (erfc / r - e_shift - r * f_shift)
    dedr_over_r = -k * (erfc / r2 + 2.0 * alpha / math.sqrt(math.pi) * gauss / r + f_shift) / r
    inside = r2 < cutoff * cutoff
    return torch.where(inside, energy, torch.zeros_like(energy)), torch.where(
        inside, dedr_over_r, torch.zeros_like(dedr_over_r)
    )


def dsf_self_energy(charges: torch.Tensor, alpha: float, cutoff: float) -> torch.Tensor:
    """Self energy (eV) of each charge (e): ``−(e_shift/2 + α/√π) k q²``."""
    e_shift, _ = dsf_shifts(alpha, cutoff)
    return -(e_shift / 2.0 + alpha / math.sqrt(math.pi)) * LAMMPS_QQR2E_METAL * charges * charges
