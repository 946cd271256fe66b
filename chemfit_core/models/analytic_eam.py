"""A Finnis–Sinclair-type analytic EAM whose parameters are fitted, and its form ``eam/analytic``.

Its parameters are tensors (gradients by autograd); :meth:`AnalyticEAM.write_setfl`
tabulates it for LAMMPS (``pair_style eam/alloy``). Energies and forces are assembled as
for the tabulated :class:`~chemfit_core.models.eam.EAM`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from chemfit_core.models.eam import EAM, _EAMBase
from chemfit_core.models.forms import PotentialForm, atomic_number, register_form
from chemfit_core.models.registry import register_model


def smooth_cutoff(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """ψ(x) = x⁴/(1+x⁴), x = (r − cutoff)/width, for r < cutoff, 0 beyond: C² at the cutoff."""
    x = torch.clamp((r - cutoff) / width, max=0.0)
    x4 = x**4
    return x4 / (1 + x4)


class AnalyticEAM(_EAMBase):
    """Finnis–Sinclair-type EAM for one element, all parameters fittable (autograd).

    φ(r) = D [e^{−2α(r−r0)} − 2 e^{−α(r−r0)}] ψ(r)  (pair, eV)
    ρ(r) = e^{−β(r/re − 1)} ψ(r)                       (density, dimensionless)
    F(ρ) = −A √ρ + B ρ²                                 (embedding, eV)

    with ψ the smooth cutoff of :func:`smooth_cutoff` (``cutoff``, ``width`` in Å).

    Args:
        D: pair well depth, eV.  alpha: pair stiffness, 1/Å.  r0: pair minimum, Å.
        A: embedding strength, eV.  B: embedding curvature, eV.  beta: density decay
        (dimensionless).  re: density reference distance, Å (only β/re and A·e^{β/2} enter
        the energy, so fit β with re fixed).  cutoff, width: Å.  species: one element.
    """

    PARAMETERS = ("D", "alpha", "r0", "A", "B", "beta", "re")

    def __init__(
        self,
        D: float = 0.05,
        alpha: float = 1.5,
        r0: float = 2.8,
        A: float = 1.2,
        B: float = 0.0,
        beta: float = 5.0,
        re: float = 2.556,
        cutoff: float = 5.5,
        width: float = 1.0,
        species: Sequence[int] | int = (29,),
        skin: float = 0.5,
        compute_stress: bool = True,
    ):
        species = [species] if isinstance(species, int) else list(species)
        if len(species) != 1:
            raise ValueError("AnalyticEAM describes one element")
        super().__init__(cutoff, species, skin, compute_stress)
        self.width = float(width)
        for name, value in zip(self.PARAMETERS, (D, alpha, r0, A, B, beta, re)):
            setattr(self, name, torch.nn.Parameter(torch.tensor(float(value), dtype=torch.float64)))

    def parameters_dict(self) -> dict[str, float]:
        """Current parameter values (eV, Å, 1/Å)."""
        return {name: getattr(self, name).item() for name in self.PARAMETERS}

    def set_parameters(self, values: Mapping[str, float]) -> None:
        """Overwrite parameters by name; an unknown name is an error."""
        for name, value in values.items():
            if name not in self.PARAMETERS:
                raise KeyError(f"AnalyticEAM has no parameter {name!r}; it has {self.PARAMETERS}")
            with torch.no_grad():
                getattr(self, name).fill_(float(value))

    def _p(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return getattr(self, name).to(like.dtype)

    def embedding(self, rho, types):
        # √ρ has an infinite slope at 0: an isolated atom (ρ = 0) gets F = 0 and no force
        safe = torch.where(rho > 0, rho, torch.ones_like(rho))
        root = torch.where(rho > 0, torch.sqrt(safe), torch.zeros_like(rho))
        return -self._p("A", rho) * root + self._p("B", rho) * rho * rho

    def density(self, r, tj=None):
        return torch.exp(-self._p("beta", r) * (r / self._p("re", r) - 1)) * smooth_cutoff(r, self.cutoff, self.width)

    def pair(self, r, ti=None, tj=None):
        a = torch.exp(-self._p("alpha", r) * (r - self._p("r0", r)))
        return self._p("D", r) * (a * a - 2 * a) * smooth_cutoff(r, self.cutoff, self.width)

    def write_setfl(
        self,
        path: str | Path,
        nrho: int = 10000,
        rhomax: float | None = None,
        nr: int = 10000,
        comment: str = "chemfit_core AnalyticEAM",
    ) -> Path:
        """Tabulate the model as a LAMMPS ``setfl`` file (``pair_style eam/alloy``); returns the path.

        ``rhomax`` defaults to 50 × ρ(re) (twelve neighbours at 0.8·re stay inside the table);
        LAMMPS continues F linearly beyond it.
        """
        from ase.data import atomic_masses, chemical_symbols, reference_states

        z = self.species[0]
        symbol = chemical_symbols[z]
        if rhomax is None:
            with torch.no_grad():
                rhomax = 50 * float(self.density(self.re.detach().clone()))
        dr = self.cutoff / (nr - 1)
        drho = rhomax / (nrho - 1)
        with torch.no_grad():
            r = torch.arange(nr, dtype=torch.float64) * dr
            rho_grid = torch.arange(nrho, dtype=torch.float64) * drho
            frho = self.embedding(rho_grid, None).numpy()
            rhor = self.density(r).numpy()
            z2r = (r * self.pair(r)).numpy()
        state = reference_states[z] or {}
        lattice = state.get("a", 0.0)
        structure = state.get("symmetry", "fcc")

        def block(values: np.ndarray) -> str:
            return "\n".join(" ".join(f"{v:.16e}" for v in values[k : k + 5]) for k in range(0, len(values), 5))

        path = Path(path)
        text = "\n".join(
            [
                comment,
                f"parameters {self.parameters_dict()}",
                f"cutoff {self.cutoff} width {self.width}",
                f"1 {symbol}",
                f"{nrho} {drho!r} {nr} {dr!r} {self.cutoff!r}",
                f"{z} {atomic_masses[z]:.4f} {lattice} {structure}",
                block(frho),
                block(rhor),
                block(z2r),
                "",
            ]
        )
        path.write_text(text)
        return path


@register_model("eam/analytic")
def _build_analytic(spec: dict) -> AnalyticEAM:
    return AnalyticEAM(**spec)


@register_form
class AnalyticEAMForm(PotentialForm):
    """``eam/analytic`` (:class:`AnalyticEAM`): ``D_eV``, ``alpha_invA``,
    ``r0_A`` (Morse pair), ``A_eV`` and ``B_eV`` (embedding −A√ρ + Bρ²), ``beta`` (density
    e^{−β(r/re−1)}); options ``re_A`` (fixed: it is degenerate with A and β), ``cutoff_A``
    and ``width_A`` (smooth cutoff). LAMMPS runs it as ``eam/alloy`` from a setfl file
    that :meth:`lammps_commands` writes."""

    parameter_names = ("D_eV", "alpha_invA", "r0_A", "A_eV", "B_eV", "beta")
    option_defaults = {"re_A": 2.556, "cutoff_A": 5.5, "width_A": 1.0}
    name = "eam/analytic"
    _model_names = ("D", "alpha", "r0", "A", "B", "beta")
    setfl_name: ClassVar[str] = "fitted.eam.alloy"

    def model(self, params, dtype=torch.float64):
        self.check(params)
        values = {m: params[n] for n, m in zip(self.parameter_names, self._model_names)}
        return AnalyticEAM(
            **values,
            re=self.option("re_A"),
            cutoff=self.option("cutoff_A"),
            width=self.option("width_A"),
            species=(atomic_number(self.element),),
        ).to(dtype)

    def model_tensors(self, params):
        return {m: params[n].reshape(()) for n, m in zip(self.parameter_names, self._model_names)}

    def lammps_commands(self, params, workdir=None):
        if workdir is None:
            raise ValueError("eam/analytic reaches LAMMPS through a setfl file: give the folder to write it to")
        path = self.model(params).write_setfl(Path(workdir).resolve() / self.setfl_name)
        return EAM.from_setfl(path).lammps_commands([self.element])

    def nearest_neighbour_A(self, params):
        return float(self.option("re_A"))
