"""Potential forms: from a fit's named parameters (with units) to a torch model and back.

A fit names its parameters in the user's units (``epsilon_K``, ``sigma_A``,
``D_eV``...); a :class:`PotentialForm` turns a parameter dict into a torch model
(:mod:`chemfit_core.models`), maps parameter tensors onto the model's own
tensors differentiably (for gradients with respect to the fit's parameters), and
names what LAMMPS needs to run the same potential.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from chemfit_core.models import LennardJones, Model, Morse
from chemfit_core.units import KB_EV_PER_K


def _z(element: str) -> int:
    from ase.data import atomic_numbers

    if element not in atomic_numbers:
        raise ValueError(f"unknown element {element!r}")
    return atomic_numbers[element]


@dataclasses.dataclass(frozen=True)
class PotentialForm:
    """Base: ``parameter_names`` are the fit's names; ``options`` the fixed settings."""

    element: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    parameter_names: ClassVar[tuple[str, ...]] = ()

    def model(self, params: Mapping[str, float], dtype: torch.dtype = torch.float64) -> Model:
        """A model at ``params`` (missing names are an error)."""
        raise NotImplementedError

    def model_tensors(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's parameter tensors as differentiable functions of the fit's."""
        raise NotImplementedError

    def check(self, params: Mapping[str, Any]) -> None:
        """Raise naming the parameters this form needs but ``params`` lacks, or does not know."""
        missing = [n for n in self.parameter_names if n not in params]
        unknown = [n for n in params if n not in self.parameter_names]
        if missing or unknown:
            raise ValueError(f"{self.name} needs parameters {list(self.parameter_names)}; "
                             f"missing {missing}, unknown {unknown}")

    @property
    def name(self) -> str:
        """The form's name (LAMMPS pair style where one exists)."""
        raise NotImplementedError


class LennardJonesForm(PotentialForm):
    """``lj/cut``: ``epsilon_K`` (ε/k_B, K) and ``sigma_A`` (σ, Å); cutoff ``cutoff_sigma``·σ."""

    parameter_names = ("epsilon_K", "sigma_A")
    name = "lj/cut"

    def model(self, params, dtype=torch.float64):
        self.check(params)
        return LennardJones(
            params["epsilon_K"] * KB_EV_PER_K, params["sigma_A"],
            cutoff=self.options.get("cutoff_sigma", 3.0) * params["sigma_A"], species=(_z(self.element),),
            shift=self.options.get("shift", False), tail_correction=self.options.get("tail_correction", False),
        ).to(dtype)

    def model_tensors(self, params):
        return {"epsilon": (params["epsilon_K"] * KB_EV_PER_K).reshape(1, 1), "sigma": params["sigma_A"].reshape(1, 1)}


class MorseForm(PotentialForm):
    """``morse``: ``D_eV`` (eV), ``alpha_invA`` (1/Å), ``r0_A`` (Å); cutoff ``cutoff_A``."""

    parameter_names = ("D_eV", "alpha_invA", "r0_A")
    name = "morse"

    def model(self, params, dtype=torch.float64):
        self.check(params)
        return Morse(params["D_eV"], params["alpha_invA"], params["r0_A"], cutoff=self.options["cutoff_A"],
                     species=(_z(self.element),), shift=self.options.get("shift", False)).to(dtype)

    def model_tensors(self, params):
        return {"D": params["D_eV"].reshape(1, 1), "alpha": params["alpha_invA"].reshape(1, 1),
                "r0": params["r0_A"].reshape(1, 1)}


class AnalyticEAMForm(PotentialForm):
    """``eam/analytic`` (:class:`~chemfit_core.models.eam.AnalyticEAM`): ``D_eV``, ``alpha_invA``,
    ``r0_A`` (Morse pair), ``A_eV`` and ``B_eV`` (embedding −A√ρ + Bρ²), ``beta`` (density
    e^{−β(r/re−1)}); options ``re_A`` (fixed: it is degenerate with A and β), ``cutoff_A``
    and ``width_A`` (smooth cutoff). LAMMPS runs it as ``eam/alloy`` through
    :meth:`~chemfit_core.models.eam.AnalyticEAM.write_setfl`."""

    parameter_names = ("D_eV", "alpha_invA", "r0_A", "A_eV", "B_eV", "beta")
    name = "eam/analytic"
    _model_names = ("D", "alpha", "r0", "A", "B", "beta")

    def model(self, params, dtype=torch.float64):
        from chemfit_core.models.eam import AnalyticEAM

        self.check(params)
        values = {m: params[n] for n, m in zip(self.parameter_names, self._model_names)}
        return AnalyticEAM(**values, re=self.options.get("re_A", 2.556), cutoff=self.options.get("cutoff_A", 5.5),
                           width=self.options.get("width_A", 1.0), species=(_z(self.element),)).to(dtype)

    def model_tensors(self, params):
        return {m: params[n].reshape(()) for n, m in zip(self.parameter_names, self._model_names)}


FORMS: dict[str, type[PotentialForm]] = {"lj/cut": LennardJonesForm, "morse": MorseForm,
                                         "eam/analytic": AnalyticEAMForm}


def potential_form(spec: Mapping[str, Any]) -> PotentialForm:
    """The form of a config's ``potential`` section (``form``, ``element`` and options)."""
    spec = dict(spec)
    name = spec.pop("form")
    element = spec.pop("element", "Ar")
    if name not in FORMS:
        raise ValueError(f"unknown potential form {name!r}; known: {', '.join(FORMS)}")
    return FORMS[name](element=element, options=spec)
