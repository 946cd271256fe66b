"""Potential forms: the one path from a fit's named parameters (user units) to a model.

A fit names its parameters in the user's units (``epsilon_K``, ``sigma_A``, ``D_eV``...).
A :class:`PotentialForm` is the only place that knows what they mean. From a parameter
dict it gives

- :meth:`~PotentialForm.model`: the torch model (:mod:`chemfit_core.models`);
- :meth:`~PotentialForm.model_tensors`: the model's own tensors as differentiable
  functions of the fit's parameters (gradients with respect to the fit's parameters);
- :meth:`~PotentialForm.lammps_commands`: what LAMMPS runs for the same potential
  (``pair_style``/``pair_coeff`` lines, writing a potential file where the style needs one);
- :meth:`~PotentialForm.nearest_neighbour_A`: where a crystal of it starts from;
- :meth:`~PotentialForm.spec`: the options it uses, as ``params.json`` records them.

Every stage (liquid MD gradients, crystal and structure targets, the solid stage, the
LAMMPS round trip, ``chemfit relax --fit-params``) goes through these objects. A new form
is one subclass here, registered in :data:`FORMS`, plus its schema entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
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
    """Base: ``parameter_names`` are the fit's names; ``options`` the fixed settings.

    ``option_defaults`` lists every option the form uses with its default (``None``:
    required); :meth:`spec` records exactly those.
    """

    element: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    parameter_names: ClassVar[tuple[str, ...]] = ()
    option_defaults: ClassVar[Mapping[str, Any]] = {}
    option_help: ClassVar[Mapping[str, str]] = {}
    """What a required option is, in words (for error messages)."""
    name: ClassVar[str] = ""

    def option(self, key: str) -> Any:
        """The value of option ``key`` (the form's default when not given)."""
        value = self.options.get(key, self.option_defaults[key])
        if value is None:
            raise ValueError(f"{self.name} needs the option {key!r}")
        return value

    def spec(self) -> dict[str, Any]:
        """``{"form", "element", <options the form uses>}``: what ``params.json`` records."""
        return {
            "form": self.name,
            "element": self.element,
            **{
                key: self.options.get(key, default)
                for key, default in self.option_defaults.items()
                if self.options.get(key, default) is not None
            },
        }

    def check(self, params: Mapping[str, Any]) -> None:
        """Raise naming the parameters this form needs but ``params`` lacks, or does not know."""
        missing = [n for n in self.parameter_names if n not in params]
        unknown = [n for n in params if n not in self.parameter_names]
        if missing or unknown:
            raise ValueError(
                f"{self.name} needs parameters {list(self.parameter_names)}; missing {missing}, unknown {unknown}"
            )

    def model(self, params: Mapping[str, float], dtype: torch.dtype = torch.float64) -> Model:
        """The torch model at ``params`` (missing names are an error)."""
        raise NotImplementedError

    def model_tensors(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's parameter tensors as differentiable functions of the fit's."""
        raise NotImplementedError

    def lammps_commands(self, params: Mapping[str, float], workdir: Path | str | None = None) -> list[str]:
        """LAMMPS input lines for the same potential (types numbered as the model's species);
        a form that needs a potential file writes it into ``workdir``."""
        return self.model(params).lammps_commands([self.element])

    def nearest_neighbour_A(self, params: Mapping[str, float]) -> float:
        """A nearest-neighbour distance (Å) to build this form's crystals from before relaxing."""
        raise NotImplementedError


class LennardJonesForm(PotentialForm):
    """``lj/cut``: ``epsilon_K`` (ε/k_B, K) and ``sigma_A`` (σ, Å); cutoff ``cutoff_sigma``·σ."""

    parameter_names = ("epsilon_K", "sigma_A")
    option_defaults = {"cutoff_sigma": 3.0, "shift": False, "tail_correction": True}
    name = "lj/cut"

    def model(self, params, dtype=torch.float64):
        self.check(params)
        return LennardJones(
            params["epsilon_K"] * KB_EV_PER_K,
            params["sigma_A"],
            cutoff=self.option("cutoff_sigma") * params["sigma_A"],
            species=(_z(self.element),),
            shift=self.option("shift"),
            tail_correction=self.option("tail_correction"),
        ).to(dtype)

    def model_tensors(self, params):
        return {"epsilon": (params["epsilon_K"] * KB_EV_PER_K).reshape(1, 1), "sigma": params["sigma_A"].reshape(1, 1)}

    def nearest_neighbour_A(self, params):
        return 2 ** (1 / 6) * float(params["sigma_A"])  # the pair minimum


class MorseForm(PotentialForm):
    """``morse``: ``D_eV`` (eV), ``alpha_invA`` (1/Å), ``r0_A`` (Å); cutoff ``cutoff_A``."""

    parameter_names = ("D_eV", "alpha_invA", "r0_A")
    option_defaults = {"cutoff_A": None, "shift": False}
    option_help = {"cutoff_A": "a cutoff radius in Å"}
    name = "morse"

    def model(self, params, dtype=torch.float64):
        self.check(params)
        return Morse(
            params["D_eV"],
            params["alpha_invA"],
            params["r0_A"],
            cutoff=self.option("cutoff_A"),
            species=(_z(self.element),),
            shift=self.option("shift"),
        ).to(dtype)

    def model_tensors(self, params):
        return {
            "D": params["D_eV"].reshape(1, 1),
            "alpha": params["alpha_invA"].reshape(1, 1),
            "r0": params["r0_A"].reshape(1, 1),
        }

    def nearest_neighbour_A(self, params):
        return float(params["r0_A"])


class AnalyticEAMForm(PotentialForm):
    """``eam/analytic`` (:class:`~chemfit_core.models.eam.AnalyticEAM`): ``D_eV``, ``alpha_invA``,
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
        from chemfit_core.models.eam import AnalyticEAM

        self.check(params)
        values = {m: params[n] for n, m in zip(self.parameter_names, self._model_names)}
        return AnalyticEAM(
            **values,
            re=self.option("re_A"),
            cutoff=self.option("cutoff_A"),
            width=self.option("width_A"),
            species=(_z(self.element),),
        ).to(dtype)

    def model_tensors(self, params):
        return {m: params[n].reshape(()) for n, m in zip(self.parameter_names, self._model_names)}

    def lammps_commands(self, params, workdir=None):
        if workdir is None:
            raise ValueError("eam/analytic reaches LAMMPS through a setfl file: give the folder to write it to")
        from chemfit_core.models.eam import EAM

        path = self.model(params).write_setfl(Path(workdir).resolve() / self.setfl_name)
        return EAM.from_setfl(path).lammps_commands([self.element])

    def nearest_neighbour_A(self, params):
        return float(self.option("re_A"))


FORMS: dict[str, type[PotentialForm]] = {form.name: form for form in (LennardJonesForm, MorseForm, AnalyticEAMForm)}
"""Every potential form a fit can name, by its config name."""


def potential_form(spec: Mapping[str, Any]) -> PotentialForm:
    """The form of a config's ``potential`` section (``form``, ``element`` and options)."""
    spec = dict(spec)
    name = spec.pop("form")
    element = spec.pop("element", "Ar")
    if name not in FORMS:
        raise ValueError(f"unknown potential form {name!r}; known: {', '.join(FORMS)}")
    return FORMS[name](element=element, options=spec)


def fitted_form(summary: Mapping[str, Any]) -> tuple[PotentialForm, dict[str, float]]:
    """The form and the fitted parameters of one fit's ``params.json`` entry."""
    return potential_form(summary["potential"]), {name: e["value"] for name, e in summary["parameters"].items()}
