"""Tersoff (LAMMPS ``pair_style tersoff``) in torch, read from and written to LAMMPS files.

E = ½ Σ_i Σ_{j≠i} f_C(r_ij) [f_R(r_ij) + b_ij f_A(r_ij)]

f_R(r) = A e^{−λ1 r},  f_A(r) = −B e^{−λ2 r}
f_C(r) = 1 (r < R − D), ½ − ½ sin(π/2 (r − R)/D) (|r − R| ≤ D), 0 (r > R + D)
b_ij = (1 + β^n ζ_ij^n)^{−1/(2n)},  ζ_ij = Σ_{k≠i,j} f_C(r_ik) g(θ_ijk) exp[(λ3 (r_ij − r_ik))^m]
g(θ) = γ_ijk (1 + c²/d² − c²/(d² + (cos θ0 − cos θ)²))

A, B in eV; λ1, λ2, λ3 in 1/Å; R, D in Å; the rest dimensionless. As in LAMMPS's
``pair_tersoff.cpp``: f_R, f_A, the cutoff of bond i→j and β, n come from entry i-j-j;
f_C(r_ik), g and the exponential of ζ from entry i-j-k (its R, D bound r_ik); b_ij uses
LAMMPS's asymptotic branches (thresholds from n, 1e-8 and 1e-16) and the exponential is
capped at |argument| = 69.0776 (e^{±69.0776}: 1e30 or 0). The repulsion of a pair is
evaluated once, from the end LAMMPS takes by atom IDs (which matters where A, λ1, R, D of
i-j-j and j-i-i differ); a fit keeps those equal. The ``shift`` keyword (absent by
default) is not modelled.
"""

from __future__ import annotations

import math

import torch

from chemfit_core.models.forms import register_form
from chemfit_core.models.registry import potential_file, register_model
from chemfit_core.models.threebody import Bonds, ThreeBodyModel, entry_index, gather, triplet_indices
from chemfit_core.models.threebody_form import ThreeBodyForm
from chemfit_core.models.triplet_file import ColumnRules

_CAP = 69.0776  # LAMMPS's bound on the argument of the exponential of ζ


def cutoff_function(r: torch.Tensor, R: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Tersoff's f_C(r) (dimensionless) with LAMMPS's comparisons; r, R, D in Å."""
    inner = 0.5 * (1.0 - torch.sin(0.5 * math.pi * (r - R) / torch.where(D > 0, D, torch.ones_like(D))))
    return torch.where(r < R - D, torch.ones_like(inner), torch.where(r > R + D, torch.zeros_like(inner), inner))


def bond_order(zeta: torch.Tensor, beta: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """b_ij = (1 + (βζ)^n)^{−1/(2n)} with LAMMPS's ``ters_bij`` branches; every branch is
    evaluated on safe inputs so that autograd stays finite."""
    tmp = beta * zeta
    with torch.no_grad():
        n_ = torch.as_tensor(n, dtype=tmp.dtype).detach()
        positive = n_ > 0
        safe_n = torch.where(positive, n_, torch.ones_like(n_))
        c1 = torch.where(positive, (2.0 * safe_n * 1e-16) ** (-1.0 / safe_n), torch.zeros_like(n_))
        c2 = torch.where(positive, (2.0 * safe_n * 1e-8) ** (-1.0 / safe_n), torch.zeros_like(n_))
        c3 = torch.where(positive, 1.0 / c2, torch.zeros_like(n_))
        c4 = torch.where(positive, 1.0 / c1, torch.zeros_like(n_))
        large = tmp > c1
        fairly_large = ~large & (tmp > c2)
        zero = ~large & ~fairly_large & (tmp < c4)
        small = ~large & ~fairly_large & ~zero & (tmp < c3)
        middle = ~(large | fairly_large | zero | small)
    one = torch.ones_like(tmp)
    t_big = torch.where(large | fairly_large, tmp, one)
    t_small = torch.where(small, tmp, one)
    t_mid = torch.where(middle, tmp, one)
    value = torch.where(middle, (1.0 + t_mid**n) ** (-0.5 / n), one)
    value = torch.where(small, 1.0 - t_small**n / (2.0 * n), value)
    value = torch.where(fairly_large, (1.0 - t_big ** (-n) / (2.0 * n)) * t_big**-0.5, value)
    return torch.where(large, t_big**-0.5, value)


class Tersoff(ThreeBodyModel):
    """Tersoff with per-triplet tables (columns of a LAMMPS ``.tersoff`` file).

    Use :meth:`from_file` (``Tersoff.from_file("SiC.tersoff")``); :meth:`write` writes the
    current parameters as a ``.tersoff`` file. Columns: ``m`` (1 or 3, fixed), ``gamma``,
    ``lambda3`` (1/Å), ``c``, ``d``, ``costheta0`` (LAMMPS's h), ``n``, ``beta``, ``lambda2``
    (1/Å), ``B`` (eV), ``R``, ``D`` (Å), ``lambda1`` (1/Å), ``A`` (eV).
    """

    style = "tersoff"
    suffix = "tersoff"
    columns = ("m", "gamma", "lambda3", "c", "d", "costheta0", "n", "beta", "lambda2", "B", "R", "D", "lambda1", "A")
    rules = ColumnRules(
        pair_only=frozenset({"n", "beta", "lambda2", "B", "lambda1", "A"}),
        swap_ij=frozenset({"R", "D", "lambda1", "A"}),
        fixed=frozenset({"m"}),
    )

    @classmethod
    def check_entry(cls, row):
        negative = [c for c in ("c", "d", "n", "beta", "lambda2", "B", "R", "D", "lambda1", "A", "gamma") if row[c] < 0]
        if negative:
            return f"{', '.join(negative)} < 0 (LAMMPS needs them >= 0)"
        if row["D"] > row["R"]:
            return f"D = {row['D']} > R = {row['R']} (LAMMPS needs D <= R)"
        if row["m"] not in (1.0, 3.0):
            return f"m = {row['m']} (LAMMPS takes 1 or 3)"
        return None

    def bond_guess(self, element):
        return 0.82 * float(self.R.detach()[element, element, element])

    def cutoffs(self, tables):
        n = tables["R"].shape[0]
        diag = torch.arange(n)
        cut = tables["R"] + tables["D"]
        return cut[:, diag, diag], cut

    def energy(self, bonds: Bonds, tables, n_systems, n_atoms):
        n = len(self.species)
        r = torch.sqrt((bonds.vectors * bonds.vectors).sum(0))
        ijj = None if n == 1 else entry_index(n, bonds.ti, bonds.tj, bonds.tj)
        R, D = gather(tables["R"], ijj), gather(tables["D"], ijj)
        with torch.no_grad():
            r2 = r.detach() ** 2
            pair_keep = r2 < (R + D).detach() ** 2
        first, second = triplet_indices(bonds.centre, n_atoms, ordered=True)
        ijk = None if n == 1 else entry_index(n, bonds.ti[first], bonds.tj[first], bonds.tj[second])
        with torch.no_grad():
            cut3 = gather(tables["R"], ijk) + gather(tables["D"], ijk)
            keep = torch.nonzero(pair_keep[first] & (r2[second] < cut3.detach() ** 2)).squeeze(1)
        first, second = first[keep], second[keep]
        ijk = None if ijk is None else ijk[keep]
        t = {c: gather(tables[c], ijk) for c in ("m", "gamma", "lambda3", "c", "d", "costheta0", "R", "D")}
        unit = bonds.vectors / r
        cos = (unit[:, first] * unit[:, second]).sum(0)
        x = t["lambda3"] * (r[first] - r[second])
        argument = torch.where(t["m"] == 3.0, x * x * x, x)
        exponential = torch.where(
            argument > _CAP,
            torch.full_like(argument, 1e30),
            torch.where(argument < -_CAP, torch.zeros_like(argument), torch.exp(argument.clamp(-_CAP, _CAP))),
        )
        c2, d2 = t["c"] * t["c"], t["d"] * t["d"]
        angular = t["gamma"] * (1.0 + c2 / d2 - c2 / (d2 + (t["costheta0"] - cos) ** 2))
        terms = cutoff_function(r[second], t["R"], t["D"]) * angular * exponential
        zeta = torch.zeros_like(r).index_add(0, first, terms)
        p = {c: gather(tables[c], ijj) for c in ("n", "beta", "lambda2", "B", "lambda1", "A")}
        fc = cutoff_function(r, R, D)
        b = bond_order(zeta, p["beta"], p["n"])
        attraction = -0.5 * b * p["B"] * torch.exp(-p["lambda2"] * r) * fc  # every bond i→j
        repulsion = fc * p["A"] * torch.exp(-p["lambda1"] * r)  # once per pair, from the end LAMMPS takes
        inside = torch.nonzero(pair_keep).squeeze(1)
        owned = bonds.owned[pair_keep[bonds.owned]]
        energy = torch.zeros(n_systems, dtype=r.dtype, device=r.device)
        energy = energy.index_add(0, bonds.system[owned], repulsion[owned])
        return energy.index_add(0, bonds.system[inside], attraction[inside])


@register_model("tersoff")
def _build_tersoff(spec: dict) -> Tersoff:
    return Tersoff.from_file(potential_file(spec.pop("file")), **spec)


@register_form
class TersoffForm(ThreeBodyForm):
    """``tersoff``: entries of a LAMMPS ``.tersoff`` file (option ``file``); ``fit`` names the
    fitted columns or entries (default ``[A, B, lambda1, lambda2]``); parameters
    ``<column>:<A>-<B>-<C>`` (A, B eV; λ 1/Å; R, D Å; the others dimensionless)."""

    name = "tersoff"
    model_class = Tersoff
    option_defaults = {"file": None, "species": [], "fit": ["A", "B", "lambda1", "lambda2"]}
