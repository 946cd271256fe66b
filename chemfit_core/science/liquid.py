"""Liquid-state targets from LAMMPS NPT runs: the objective term of one state point.

:class:`LiquidStatePointTerm` runs the template at (T, p) and compares the averages
(:mod:`chemfit_core.science.liquid_averages`: density, ΔHvap, response functions, thermo
columns; :mod:`chemfit_core.science.structure_observables`: RDF, self-diffusion) with their
references. The template gets the potential's LAMMPS lines as ``pair_lines``
(:func:`chemfit_core.science.rerun.form_template_variables`). The averages' names are
re-exported here, where callers import them from.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chemfit_core.abstract_objective_function import EvaluateContext, ObjectiveFunctor, Parameters
from chemfit_core.external.lammps import read_thermo
from chemfit_core.science.liquid_averages import (
    DIFFUSION_KEY,
    PROPERTY_UNITS,
    TARGET_UNITS,
    LiquidProperties,
    Reference,
    block_average,
    hvap_samples,
    liquid_properties,
    properties_from_log,
    run_template_variables,
)
from chemfit_core.science.molecules import RIGID, GasPhaseResult, Molecules
from chemfit_core.science.observables import (
    RESPONSE_UNITS,
    ThermoObservable,
    finite_difference_gradients,
    observable_gradients,
)
from chemfit_core.science.rerun import FormLammpsComputer
from chemfit_core.science.structure_observables import RdfTarget, structure_files, structure_properties
from chemfit_core.term_result import TermResult
from chemfit_core.units import EV_PER_ATOM_TO_KJ_PER_MOL, G_CM3_TO_KG_M3, KB_EV_PER_K

__all__ = [
    "DIFFUSION_KEY",
    "GRADIENT_METHODS",
    "PROPERTY_UNITS",
    "TARGET_UNITS",
    "LiquidProperties",
    "LiquidStatePointTerm",
    "Reference",
    "block_average",
    "hvap_samples",
    "liquid_properties",
    "properties_from_log",
    "run_template_variables",
]

GRADIENT_METHODS = ("model", "rerun", "auto")
"""Where ∂U/∂θ of the frames comes from: the torch model, LAMMPS reruns, or the model where it
reproduces LAMMPS's energies and reruns otherwise."""


class LiquidStatePointTerm(ObjectiveFunctor):
    """One NPT simulation at (T, p) with its own seed; loss = Σ ((x − x_ref)/d)².

    Reports a :class:`~chemfit_core.term_result.TermResult` (``ctx.result``): the
    properties with their standard errors and the residuals (x − x_ref)/d. With gradients
    (``gradients``, or ``form`` given), it also saves frames every ``dump_every`` steps and
    reports the properties' derivatives with respect to the fit's parameters and the
    residuals' Jacobian, from the fluctuation formula (:mod:`chemfit_core.science.fluctuation`):
    gradients from the same single run, with ∂U/∂θ of the frames from the torch model of
    ``form`` or from LAMMPS reruns of the frames (:mod:`chemfit_core.science.rerun`).

    Args:
        name: label of the term (logs, errors, work directories).
        template: LAMMPS input template (Jinja) of the NPT run.
        workdir: base folder of the per-evaluation directories.
        temperature_K, pressure_bar: the state point.
        references: ``{"density_kg_m3": Reference, "hvap_kJ_mol": Reference}`` (either or both).
        seed: velocity seed, fixed across evaluations (common random numbers).
        template_variables: further fixed template values (cell count, run lengths...).
        n_blocks: blocks for the standard errors.
        command_timeout: seconds one run may take.
        form: the potential form (:mod:`chemfit_core.models.forms`), for gradients.
        dump_every: steps between frames saved for gradients (a multiple of ``thermo_every``).
        files: input files copied into every run directory beside ``in.lammps`` (molecule,
            data, potential or include files the template reads by name).
        gradients: ``"model"`` (torch model of ``form``; its frame energies must equal LAMMPS's),
            ``"rerun"`` (LAMMPS reruns; the template must know ``rerun_dump``), ``"auto"`` (the
            model, switching to reruns for good when its energies differ), or None: ``"model"``
            when ``form`` is given, else no gradients.
        rerun_step: relative central-difference step of the reruns (h = rerun_step·|θ|).
        molecules: the box's molecules (per-molecule ΔHvap); None: an atomic liquid.
        gas: gas-phase run giving ⟨U_gas⟩ per molecule (and its gradient) at each evaluation;
            None: U_gas = 0 (atoms, rigid molecules).
        observables: thermo-column targets by name (their references in ``references``).
        lammps_form: the form whose LAMMPS lines the template gets as ``pair_lines`` (and reruns).
        fd_step: relative step of the forward finite differences (runs at θ + h, same seed) of
            observables whose ∂A/∂θ is unknown (and of the RDF and self-diffusion), when gradients
            are asked for.
        rdf: a g(r) target (per-bin residuals after the scalar ones); the template gets ``rdf``
            (:meth:`RdfTarget.template_variable`, None without one) and writes ``rdf.dat``.
        sample_every: steps between the RDF and MSD samples (default: ``thermo_every``); with a
            ``diffusion_1e9_m2_s`` reference the template gets ``msd`` (``every``, ``file``; else None)
            and writes ``msd.dat``.
    """

    def __init__(
        self,
        name: str,
        template: str | Path,
        workdir: Path | str,
        temperature_K: float,
        pressure_bar: float,
        references: Mapping[str, Reference],
        seed: int,
        template_variables: Mapping[str, Any] | None = None,
        n_blocks: int = 5,
        command_timeout: float | None = 3600.0,
        form: Any | None = None,
        dump_every: int = 100,
        output_cache: Any | None = None,
        files: Sequence[Path | str] = (),
        gradients: str | None = None,
        rerun_step: float = 1e-3,
        molecules: Molecules | None = None,
        gas: Any | None = None,
        observables: Mapping[str, ThermoObservable] | None = None,
        lammps_form: Any | None = None,
        fd_step: float = 0.01,
        rdf: RdfTarget | None = None,
        sample_every: int | None = None,
    ):
        from chemfit_core.science.fluctuation import FrameDerivatives, ModelDerivatives
        from chemfit_core.science.rerun import RerunDerivatives

        method = gradients or ("model" if form is not None else None)
        if method is not None and method not in GRADIENT_METHODS:
            raise ValueError(f"{name}: gradients must be one of {GRADIENT_METHODS} or None, got {method!r}")
        if method == "model" and form is None:
            raise ValueError(f"{name}: gradients from the torch model need the potential form")
        self.observables = dict(observables or {})
        known = set(TARGET_UNITS) | set(self.observables)
        unknown = set(references) - known
        if unknown:
            raise ValueError(f"{name}: unknown liquid properties {sorted(unknown)}; known: {sorted(known)}")
        self.responses = [key for key in RESPONSE_UNITS if key in references]
        self.fd_step = fd_step
        self.name = name
        self.temperature_K = temperature_K
        self.pressure_bar = pressure_bar
        self.references = dict(references)
        self.seed = seed
        self.n_blocks = n_blocks
        self.form = form
        self.molecules = molecules
        self.gas = gas
        self.gradient_method = method
        variables = run_template_variables(
            temperature_K, pressure_bar, seed, dump_every if method is not None else 0, template_variables
        )
        self.rdf = rdf
        self.diffusion = DIFFUSION_KEY in references
        every = int(sample_every or variables.get("thermo_every", 10))
        variables["rdf"] = rdf.template_variable(every) if rdf is not None else None
        variables["msd"] = {"every": every, "file": "msd.dat"} if self.diffusion else None
        if method is not None and dump_every % int(variables.get("thermo_every", 1)):
            raise ValueError(f"{name}: dump_every ({dump_every}) must be a multiple of thermo_every")
        self.computer = FormLammpsComputer(
            template,
            workdir,
            output_parsers=[self._parse],
            template_variables=variables,
            command_timeout=command_timeout,
            delete_temp_workdirs=False,  # the frames are read after parsing; removed below
            name=name,
            output_files=(["frames.dump"] if method is not None else []) + list(structure_files(rdf, self.diffusion)),
            output_cache=output_cache,
            presubmit_hook=self._copy_files if files else None,
            form=lammps_form,
        )
        self.files = [Path(f) for f in files]
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: input files must have distinct names (they land in one folder): {names}")
        self.frame_derivatives = FrameDerivatives(
            name,
            ModelDerivatives(form) if form is not None and method in ("model", "auto") else None,
            RerunDerivatives(template, variables, self.files, rerun_step, command_timeout, name, lammps_form)
            if method in ("rerun", "auto")
            else None,
        )
        self.gradient_source = None if method is None else self.frame_derivatives.source
        """Where ∂U/∂θ of the frames comes from: ``model`` or ``rerun`` (None: no gradients)."""

    def _copy_files(self, parameters: Parameters, workdir: Path) -> None:
        """Put the input files (molecule, data, potential, include files) beside the rendered input;
        the run cache hashes them with it."""
        for path in self.files:
            shutil.copyfile(path, workdir / path.name)

    def _parse(self, output_files: list[Path]) -> dict[str, Any]:
        log = next(p for p in output_files if p.name == "log.lammps")
        thermo = read_thermo(log)[-1]
        properties = liquid_properties(
            thermo,
            self.temperature_K,
            self.n_blocks,
            self.pressure_bar,
            self.molecules,
            responses=self.responses,
            observables=self.observables,
        ).as_dict()
        properties.update(structure_properties(log.parent, self.rdf, self.diffusion, self.n_blocks, self.name))
        properties["_thermo"] = thermo
        return properties

    def loss(self, properties: Mapping[str, float]) -> float:
        """Σ over referenced properties of ((value − reference)/denominator)²."""
        return math.fsum(r * r for r in self.residuals(properties))

    def residuals(self, properties: Mapping[str, Any]) -> list[float]:
        """(value − reference)/denominator for each referenced property, in a fixed order, then the
        RDF's per-bin residuals (:meth:`RdfTarget.residuals` of ``properties["rdf_g"]``)."""
        out = [(properties[key] - ref.value) / ref.denominator for key, ref in self.references.items()]
        return out + (self.rdf.residuals(properties["rdf_g"]) if self.rdf is not None else [])

    def __call__(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> float:
        if ctx is None:
            ctx = EvaluateContext()
        gas = RIGID if self.gas is None else self.gas(parameters)
        quantities = dict(self.computer(parameters, ctx))
        workdir = Path(ctx.meta.pop("workdir"))
        try:
            thermo = quantities.pop("_thermo")
            gradients = (
                self.property_gradients(parameters, thermo, workdir / "frames.dump", gas)
                if self.gradient_method is not None
                else {}
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if self.gradient_method is not None:
            extra = [DIFFUSION_KEY] * self.diffusion + ["rdf_g"] * (self.rdf is not None)
            gradients.update(finite_difference_gradients(self, parameters, quantities, extra))
        if self.gas is not None:  # ⟨U_gas⟩ per molecule: a separate ensemble, added to the liquid's part
            quantities["hvap_kJ_mol"] += gas.energy_kJ_mol
            quantities["hvap_kJ_mol_sem"] = math.hypot(quantities["hvap_kJ_mol_sem"], gas.energy_kJ_mol_sem)
            quantities["gas_energy_kJ_mol"] = gas.energy_kJ_mol
        residuals = self.residuals(quantities)
        rdf_g = {k: quantities.pop(k) for k in ("rdf_g", "rdf_g_sem") if k in quantities}
        rdf_dg = {k: gradients.pop(k) for k in ("rdf_g", "rdf_g_sem") if k in gradients}
        if rdf_g:
            ctx.meta["rdf"] = {"r_A": self.rdf.centres.tolist(), **{k: v.tolist() for k, v in rdf_g.items()}}
        jacobian = None
        if self.gradient_method is not None:
            rdf_rows = self.rdf.jacobian_rows(rdf_dg["rdf_g"]) if self.rdf is not None else {}
            jacobian = {
                name: [gradients[key][name] / ref.denominator for key, ref in self.references.items()]
                + rdf_rows.get(name, [])
                for name in parameters
            }
            ctx.meta["gradient_source"] = self.gradient_source
        if gradients:
            quantities["gradients"] = gradients  # with their standard errors (``<property>_sem``)
        ctx.quantities = quantities
        ctx.result = TermResult(
            residuals=residuals,
            jacobian=jacobian,
            properties={k: v for k, v in quantities.items() if k != "gradients" and not k.endswith("_sem")},
            standard_errors={k[: -len("_sem")]: v for k, v in quantities.items() if k.endswith("_sem")},
            derivatives={k: v for k, v in gradients.items() if not k.endswith("_sem")},
        )
        ctx.loss = math.fsum(r * r for r in residuals)
        return ctx.loss

    def property_gradients(
        self,
        parameters: Mapping[str, float],
        thermo: Mapping[str, np.ndarray],
        dump: Path,
        gas: GasPhaseResult = RIGID,
    ) -> dict[str, dict[str, float]]:
        """d⟨density⟩/dθ (kg/m³ per unit), d⟨ΔHvap⟩/dθ (kJ/mol per unit), and those of the response
        functions and of the thermo observables whose ∂A/∂θ is known, by the fluctuation formula, with
        block standard errors (keys ``..._sem``); ΔHvap's includes d⟨U_gas⟩/dθ of ``gas``."""
        from chemfit_core.science.fluctuation import property_gradients

        rows, d_energy = self.frame_derivatives(parameters, thermo, dump)
        self.gradient_source = self.frame_derivatives.source
        n = self.molecules.count if self.molecules is not None else int(thermo["Atoms"][-1])
        beta = 1.0 / (KB_EV_PER_K * self.temperature_K)
        frames = {key: column[rows] for key, column in thermo.items()}
        samples = {
            "density_kg_m3": frames["Density"] * G_CM3_TO_KG_M3,
            "hvap_kJ_mol": hvap_samples(frames, self.temperature_K, n, self.pressure_bar),
        }
        direct = {"hvap_kJ_mol": -d_energy / n * EV_PER_ATOM_TO_KJ_PER_MOL}
        out = property_gradients(samples, direct, d_energy, beta, list(parameters), self.n_blocks)
        out.update(
            observable_gradients(
                self.observables,
                self.responses,
                frames,
                d_energy,
                (self.temperature_K, self.pressure_bar),
                (int(thermo["Atoms"][-1]), n),
                list(parameters),
                self.n_blocks,
            )
        )
        if gas.gradient is not None:
            for name in parameters:
                out["hvap_kJ_mol"][name] += gas.gradient[name]
                out["hvap_kJ_mol_sem"][name] = math.hypot(out["hvap_kJ_mol_sem"][name], gas.gradient_sem[name])
        return out
