"""Parameters per pair of species: the one naming, table building and check of the pair forms.

A form of several species (option ``species``, the chemical symbols in LAMMPS type order) names
each pair's parameters ``<name>:<A>-<B>``, ``A`` and ``B`` in species order (``epsilon_K:Cu-Ni``,
``A_eV:Mg-O``); a form of one species keeps the bare names (``epsilon_K``), so a single-element
config reads as it always did. :class:`SpeciesPairForm` turns such parameters into the symmetric
``[n_species, n_species]`` tables of the torch models, differentiably (the fit's gradients flow
through every entry), and names an unknown pair or a missing parameter in its errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from chemfit_core.models.forms import PotentialForm, atomic_number

Pair = tuple[int, int]
"""Indices (a ≤ b) of two species in the form's species order."""


def scalar(value: Any) -> torch.Tensor:
    """``value`` (a float or a 0-d/1-element tensor) as a 0-d float64 tensor, keeping its graph."""
    return torch.as_tensor(value, dtype=torch.float64).reshape(())


@dataclasses.dataclass(frozen=True)
class SpeciesPairForm(PotentialForm):
    """Base of the forms whose parameters belong to pairs of species.

    ``pair_parameters`` are one pair's parameter names without the pair (``("epsilon_K",
    "sigma_A")``); :attr:`named_pairs` are the pairs that have them (all pairs unless a subclass
    says otherwise: Buckingham's ``pairs``, a mixing rule's like pairs). ``option_defaults``
    gives ``species`` as None (required) or ``()`` (default: the fit's ``element`` alone).
    """

    pair_parameters: ClassVar[tuple[str, ...]] = ()
    single_species_options: ClassVar[tuple[str, ...]] = ("species",)
    """Options that mean nothing with one species: :meth:`spec` leaves them out then (when the
    form's ``species`` is optional), so a single-element fit records what it always did."""

    def __post_init__(self) -> None:
        species = self.species
        if not species or len(set(species)) != len(species):
            raise ValueError(f"{self.name}: species must be distinct chemical symbols, got {species}")
        for symbol in species:
            atomic_number(symbol)  # an unknown symbol is an error naming it
        if self.element not in species:
            raise ValueError(f"{self.name}: species {species} do not hold the fit's element {self.element}")

    @property
    def species(self) -> list[str]:
        """The chemical symbols, in the order of the model's tables and of LAMMPS's types."""
        value = self.option("species")
        return [value] if isinstance(value, str) else list(value or [self.element])

    @property
    def all_pairs(self) -> list[Pair]:
        """Every pair of species indices (a ≤ b)."""
        n = len(self.species)
        return [(a, b) for a in range(n) for b in range(a, n)]

    @property
    def named_pairs(self) -> list[Pair]:
        """The pairs with parameters of their own (default: all of them)."""
        return self.all_pairs

    def pair_name(self, a: int, b: int) -> str:
        """``X-Y`` of a pair of species indices, in species order."""
        a, b = sorted((a, b))
        return f"{self.species[a]}-{self.species[b]}"

    def parameter_name(self, base: str, a: int, b: int) -> str:
        """The fit's name of parameter ``base`` of pair (a, b): ``base:X-Y``, or ``base`` for one species."""
        return base if len(self.species) == 1 else f"{base}:{self.pair_name(a, b)}"

    def pairs_of(self, key: str, value: str | Sequence[str]) -> list[Pair]:
        """The pairs an option ``key`` lists as ``X-Y`` names, in species order of the pairs; an
        unknown species, a malformed name or a pair given twice is an error naming ``key``."""
        index = {s: k for k, s in enumerate(self.species)}
        chosen: set[Pair] = set()
        for pair in [value] if isinstance(value, str) else value:
            parts = str(pair).split("-")
            if len(parts) != 2 or any(p not in index for p in parts):
                raise ValueError(
                    f"{self.name}: unknown species pair {pair!r} in {key}; expected X-Y of the species {self.species}"
                )
            a, b = sorted(index[p] for p in parts)
            if (a, b) in chosen:
                raise ValueError(f"{self.name}: pair {pair!r} given twice in {key}")
            chosen.add((a, b))
        return [p for p in self.all_pairs if p in chosen]

    def extra_parameter_names(self) -> tuple[str, ...]:
        """Parameters that belong to no pair (Buckingham's fitted charges); none by default."""
        return ()

    @property
    def parameter_names(self) -> tuple[str, ...]:  # type: ignore[override]
        names = [self.parameter_name(base, a, b) for a, b in self.named_pairs for base in self.pair_parameters]
        return (*names, *self.extra_parameter_names())

    def pairs_note(self) -> str:
        """What an error message adds about how the pairs without parameters are treated."""
        return ""

    def check(self, params: Mapping[str, Any]) -> None:
        """Raise naming the unknown parameters (a species pair the form does not have) and the
        missing ones of ``params``."""
        known = set(self.parameter_names)
        unknown = [n for n in params if n not in known]
        missing = [n for n in self.parameter_names if n not in params]
        if unknown or missing:
            if len(self.species) == 1:
                what = f"{self.name} needs parameters {list(self.parameter_names)}"
            else:
                pairs = ", ".join(self.pair_name(a, b) for a, b in self.named_pairs) or "none"
                what = f"{self.name} (species {self.species}; pairs with parameters: {pairs}{self.pairs_note()})"
            hint = " (a species pair must be X-Y in species order, one of the pairs with parameters)"
            raise ValueError(
                f"{what}: unknown parameters {unknown}{hint if unknown and len(self.species) > 1 else ''}, "
                f"missing parameters {missing}"
            )

    def named_values(self, params: Mapping[str, Any], base: str) -> dict[Pair, torch.Tensor]:
        """Parameter ``base`` of every named pair, as 0-d tensors differentiable in ``params``."""
        return {(a, b): scalar(params[self.parameter_name(base, a, b)]) for a, b in self.named_pairs}

    def table(self, values: Mapping[Pair, torch.Tensor]) -> torch.Tensor:
        """The symmetric ``[n, n]`` table of per-pair values (every pair a ≤ b given), differentiable."""
        n = len(self.species)
        return torch.stack([torch.stack([values[(min(a, b), max(a, b))] for b in range(n)]) for a in range(n)])

    def spec(self) -> dict[str, Any]:
        """As :meth:`PotentialForm.spec`; a form of one species whose ``species`` is optional
        records none of :attr:`single_species_options`."""
        out = super().spec()
        if len(self.species) == 1 and self.option_defaults.get("species") is not None:
            out = {k: v for k, v in out.items() if k not in self.single_species_options}
        return out

    def lammps_commands(self, params: Mapping[str, float], workdir: Any = None) -> list[str]:
        """The model's LAMMPS lines, types numbered in species order (masses: the data file's)."""
        return self.model(params).lammps_commands(self.species)
