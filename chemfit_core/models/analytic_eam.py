"""A Finnis–Sinclair-type analytic EAM whose parameters are fitted, and its form ``eam/analytic``.

One element or an alloy of any elements: a pair term per unordered species pair, a density
and an embedding function per element. Its parameters are tensors (gradients by autograd);
:meth:`AnalyticEAM.write_setfl` tabulates it for LAMMPS (``pair_style eam/alloy``, every
element in one file). Energies and forces are assembled as for the tabulated
:class:`~chemfit_core.models.eam.EAM`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from chemfit_core.models.eam import EAM, _EAMBase
from chemfit_core.models.forms import atomic_number, register_form
from chemfit_core.models.registry import register_model
from chemfit_core.models.species_pairs import SpeciesPairForm, scalar


def smooth_cutoff(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """ψ(x) = x⁴/(1+x⁴), x = (r − cutoff)/width, for r < cutoff, 0 beyond: C² at the cutoff."""
    x = torch.clamp((r - cutoff) / width, max=0.0)
    x4 = x**4
    return x4 / (1 + x4)


def _parameter_values(name: str, value: Any, n: int, pair: bool) -> torch.Tensor:
    """``value`` as the tensor of parameter ``name``: 0-d with one species; with ``n`` species a
    symmetric ``[n, n]`` table (``pair``) or an ``[n]`` vector, one value meaning all entries."""
    values = torch.as_tensor(value, dtype=torch.float64).detach().clone()
    if n == 1:
        if values.numel() != 1:
            raise ValueError(f"AnalyticEAM: {name} of one species is one value, got shape {list(values.shape)}")
        return torch.tensor(float(values.reshape(())), dtype=torch.float64)
    shape = (n, n) if pair else (n,)
    if values.dim() == 0:
        return values.expand(shape).clone()
    what = f"a symmetric [{n}, {n}] table (one per species pair)" if pair else f"[{n}] (one per element)"
    if tuple(values.shape) != shape:
        raise ValueError(f"AnalyticEAM: {name} must be one value or {what}, got shape {list(values.shape)}")
    if pair and not torch.equal(values, values.T):
        raise ValueError(f"AnalyticEAM: {name} must be {what}; it is not symmetric")
    return values


class AnalyticEAM(_EAMBase):
    """Finnis–Sinclair-type EAM for one element or several, all parameters fittable (autograd).

    φ_ab(r) = D_ab [e^{−2α_ab(r−r0_ab)} − 2 e^{−α_ab(r−r0_ab)}] ψ(r)  (pair of species a, b, eV)
    ρ_b(r) = e^{−β_b(r/re_b − 1)} ψ(r)        (density an atom of species b gives, dimensionless)
    F_a(ρ) = −A_a √ρ + B_a ρ²                  (embedding of an atom of species a, eV)

    with ψ the smooth cutoff of :func:`smooth_cutoff` (``cutoff``, ``width`` in Å). With one
    species every parameter is a scalar; with n, D, alpha, r0 are symmetric [n, n] tables and
    A, B, beta, re [n] vectors in species order (a single number sets every entry).

    Args:
        D: pair well depth, eV.  alpha: pair stiffness, 1/Å.  r0: pair minimum, Å.
        A: embedding strength, eV.  B: embedding curvature, eV.  beta: density decay
        (dimensionless).  re: density reference distance, Å (for one element only β/re and
        A·e^{β/2} enter the energy, so fit β with re fixed).  cutoff, width: Å.
        species: atomic numbers, the order of the tables and of LAMMPS's types.
    """

    PARAMETERS = ("D", "alpha", "r0", "A", "B", "beta", "re")
    PAIR_PARAMETERS = ("D", "alpha", "r0")

    def __init__(
        self,
        D: Any = 0.05,
        alpha: Any = 1.5,
        r0: Any = 2.8,
        A: Any = 1.2,
        B: Any = 0.0,
        beta: Any = 5.0,
        re: Any = 2.556,
        cutoff: float = 5.5,
        width: float = 1.0,
        species: Sequence[int] | int = (29,),
        skin: float = 0.5,
        compute_stress: bool = True,
    ):
        species = [species] if isinstance(species, int) else list(species)
        if not species or len(set(species)) != len(species):
            raise ValueError(f"AnalyticEAM: species must be distinct atomic numbers, got {species}")
        super().__init__(cutoff, species, skin, compute_stress)
        self.width = float(width)
        n = len(self.species)
        for name, value in zip(self.PARAMETERS, (D, alpha, r0, A, B, beta, re)):
            values = _parameter_values(name, value, n, name in self.PAIR_PARAMETERS)
            setattr(self, name, torch.nn.Parameter(values))

    def parameters_dict(self) -> dict[str, Any]:
        """Current parameter values (eV, Å, 1/Å): floats with one species, nested lists with several."""
        return {name: getattr(self, name).detach().tolist() for name in self.PARAMETERS}

    def set_parameters(self, values: Mapping[str, Any]) -> None:
        """Overwrite parameters by name (shapes as in the constructor); an unknown name is an error."""
        for name, value in values.items():
            if name not in self.PARAMETERS:
                raise KeyError(f"AnalyticEAM has no parameter {name!r}; it has {self.PARAMETERS}")
            checked = _parameter_values(name, value, len(self.species), name in self.PAIR_PARAMETERS)
            with torch.no_grad():
                getattr(self, name).copy_(checked)

    def _p(self, name: str, like: torch.Tensor, *index: Any) -> torch.Tensor:
        """Parameter ``name`` in ``like``'s dtype: the scalar with one species, else the entries of
        its table at ``index`` (species indices: ints, or tensors per atom or per pair)."""
        value = getattr(self, name).to(like.dtype)
        return value if value.dim() == 0 else value[index]

    def embedding(self, rho, types):
        # √ρ has an infinite slope at 0: an isolated atom (ρ = 0) gets F = 0 and no force
        safe = torch.where(rho > 0, rho, torch.ones_like(rho))
        root = torch.where(rho > 0, torch.sqrt(safe), torch.zeros_like(rho))
        return -self._p("A", rho, types) * root + self._p("B", rho, types) * rho * rho

    def density(self, r, tj=None):
        decay = self._p("beta", r, tj) * (r / self._p("re", r, tj) - 1)
        return torch.exp(-decay) * smooth_cutoff(r, self.cutoff, self.width)

    def pair(self, r, ti=None, tj=None):
        a = torch.exp(-self._p("alpha", r, ti, tj) * (r - self._p("r0", r, ti, tj)))
        return self._p("D", r, ti, tj) * (a * a - 2 * a) * smooth_cutoff(r, self.cutoff, self.width)

    def write_setfl(
        self,
        path: str | Path,
        nrho: int = 10000,
        rhomax: float | None = None,
        nr: int = 10000,
        comment: str = "chemfit_core AnalyticEAM",
    ) -> Path:
        """Tabulate the model as a LAMMPS ``setfl`` file (``pair_style eam/alloy``); returns the path.

        Every species in species order: its F and ρ, then r·φ of every pair (a ≥ b). ``rhomax``
        defaults to 50 × the largest ρ_b(re_b) (twelve neighbours at 0.8·re stay inside the
        table); LAMMPS continues F linearly beyond it.
        """
        from ase.data import atomic_masses, chemical_symbols, reference_states

        n = len(self.species)
        re = self.re.detach().clone().reshape(-1)
        if rhomax is None:
            with torch.no_grad():
                rhomax = 50 * max(float(self.density(re[b], b)) for b in range(n))
        dr = self.cutoff / (nr - 1)
        drho = rhomax / (nrho - 1)

        def block(values: torch.Tensor) -> str:
            values = values.numpy()
            return "\n".join(" ".join(f"{v:.16e}" for v in values[k : k + 5]) for k in range(0, len(values), 5))

        lines = [
            comment,
            f"parameters {self.parameters_dict()}",
            f"cutoff {self.cutoff} width {self.width}",
            f"{n} {' '.join(chemical_symbols[z] for z in self.species)}",
            f"{nrho} {drho!r} {nr} {dr!r} {self.cutoff!r}",
        ]
        with torch.no_grad():
            r = torch.arange(nr, dtype=torch.float64) * dr
            rho_grid = torch.arange(nrho, dtype=torch.float64) * drho
            for a, z in enumerate(self.species):
                state = reference_states[z] or {}
                lattice, structure = state.get("a", 0.0), state.get("symmetry", "fcc")
                lines.append(f"{z} {atomic_masses[z]:.4f} {lattice} {structure}")
                lines += [block(self.embedding(rho_grid, a)), block(self.density(r, a))]
            lines += [block(r * self.pair(r, a, b)) for a in range(n) for b in range(a + 1)]
        path = Path(path)
        path.write_text("\n".join([*lines, ""]))
        return path


@register_model("eam/analytic")
def _build_analytic(spec: dict) -> AnalyticEAM:
    return AnalyticEAM(**spec)


_MODEL_NAMES = {"D_eV": "D", "alpha_invA": "alpha", "r0_A": "r0", "A_eV": "A", "B_eV": "B", "beta": "beta"}
"""The fit's name of each parameter → the model's."""


@register_form
@dataclasses.dataclass(frozen=True)
class AnalyticEAMForm(SpeciesPairForm):
    """``eam/analytic`` (:class:`AnalyticEAM`): ``D_eV``, ``alpha_invA``, ``r0_A`` (Morse pair
    per species pair, ``D_eV:<A>-<B>``... with several ``species``), ``A_eV`` and ``B_eV``
    (embedding −A√ρ + Bρ²) and ``beta`` (density e^{−β(r/re−1)}) per element (``A_eV:<El>``...
    with several species); bare names with one species. Options ``species`` (LAMMPS type
    order; default the fit's element), ``re_A`` (fixed: degenerate with A and β for one element;
    one distance for every element or ``{El: Å}``), ``cutoff_A`` and ``width_A`` (smooth
    cutoff). LAMMPS runs it as ``eam/alloy`` from a setfl file that :meth:`lammps_commands`
    writes."""

    pair_parameters = ("D_eV", "alpha_invA", "r0_A")
    element_parameters: ClassVar[tuple[str, ...]] = ("A_eV", "B_eV", "beta")
    option_defaults = {"re_A": 2.556, "cutoff_A": 5.5, "width_A": 1.0, "species": ()}
    name = "eam/analytic"
    setfl_name: ClassVar[str] = "fitted.eam.alloy"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.re_values()

    def element_parameter_name(self, base: str, symbol: str) -> str:
        """The fit's name of per-element parameter ``base`` of ``symbol``: ``base:El``, bare for one species."""
        return base if len(self.species) == 1 else f"{base}:{symbol}"

    def extra_parameter_names(self) -> tuple[str, ...]:
        return tuple(self.element_parameter_name(base, s) for s in self.species for base in self.element_parameters)

    def pairs_note(self) -> str:
        return f"; per element: {', '.join(f'{p}:<El>' for p in self.element_parameters)} for El in {self.species}"

    def re_values(self) -> list[float]:
        """``re_A`` of every species in species order, Å; a bad value is an error naming ``re_A``."""
        value = self.option("re_A")
        if isinstance(value, Mapping):
            if set(value) != set(self.species):
                raise ValueError(
                    f"{self.name}: re_A must give a distance in Å for exactly the species {self.species}, "
                    f"got {sorted(value)}"
                )
            values = [value[s] for s in self.species]
        else:
            values = [value] * len(self.species)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
            raise ValueError(f"{self.name}: re_A must be a distance > 0 in Å (or one per species), got {value!r}")
        return [float(v) for v in values]

    def _tensors(self, params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The model's D, alpha, r0 tables and A, B, beta vectors of several species, differentiable."""
        out = {_MODEL_NAMES[base]: self.table(self.named_values(params, base)) for base in self.pair_parameters}
        for base in self.element_parameters:
            out[_MODEL_NAMES[base]] = torch.stack(
                [scalar(params[self.element_parameter_name(base, s)]) for s in self.species]
            )
        return out

    def model(self, params, dtype=torch.float64):
        self.check(params)
        if len(self.species) == 1:
            values = {m: params[n] for n, m in _MODEL_NAMES.items()}
            re = self.re_values()[0]
        else:
            values = self._tensors({k: float(v) for k, v in params.items()})
            re = self.re_values()
        return AnalyticEAM(
            **values,
            re=re,
            cutoff=self.option("cutoff_A"),
            width=self.option("width_A"),
            species=[atomic_number(s) for s in self.species],
        ).to(dtype)

    def model_tensors(self, params):
        if len(self.species) == 1:
            return {m: params[n].reshape(()) for n, m in _MODEL_NAMES.items()}
        return self._tensors(params)

    def lammps_commands(self, params, workdir=None):
        if workdir is None:
            raise ValueError("eam/analytic reaches LAMMPS through a setfl file: give the folder to write it to")
        path = self.model(params).write_setfl(Path(workdir).resolve() / self.setfl_name)
        return EAM.from_setfl(path).lammps_commands(self.species)

    def nearest_neighbour_A(self, params):
        """``re_A`` of the fit's element, Å."""
        return self.re_values()[self.species.index(self.element)]
