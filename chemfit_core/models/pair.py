"""Lennard-Jones and Morse pair potentials with LAMMPS's conventions.

Both are truncated at the cutoff and, like LAMMPS's ``lj/cut`` and ``morse``,
*not* shifted unless ``shift=True`` (LAMMPS ``pair_modify shift yes``). Parameters
are per pair of species: a scalar for one species, or a symmetric
``[n_species, n_species]`` table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from chemfit_core.engine.compiled import runs_compiled
from chemfit_core.models.base import PairModel, tracks_graph
from chemfit_core.models.forms import atomic_number, register_form
from chemfit_core.models.pair_kernel import assemble_lennard_jones
from chemfit_core.models.registry import register_model
from chemfit_core.models.species_pairs import SpeciesPairForm
from chemfit_core.units import KB_EV_PER_K


def _pair_coeff_lines(tables: Sequence[torch.Tensor]) -> list[str]:
    n = tables[0].shape[0]
    return [
        f"pair_coeff {a + 1} {b + 1} " + " ".join(repr(float(t.detach()[a, b])) for t in tables)
        for a in range(n)
        for b in range(a, n)
    ]


def _pair_table(value: float | Sequence | torch.Tensor, n_species: int, name: str) -> torch.Tensor:
    table = torch.as_tensor(value, dtype=torch.float64)
    if table.ndim == 0:
        table = table.expand(n_species, n_species).clone()
    if table.shape != (n_species, n_species) or not torch.allclose(table, table.T):
        raise ValueError(f"{name} must be a scalar or a symmetric {n_species}x{n_species} table")
    return table


class LennardJones(PairModel):
    """E(r) = 4ε[(σ/r)¹² − (σ/r)⁶] for r < cutoff (LAMMPS ``lj/cut``).

    Args:
        epsilon: well depth, eV.
        sigma: zero-crossing distance, Å.
        cutoff: Å.
        species: atomic numbers (default argon).
        shift: subtract E(cutoff) so the energy is continuous (``pair_modify shift yes``).
        tail_correction: add LAMMPS's mean-field tail energy and pressure beyond the
            cutoff (``pair_modify tail yes``; periodic systems, uniform density assumed).
    """

    def __init__(
        self,
        epsilon,
        sigma,
        cutoff: float,
        species: Sequence[int] = (18,),
        shift: bool = False,
        skin: float = 0.5,
        compute_stress: bool = True,
        tail_correction: bool = False,
    ):
        super().__init__(cutoff, species, skin, compute_stress)
        n = len(self.species)
        self.epsilon = torch.nn.Parameter(_pair_table(epsilon, n, "epsilon"))
        self.sigma = torch.nn.Parameter(_pair_table(sigma, n, "sigma"))
        self.shift = shift
        self.tail_correction = tail_correction
        self.compiled = True  # CPU sums without a graph from the compiled loop (pair_kernel); False: torch blocks

    def forward(self, state, compute_stress: bool | None = None):
        """Pair sum, plus the tail correction when enabled."""
        out = super().forward(state, compute_stress)
        if not self.tail_correction:
            return out
        # LAMMPS pair_lj_cut: etail_ij = 8 pi N_i N_j eps sig^6 (sig^6 - 3 rc^6) / (9 rc^9), counted
        # twice for i != j; E += etail / V and the pressure tensor's diagonal gets ptail / V^2.
        dtype = out["energy"].dtype
        types = self.types(state)
        n_types = len(self.species)
        counts = torch.zeros(state.n_systems, n_types, dtype=dtype, device=state.device)
        counts = counts.index_put((state.system_idx, types), torch.ones_like(types, dtype=dtype), accumulate=True)
        eps, sig = self.epsilon.to(dtype), self.sigma.to(dtype)
        sig6 = sig**6
        rc3 = self.cutoff**3
        prefactor = 8 * torch.pi * eps * sig6 / (9 * rc3**3)
        etail_table = prefactor * (sig6 - 3 * rc3 * rc3)
        ptail_table = 2 * prefactor * (2 * sig6 - 3 * rc3 * rc3)
        pairs = counts.unsqueeze(2) * counts.unsqueeze(1)  # N_i N_j, both orders
        etail = (pairs * etail_table).sum((1, 2))
        ptail = (pairs * ptail_table).sum((1, 2))
        periodic = state.system_pbc.all(dim=1)
        volume = torch.linalg.det(state.cell).abs().clamp_min(1e-30)
        out["energy"] = out["energy"] + torch.where(periodic, etail / volume, torch.zeros_like(etail))
        if "stress" in out:
            eye = torch.eye(3, dtype=dtype, device=state.device)
            tail_stress = -(ptail / volume**2).view(-1, 1, 1) * eye
            out["stress"] = out["stress"] + torch.where(
                periodic.view(-1, 1, 1), tail_stress, torch.zeros_like(tail_stress)
            )
        return out

    def assemble(self, state, pairs, compute_stress: bool = True):
        """The pair sum: on a CPU without a graph in one compiled loop
        (:func:`~chemfit_core.models.pair_kernel.assemble_lennard_jones`) unless ``compiled`` is False."""
        if runs_compiled(self, state, tracks_graph(self, state)):
            return assemble_lennard_jones(self, state, pairs, compute_stress)
        return super().assemble(state, pairs, compute_stress)

    def lammps_commands(self, species: Sequence[str]) -> list[str]:
        """The same potential in LAMMPS input commands (types numbered in ``self.species`` order)."""
        return [
            f"pair_style lj/cut {self.cutoff!r}",
            *_pair_coeff_lines([self.epsilon, self.sigma]),
            f"pair_modify shift {'yes' if self.shift else 'no'} tail {'yes' if self.tail_correction else 'no'}",
        ]

    def pair_terms(self, r2, ti, tj):
        """LJ energy and (dE/dr)/r from r² (eV, eV/Å²); no square root needed."""
        eps = self.parameter(self.epsilon, ti, tj, r2.dtype)
        sig = self.parameter(self.sigma, ti, tj, r2.dtype)
        sr2 = sig * sig / r2
        sr6 = sr2 * sr2 * sr2
        sr12 = sr6 * sr6
        energy = 4 * eps * (sr12 - sr6)
        dedr_over_r = -24 * eps * (2 * sr12 - sr6) / r2
        if self.shift:
            src6 = (sig / self.cutoff) ** 6
            energy = energy - 4 * eps * (src6 * src6 - src6)
        return energy, dedr_over_r


class Morse(PairModel):
    """E(r) = D[e^(−2α(r−r0)) − 2e^(−α(r−r0))] for r < cutoff (LAMMPS ``morse``).

    Args:
        D: well depth, eV.
        alpha: width, 1/Å.
        r0: equilibrium distance, Å.
        cutoff: Å.
        species: atomic numbers (default copper).
        shift: subtract E(cutoff) (``pair_modify shift yes``).
    """

    def __init__(
        self,
        D,
        alpha,
        r0,
        cutoff: float,
        species: Sequence[int] = (29,),
        shift: bool = False,
        skin: float = 0.5,
        compute_stress: bool = True,
    ):
        super().__init__(cutoff, species, skin, compute_stress)
        n = len(self.species)
        self.D = torch.nn.Parameter(_pair_table(D, n, "D"))
        self.alpha = torch.nn.Parameter(_pair_table(alpha, n, "alpha"))
        self.r0 = torch.nn.Parameter(_pair_table(r0, n, "r0"))
        self.shift = shift

    def lammps_commands(self, species: Sequence[str]) -> list[str]:
        """The same potential in LAMMPS input commands (types numbered in ``self.species`` order)."""
        return [
            f"pair_style morse {self.cutoff!r}",
            *_pair_coeff_lines([self.D, self.alpha, self.r0]),
            f"pair_modify shift {'yes' if self.shift else 'no'}",
        ]

    def pair_terms(self, r2, ti, tj):
        """Morse energy and (dE/dr)/r from r² (eV, eV/Å²)."""
        d = self.parameter(self.D, ti, tj, r2.dtype)
        a = self.parameter(self.alpha, ti, tj, r2.dtype)
        r0 = self.parameter(self.r0, ti, tj, r2.dtype)
        r = torch.sqrt(r2)
        x = torch.exp(-a * (r - r0))
        energy = d * (x * x - 2 * x)
        dedr_over_r = 2 * a * d * (x - x * x) / r
        if self.shift:
            xc = torch.exp(-a * (self.cutoff - r0))
            energy = energy - d * (xc * xc - 2 * xc)
        return energy, dedr_over_r


@register_model("lj/cut")
def _build_lennard_jones(spec: dict) -> LennardJones:
    return LennardJones(spec.pop("epsilon"), spec.pop("sigma"), spec.pop("cutoff"), **spec)


@register_model("morse")
def _build_morse(spec: dict) -> Morse:
    return Morse(spec.pop("D"), spec.pop("alpha"), spec.pop("r0"), spec.pop("cutoff"), **spec)


MIXING_RULES = ("none", "geometric", "arithmetic", "lorentz-berthelot", "sixthpower")
"""``lj/cut`` option ``mixing``: LAMMPS's ``pair_modify mix`` rules (``lorentz-berthelot`` is
LAMMPS's ``arithmetic``), or ``none`` (every pair named)."""


def mix_lennard_jones(
    rule: str, eps_i: torch.Tensor, eps_j: torch.Tensor, sig_i: torch.Tensor, sig_j: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ε_ij (eV) and σ_ij (Å) of an unlike pair from the like pairs' by ``rule``, as LAMMPS's
    ``pair_modify mix`` does: ``geometric`` ε = √(ε_iε_j), σ = √(σ_iσ_j); ``arithmetic`` (=
    ``lorentz-berthelot``) ε = √(ε_iε_j), σ = (σ_i + σ_j)/2; ``sixthpower`` ε = 2√(ε_iε_j)σ_i³σ_j³/(σ_i⁶
    + σ_j⁶), σ = ((σ_i⁶ + σ_j⁶)/2)^(1/6). Differentiable in all four."""
    eps = torch.sqrt(eps_i * eps_j)
    if rule == "geometric":
        return eps, torch.sqrt(sig_i * sig_j)
    if rule in ("arithmetic", "lorentz-berthelot"):
        return eps, 0.5 * (sig_i + sig_j)
    if rule == "sixthpower":
        s6 = sig_i**6 + sig_j**6
        return 2 * eps * sig_i**3 * sig_j**3 / s6, (0.5 * s6) ** (1 / 6)
    raise ValueError(f"mixing: expected one of {', '.join(MIXING_RULES[1:])}, got {rule!r}")


@register_form
@dataclasses.dataclass(frozen=True)
class LennardJonesForm(SpeciesPairForm):
    """``lj/cut``: ``epsilon_K`` (ε/k_B, K) and ``sigma_A`` (σ, Å); with several ``species``
    per pair, ``epsilon_K:Cu-Ni``. Cutoff ``cutoff_sigma`` × the largest σ of the pairs.

    With ``mixing`` (:data:`MIXING_RULES`) only the like pairs' parameters are fitted and the
    unlike pairs follow the rule (:func:`mix_lennard_jones`), except the unlike pairs listed in
    ``explicit_pairs``, which keep parameters of their own. LAMMPS gets every pair's coefficients
    written out (the same numbers its ``pair_modify mix`` would give).
    """

    pair_parameters = ("epsilon_K", "sigma_A")
    option_defaults = {
        "cutoff_sigma": 3.0,
        "shift": False,
        "tail_correction": True,
        "species": (),
        "mixing": "none",
        "explicit_pairs": (),
    }
    single_species_options = ("species", "mixing", "explicit_pairs")
    name = "lj/cut"

    def __post_init__(self) -> None:
        super().__post_init__()
        mixing = self.option("mixing")
        if mixing not in MIXING_RULES:
            raise ValueError(f"lj/cut: mixing: expected one of {', '.join(MIXING_RULES)}, got {mixing!r}")
        explicit = self.explicit_pairs
        if explicit and mixing == "none":
            raise ValueError(
                "lj/cut: explicit_pairs needs a mixing rule (with mixing: none every pair has its own parameters)"
            )
        if like := [self.pair_name(a, b) for a, b in explicit if a == b]:
            raise ValueError(f"lj/cut: explicit_pairs: {like} are like pairs, whose parameters are always fitted")

    @property
    def explicit_pairs(self) -> list[tuple[int, int]]:
        """Unlike pairs with their own parameters despite the mixing rule (option ``explicit_pairs``)."""
        return self.pairs_of("explicit_pairs", self.option("explicit_pairs"))

    @property
    def named_pairs(self) -> list[tuple[int, int]]:
        if self.option("mixing") == "none":
            return self.all_pairs
        explicit = set(self.explicit_pairs)
        return [(a, b) for a, b in self.all_pairs if a == b or (a, b) in explicit]

    def pairs_note(self) -> str:
        mixing = self.option("mixing")
        if mixing == "none" or len(self.species) == 1:
            return ""
        return f"; the other unlike pairs mixed by {mixing} (list a pair in explicit_pairs to fit it)"

    def _tables(self, params) -> dict[str, torch.Tensor]:
        """``epsilon`` (eV) and ``sigma`` (Å) tables, differentiable in ``params``."""
        eps = {p: v * KB_EV_PER_K for p, v in self.named_values(params, "epsilon_K").items()}
        sig = self.named_values(params, "sigma_A")
        for a, b in self.all_pairs:
            if (a, b) not in eps:
                eps[a, b], sig[a, b] = mix_lennard_jones(
                    self.option("mixing"), eps[a, a], eps[b, b], sig[a, a], sig[b, b]
                )
        return {"epsilon": self.table(eps), "sigma": self.table(sig)}

    def model(self, params, dtype=torch.float64):
        self.check(params)
        tables = self._tables({k: float(v) for k, v in params.items()})
        return LennardJones(
            tables["epsilon"],
            tables["sigma"],
            cutoff=self.option("cutoff_sigma") * float(tables["sigma"].max()),
            species=[atomic_number(s) for s in self.species],
            shift=self.option("shift"),
            tail_correction=self.option("tail_correction"),
        ).to(dtype)

    def model_tensors(self, params):
        return self._tables(params)

    def nearest_neighbour_A(self, params):
        """The minimum of the element's own pair, 2^(1/6) σ, Å."""
        own = self.species.index(self.element)
        return 2 ** (1 / 6) * float(params[self.parameter_name("sigma_A", own, own)])


@register_form
@dataclasses.dataclass(frozen=True)
class MorseForm(SpeciesPairForm):
    """``morse``: ``D_eV`` (eV), ``alpha_invA`` (1/Å), ``r0_A`` (Å); with several ``species``
    per pair, ``D_eV:Cu-Ni``; cutoff ``cutoff_A``.

    No mixing: LAMMPS's ``morse`` has no mixing rule (its unlike pairs must be given), and none is
    accepted for Morse, so every pair's parameters are named.
    """

    pair_parameters = ("D_eV", "alpha_invA", "r0_A")
    option_defaults = {"cutoff_A": None, "shift": False, "species": ()}
    option_help = {"cutoff_A": "a cutoff radius in Å"}
    name = "morse"

    def __post_init__(self) -> None:
        super().__post_init__()
        if "mixing" in self.options:
            raise ValueError(
                "morse: no mixing rule (LAMMPS morse mixes nothing): name D_eV, alpha_invA and r0_A of every pair"
            )

    def _tables(self, params) -> dict[str, torch.Tensor]:
        """``D`` (eV), ``alpha`` (1/Å), ``r0`` (Å) tables, differentiable in ``params``."""
        return {
            model_name: self.table(self.named_values(params, fit_name))
            for fit_name, model_name in zip(self.pair_parameters, ("D", "alpha", "r0"))
        }

    def model(self, params, dtype=torch.float64):
        self.check(params)
        tables = self._tables({k: float(v) for k, v in params.items()})
        return Morse(
            tables["D"],
            tables["alpha"],
            tables["r0"],
            cutoff=self.option("cutoff_A"),
            species=[atomic_number(s) for s in self.species],
            shift=self.option("shift"),
        ).to(dtype)

    def model_tensors(self, params):
        return self._tables(params)

    def nearest_neighbour_A(self, params):
        """The element's own equilibrium distance r0, Å."""
        own = self.species.index(self.element)
        return float(params[self.parameter_name("r0_A", own, own)])
