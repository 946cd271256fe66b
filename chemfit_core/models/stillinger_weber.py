"""Stillinger–Weber (LAMMPS ``pair_style sw``) in torch, read from and written to LAMMPS files.

E = Σ_i Σ_{j>i} φ2(r_ij) + Σ_i Σ_{j<k} φ3(r_ij, r_ik, θ_ijk)

φ2(r) = A_ij ε_ij [B_ij (σ_ij/r)^p_ij − (σ_ij/r)^q_ij] exp(σ_ij / (r − a_ij σ_ij))
φ3 = λ_ijk ε_ijk (cos θ_ijk − cos θ0_ijk)² exp(γ_ij σ_ij / (r_ij − a_ij σ_ij)) exp(γ_ik σ_ik / (r_ik − a_ik σ_ik))

ε in eV, σ in Å, the rest dimensionless. As in LAMMPS's ``pair_sw.cpp``: the two-body
values of i-j come from entry i-j-j; λ, ε and cos θ0 of a triplet from entry i-j-k; a bond
counts while r < a σ, or with ``tol`` > 0 while r < a σ + σ'/ln(min(tol, 0.01)) (σ' = γσ
for γ < 1, else σ; LAMMPS's shortcut). LAMMPS evaluates each pair from either end and each
triplet j, k in neighbour order: the model takes the pair's end as LAMMPS does (by atom
IDs, which matters where the i-j-j and j-i-i two-body values differ) and averages the two
orders of j, k (exact where λε and cos θ0 of i-j-k and i-k-j agree; the reader warns where
they do not). A fit keeps such entries equal. The ``threebody off`` keyword is not modelled.
"""

from __future__ import annotations

import warnings

import torch

from chemfit_core.models.forms import register_form
from chemfit_core.models.registry import potential_file, register_model
from chemfit_core.models.threebody import Bonds, ThreeBodyModel, entry_index, gather, triplet_indices
from chemfit_core.models.threebody_form import ThreeBodyForm
from chemfit_core.models.triplet_file import ColumnRules

_TWO_BODY = frozenset({"sigma", "a", "gamma", "A", "B", "p", "q", "tol"})
C0 = "costheta0"
_NON_NEGATIVE = ("epsilon", "sigma", "a", "lambda", "gamma", "A", "B", "p", "q", "tol")


class StillingerWeber(ThreeBodyModel):
    """Stillinger–Weber with per-triplet tables (columns of a LAMMPS ``.sw`` file).

    Use :meth:`from_file` (``StillingerWeber.from_file("Si.sw")``); :meth:`write` writes the
    current parameters as a ``.sw`` file. Columns: ``epsilon`` (eV), ``sigma`` (Å), ``a``,
    ``lambda``, ``gamma``, ``costheta0``, ``A``, ``B``, ``p``, ``q``, ``tol`` (fixed).
    """

    style = "sw"
    suffix = "sw"
    columns = ("epsilon", "sigma", "a", "lambda", "gamma", "costheta0", "A", "B", "p", "q", "tol")
    rules = ColumnRules(
        pair_only=_TWO_BODY,
        swap_ij=frozenset({"epsilon", "sigma", "a", "A", "B", "p", "q", "tol"}),
        swap_jk=frozenset({"epsilon", "lambda", "costheta0"}),
        fixed=frozenset({"tol"}),
    )

    @classmethod
    def check_entry(cls, row):
        negative = [c for c in _NON_NEGATIVE if row[c] < 0]
        return f"{', '.join(negative)} < 0 (LAMMPS needs them >= 0)" if negative else None

    def bond_guess(self, element):
        return 2 ** (1 / 6) * float(self.sigma.detach()[element, element, element])

    def cutoffs(self, tables):
        n = tables["sigma"].shape[0]
        diag = torch.arange(n)
        pick = {c: tables[c][:, diag, diag] for c in ("sigma", "a", "gamma", "tol")}  # [i, j] of entry i-j-j
        cut = pick["sigma"] * pick["a"]
        tol = pick["tol"].clamp(max=0.01)
        spread = torch.where(pick["gamma"] < 1.0, pick["gamma"] * pick["sigma"], pick["sigma"])
        safe = torch.where(tol > 0, tol, torch.full_like(tol, 0.5))
        short = torch.where(tol > 0, cut + spread / torch.log(safe), cut)
        return short, short[:, None, :].expand(n, n, n)

    def energy(self, bonds: Bonds, tables, n_systems, n_atoms):
        n = len(self.species)
        with torch.no_grad():
            cut, _ = self.cutoffs({c: tables[c].detach() for c in ("sigma", "a", "gamma", "tol")})
            inside = (bonds.vectors * bonds.vectors).sum(0) < cut[bonds.ti, bonds.tj] ** 2
            owned = bonds.owned[inside[bonds.owned]]  # each pair once, from the end LAMMPS takes
        energy = torch.zeros(n_systems, dtype=bonds.vectors.dtype, device=bonds.vectors.device)
        pair, _ = self._radial(bonds.select(owned), tables)
        energy = energy.index_add(0, bonds.system[owned], pair)
        bonds = bonds.select(torch.nonzero(inside).squeeze(1))
        _, (unit, radial) = self._radial(bonds, tables)
        first, second = triplet_indices(bonds.centre, n_atoms, ordered=False)
        cos = (unit[:, first] * unit[:, second]).sum(0)
        if n == 1:
            angular = gather(tables["lambda"], None) * gather(tables["epsilon"], None)
            angular = angular * (cos - gather(tables["costheta0"], None)) ** 2
        else:  # both orders of j, k (LAMMPS takes one, by neighbour order: equal for a symmetric file)
            angular = 0
            for a, b in ((first, second), (second, first)):
                ijk = entry_index(n, bonds.ti[a], bonds.tj[a], bonds.tj[b])
                lam_eps = gather(tables["lambda"], ijk) * gather(tables["epsilon"], ijk)
                angular = angular + 0.5 * lam_eps * (cos - gather(tables["costheta0"], ijk)) ** 2
        return energy.index_add(0, bonds.system[first], angular * radial[first] * radial[second])

    def _radial(self, bonds: Bonds, tables) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """φ2 (eV), unit vectors and exp(γσ/(r − aσ)) of each bond, from its i-j-j entry."""
        n = len(self.species)
        ijj = None if n == 1 else entry_index(n, bonds.ti, bonds.tj, bonds.tj)
        p = {c: gather(tables[c], ijj) for c in ("epsilon", "sigma", "a", "gamma", "A", "B", "p", "q")}
        r = torch.sqrt((bonds.vectors * bonds.vectors).sum(0))
        inverse = 1.0 / (r - p["a"] * p["sigma"])
        log_ratio = torch.log(p["sigma"] / r)  # (σ/r)^p as exp(p ln(σ/r)): torch's pow drops d²/dp dr at p = 0
        powers = p["B"] * torch.exp(p["p"] * log_ratio) - torch.exp(p["q"] * log_ratio)
        pair = p["A"] * p["epsilon"] * powers * torch.exp(p["sigma"] * inverse)
        return pair, (bonds.vectors / r, torch.exp(p["gamma"] * p["sigma"] * inverse))

    @classmethod
    def read(cls, path, elements=None):
        file = super().read(path, elements)
        c = {name: k for k, name in enumerate(cls.columns)}
        differ = []  # LAMMPS takes j, k in neighbour order: λε and cos θ0 must not depend on it
        for (i, j, k), v in zip(file.lines, (file.values[e] for e in file.lines)):
            if j < k:
                w = file.values[i, k, j]
                for x, y in (
                    (v[c["lambda"]] * v[c["epsilon"]], w[c["lambda"]] * w[c["epsilon"]]),
                    (v[c[C0]], w[c[C0]]),
                ):
                    if abs(x - y) > 1e-12 * max(abs(x), abs(y)):
                        differ.append((abs(x - y) / max(abs(x), abs(y)), (i, j, k)))
        if differ:
            worst, entry = max(differ)
            warnings.warn(
                f"{file.path}: lambda*epsilon or costheta0 of {len(differ)} pairs of i-j-k and i-k-j entries "
                f"differ (by up to {worst:.2g} relative, {file.name(entry)} on line {file.lines[entry]}): "
                "LAMMPS's energy depends on its neighbour order there; the model averages the two orders",
                stacklevel=2,
            )
        return file


@register_model("sw")
def _build_sw(spec: dict) -> StillingerWeber:
    return StillingerWeber.from_file(potential_file(spec.pop("file")), **spec)


@register_form
class StillingerWeberForm(ThreeBodyForm):
    """``sw``: entries of a LAMMPS ``.sw`` file (option ``file``); ``fit`` names the fitted
    columns or entries (default ``[epsilon, sigma, lambda]``); parameters
    ``<column>:<A>-<B>-<C>`` (ε eV, σ Å, the others dimensionless)."""

    name = "sw"
    model_class = StillingerWeber
    option_defaults = {"file": None, "species": [], "fit": ["epsilon", "sigma", "lambda"]}
