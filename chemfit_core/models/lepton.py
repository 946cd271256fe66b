"""Pair potentials written down as an expression: LAMMPS ``pair_style lepton`` and its torch twin.

The expressions (lepton syntax, E in eV, r in Å) are parsed and evaluated by
:mod:`chemfit_core.models.lepton_expression` (whose names are importable from here too);
:class:`LeptonPair` is the torch model of one expression per species pair, :class:`LeptonForm`
the form ``lepton``. Truncated at the cutoff; ``shift=True`` subtracts E(cutoff) as
``pair_modify shift yes`` does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import torch

from chemfit_core.models.base import PairModel
from chemfit_core.models.forms import PotentialForm, atomic_number, register_form
from chemfit_core.models.lepton_expression import (
    LEPTON_FUNCTIONS,
    SUPPORTED_FUNCTIONS,
    PairExpression,
    R,
    parse_expression,
)
from chemfit_core.models.registry import register_model

__all__ = [
    "LEPTON_FUNCTIONS",
    "SUPPORTED_FUNCTIONS",
    "LeptonForm",
    "LeptonPair",
    "PairExpression",
    "PairTerm",
    "R",
    "pair_terms_of",
    "parse_expression",
]


@dataclasses.dataclass(frozen=True)
class PairTerm:
    """The expression of the species pair ``i <= j`` (``label``: ``Cu-O``); ``names`` maps each of
    its symbols to the parameter's name (``D``, or ``D:Cu-O`` with several species)."""

    i: int
    j: int
    label: str
    expression: PairExpression
    names: Mapping[str, str]


def pair_terms_of(expression: str | Mapping[str, str], species: Sequence[str]) -> list[PairTerm]:
    """One :class:`PairTerm` per unordered pair of ``species`` (chemical symbols, in type order):
    ``expression`` is one formula for every pair, or ``{"A-B": formula}`` (either order) for each."""
    n = len(species)
    if n == 0 or len(set(species)) != n:
        raise ValueError(f"species: expected distinct chemical symbols, got {list(species)}")
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    texts = dict.fromkeys(pairs, expression) if isinstance(expression, str) else {}
    if not isinstance(expression, (str, Mapping)):
        raise ValueError(f"expression: expected a formula of r in lepton syntax, got {expression!r}")
    for key, text in {} if isinstance(expression, str) else expression.items():
        ends = str(key).split("-")
        if len(ends) != 2 or any(e not in species for e in ends):
            raise ValueError(f"expression: {key!r} is not a pair A-B of the species {list(species)}")
        pair = tuple(sorted(species.index(e) for e in ends))
        if pair in texts:
            raise ValueError(f"expression: the pair {key!r} is given twice")
        texts[pair] = text
    missing = [f"{species[i]}-{species[j]}" for i, j in pairs if (i, j) not in texts]
    if missing:
        raise ValueError(f"expression: no formula for the pair(s) {', '.join(missing)}")
    terms = []
    for i, j in pairs:
        label, parsed = f"{species[i]}-{species[j]}", parse_expression(texts[(i, j)])
        terms.append(PairTerm(i, j, label, parsed, {p: p if n == 1 else f"{p}:{label}" for p in parsed.parameters}))
    return terms


def _canonical(name: str, species: Sequence[str]) -> str:
    """A parameter's name as :func:`pair_terms_of` gives it: ``D:Ni-Cu`` -> ``D:Cu-Ni`` (species
    order); ``D:Cu-Cu`` -> ``D`` for one species."""
    base, _, pair = name.partition(":")
    if len(species) == 1:
        return base
    ends = pair.split("-")
    return f"{base}:{'-'.join(sorted(ends, key=species.index))}" if set(ends) <= set(species) else name


class LeptonPair(PairModel):
    """E(r) of each species pair given as a lepton expression, for r < cutoff (LAMMPS ``lepton``).

    Args:
        expression: E(r) in eV with r in Å (lepton syntax), or one per pair ``{"Cu-O": ...}``.
        parameters: value of every parameter the expressions name (bare names for one species,
            ``<name>:<A>-<B>`` in either order for several), in the units the expressions imply.
        cutoff: Å.
        species: atomic numbers (default copper).
        shift: subtract E(cutoff) of each pair (``pair_modify shift yes``).
    """

    def __init__(
        self,
        expression: str | Mapping[str, str],
        parameters: Mapping[str, float],
        cutoff: float,
        species: Sequence[int] = (29,),
        shift: bool = False,
        skin: float = 0.5,
        compute_stress: bool = True,
    ):
        super().__init__(cutoff, species, skin, compute_stress)
        from ase.data import chemical_symbols

        symbols = [chemical_symbols[z] for z in self.species]
        self.expression, self.shift = expression if isinstance(expression, str) else dict(expression), shift
        self.terms = pair_terms_of(expression, symbols)
        given = {_canonical(name, symbols): value for name, value in parameters.items()}
        for term in self.terms:
            if absent := [s for s, name in term.names.items() if name not in given]:
                raise ValueError(
                    f"expression {term.expression.text!r}{f' ({term.label})' if len(symbols) > 1 else ''}: "
                    f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} neither r nor a parameter "
                    f"(parameters given: {', '.join(given) or 'none'})"
                )
        used = [name for term in self.terms for name in term.names.values()]
        if unused := [name for name in given if name not in used]:
            raise ValueError(f"parameters {unused} appear in no expression (the expressions name {used})")
        self.coefficients = torch.nn.ParameterDict(
            {name: torch.nn.Parameter(torch.tensor(float(given[name]), dtype=torch.float64)) for name in used}
        )
        table = torch.zeros(len(symbols), len(symbols), dtype=torch.long)
        for k, term in enumerate(self.terms):
            table[term.i, term.j] = table[term.j, term.i] = k
        self.register_buffer("_term_of_pair", table, persistent=False)

    def _term_values(self, term: PairTerm, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = {s: self.coefficients[name].to(r.dtype) for s, name in term.names.items()}
        energy, dedr = term.expression.evaluate(r, values)
        if self.shift:
            energy = energy - term.expression.evaluate(r.new_full((1,), self.cutoff), values)[0]
        return energy, dedr

    def pair_terms(self, r2, ti, tj):
        """Pair energy (eV) and (dE/dr)/r (eV/Å²) from r² (Å²), each pair by its own expression."""
        r = torch.sqrt(r2)
        if ti is None:
            energy, dedr = self._term_values(self.terms[0], r)
            return energy, dedr / r
        which = self._term_of_pair[ti, tj]
        energy, dedr = torch.zeros_like(r), torch.zeros_like(r)
        for k, term in enumerate(self.terms):
            sel = torch.nonzero(which == k).squeeze(1)
            e, d = self._term_values(term, r[sel])
            energy, dedr = energy.index_copy(0, sel, e), dedr.index_copy(0, sel, d)
        return energy, dedr / r

    def lammps_commands(self, species: Sequence[str]) -> list[str]:
        """The same potential in LAMMPS input commands (types numbered in ``self.species`` order)."""
        lines = [f"pair_style lepton {self.cutoff!r}"]
        for t in self.terms:
            values = {s: float(self.coefficients[name].detach()) for s, name in t.names.items()}
            lines.append(f'pair_coeff {t.i + 1} {t.j + 1} "{t.expression.lepton(values)}"')
        return [*lines, f"pair_modify shift {'yes' if self.shift else 'no'}"]


@register_model("lepton")
def _build_lepton(spec: dict) -> LeptonPair:
    """``{"expression", "parameters", "cutoff", "species"[, "shift"]}``; ``parameters`` flat
    (``{"D": ...}``, ``{"D:Cu-O": ...}``) or per pair (``{"Cu-O": {"D": ...}}``)."""
    if not spec.get("species"):
        raise ValueError("model 'lepton' needs the species (at least one element)")
    parameters: dict[str, float] = {}
    for key, value in dict(spec.pop("parameters", {})).items():
        parameters.update({f"{n}:{key}": v for n, v in value.items()} if isinstance(value, Mapping) else {key: value})
    return LeptonPair(spec.pop("expression"), parameters, spec.pop("cutoff"), **spec)


@register_form
@dataclasses.dataclass(frozen=True)
class LeptonForm(PotentialForm):
    """``lepton``: the pair energy as an expression (option ``expression``, lepton syntax, E in eV,
    r in Å); the fit's parameters are its symbols other than r, in the units the user gives them
    (``<name>:<A>-<B>`` when option ``species`` lists several elements); cutoff ``cutoff_A``."""

    option_defaults = {"expression": None, "cutoff_A": None, "shift": False, "species": ()}
    option_help = {"expression": "a pair energy E(r) in LAMMPS lepton syntax (eV, r in Å)", "cutoff_A": "a cutoff in Å"}
    name = "lepton"

    def __post_init__(self) -> None:
        self._terms  # noqa: B018 - parse and check the expression now, before any job

    @property
    def species(self) -> tuple[str, ...]:
        """Chemical symbols in type order: option ``species``, else the fit's element alone."""
        species = tuple(self.options.get("species") or (self.element,))
        for symbol in species:
            atomic_number(symbol)  # an unknown symbol is an error naming it
        if self.element not in species:
            raise ValueError(f"species: {list(species)} does not hold the fit's element {self.element}")
        return species

    @cached_property
    def _terms(self) -> list[PairTerm]:
        return pair_terms_of(self.option("expression"), list(self.species))

    @property
    def parameter_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(name for term in self._terms for name in term.names.values())

    def spec(self) -> dict[str, Any]:
        return {k: v for k, v in super().spec().items() if k != "species" or v}

    def model(self, params, dtype=torch.float64):
        self.check(params)
        return LeptonPair(
            self.option("expression"),
            {name: float(params[name]) for name in self.parameter_names},
            cutoff=self.option("cutoff_A"),
            species=[atomic_number(s) for s in self.species],
            shift=self.option("shift"),
        ).to(dtype)

    def model_tensors(self, params):
        return {f"coefficients.{name}": params[name].reshape(()) for name in self.parameter_names}

    def lammps_commands(self, params, workdir=None):
        return self.model(params).lammps_commands(list(self.species))

    def nearest_neighbour_A(self, params):
        """The minimum of the element's own pair energy on (0.5 Å, cutoff), to ~1e-6 Å."""
        own = self.species.index(self.element)
        term = next(t for t in self._terms if t.i == t.j == own)
        values = {s: torch.tensor(float(params[name]), dtype=torch.float64) for s, name in term.names.items()}
        r = torch.linspace(0.5, float(self.option("cutoff_A")), 20001, dtype=torch.float64)
        with torch.no_grad():
            energy = torch.nan_to_num(term.expression.evaluate(r, values)[0], nan=math.inf)
        k = int(energy.argmin())
        if k in (0, len(r) - 1):
            raise ValueError(f"expression {term.expression.text!r}: no minimum of E(r) between 0.5 Å and the cutoff")
        down, mid, up = (float(e) for e in energy[k - 1 : k + 2])  # the parabola through three points
        return float(r[k]) + 0.5 * float(r[1] - r[0]) * (down - up) / max(down - 2 * mid + up, 1e-300)
