"""Liquid-state targets from LAMMPS NPT runs: density and enthalpy of vaporisation.

Units at the edges are the user's (kg/m³, kJ/mol, K, bar); LAMMPS runs in
``units metal`` (eV, Å, ps, bar, g/cm³). ΔHvap assumes an ideal vapour:
ΔHvap = ⟨U_gas⟩ − ⟨U⟩/N + RT − p⟨V⟩/N (the last term is ~0.003 kJ/mol at 1 atm, kept
for exactness), N the atoms of an atomic liquid or the molecules of a molecular one
(:mod:`chemfit_core.science.molecules`; ⟨U_gas⟩ = 0 unless a gas-phase run gives it).
Statistical errors are standard errors of the mean from block averages, so correlated MD
frames are not counted as independent. Further targets (thermo columns, κ_T, α_P, c_P) are in
:mod:`chemfit_core.science.observables`; the template gets the potential's LAMMPS lines as
``pair_lines`` (:func:`chemfit_core.science.rerun.form_template_variables`).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chemfit_core.abstract_objective_function import EvaluateContext, ObjectiveFunctor, Parameters
from chemfit_core.errors import ChemFitError
from chemfit_core.external.lammps import read_thermo
from chemfit_core.science.molecules import RIGID, GasPhaseResult, Molecules
from chemfit_core.science.observables import (
    RESPONSE_UNITS,
    ThermoObservable,
    finite_difference_gradients,
    observable_gradients,
    response_properties,
)
from chemfit_core.science.rerun import FormLammpsComputer
from chemfit_core.term_result import TermResult
from chemfit_core.units import (
    BAR_A3_TO_KJ_PER_MOL,
    EV_PER_ATOM_TO_KJ_PER_MOL,
    G_CM3_TO_KG_M3,
    GAS_CONSTANT_KJ_PER_MOL_K,
    KB_EV_PER_K,
)

GRADIENT_METHODS = ("model", "rerun", "auto")
"""Where ∂U/∂θ of the frames comes from: the torch model, LAMMPS reruns, or the model where it
reproduces LAMMPS's energies and reruns otherwise."""
PROPERTY_UNITS = {"density_kg_m3": "kg/m³", "hvap_kJ_mol": "kJ/mol"}
"""The properties every liquid run reports."""
TARGET_UNITS = {**PROPERTY_UNITS, **RESPONSE_UNITS}
"""The built-in liquid targets (besides thermo-column observables), with their units."""


def block_average(samples: Sequence[float] | np.ndarray, n_blocks: int = 5) -> tuple[float, float]:
    """Mean and standard error of the mean of correlated samples, from ``n_blocks`` block means."""
    x = np.asarray(samples, dtype=float)
    if x.size < n_blocks or n_blocks < 2:
        raise ChemFitError(f"need at least {max(n_blocks, 2)} samples for block averaging, got {x.size}")
    usable = x.size - x.size % n_blocks
    blocks = x[x.size - usable :].reshape(n_blocks, -1).mean(axis=1)
    return float(x.mean()), float(blocks.std(ddof=1) / math.sqrt(n_blocks))


@dataclass(frozen=True)
class LiquidProperties:
    """Averages of one NPT production run, with standard errors."""

    density_kg_m3: float
    density_kg_m3_sem: float
    hvap_kJ_mol: float
    hvap_kJ_mol_sem: float
    temperature_K: float
    pressure_bar: float
    n_atoms: int
    n_frames: int
    n_molecules: int
    """Molecules in the box (the atoms of an atomic liquid): the N of the per-molecule ΔHvap."""
    observables: Mapping[str, float] = field(default_factory=dict)
    """Response functions and thermo-column observables asked for: ``name`` and ``name_sem``."""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON, CSV and ``ctx.meta``), the observables at the top level."""
        out = asdict(self)
        return {**out, **out.pop("observables")}


def liquid_properties(
    thermo: Mapping[str, np.ndarray],
    temperature_K: float,
    n_blocks: int = 5,
    pressure_bar: float | None = None,
    molecules: Molecules | None = None,
    gas: GasPhaseResult = RIGID,
    responses: Sequence[str] = (),
    observables: Mapping[str, ThermoObservable] | None = None,
) -> LiquidProperties:
    """Density and ΔHvap from a production thermo table, and the response functions ``responses``
    (:data:`~chemfit_core.science.observables.RESPONSE_UNITS`) and thermo-column ``observables``
    asked for, each with its block standard error.

    ΔHvap = ⟨U_gas⟩ − U/N − p V/N + RT (ideal gas), N the atoms, or with ``molecules`` the
    molecules (the run's atom count is checked against them), ⟨U_gas⟩ per molecule from
    ``gas`` (kJ/mol; 0 for atoms and rigid molecules), its standard error added in quadrature.
    ``pressure_bar`` is the barostat's set point,
    used for p (H = U + p_ext V, the NPT enthalpy, as ForceBalance does); without it the
    instantaneous pressure is used, which adds its fluctuations (±0.03 kJ/mol for
    argon) and makes the parameter derivative of H depend on the virial.

    The table needs the columns ``Atoms``, ``PotEng`` (total, eV: ``thermo_modify
    norm no``), ``Density`` (g/cm³), ``Volume`` (Å³), ``Press`` (bar) and ``Temp``
    (K). ``temperature_K`` is the thermostat's set point used in RT.
    """
    missing = [c for c in ("Atoms", "PotEng", "Density", "Volume", "Press", "Temp") if c not in thermo]
    if missing:
        raise ChemFitError(
            f"thermo output lacks {', '.join(missing)}; the template's production run needs "
            "`thermo_style custom step atoms temp press pe density vol` with `thermo_modify norm no`"
        )
    n_atoms = int(thermo["Atoms"][-1])
    if np.any(thermo["Atoms"] != n_atoms):
        raise ChemFitError("atoms were lost during the production run")
    if molecules is not None:
        molecules.check_atoms(n_atoms, "liquid run")
    n = molecules.count if molecules is not None else n_atoms
    density, density_sem = block_average(thermo["Density"] * G_CM3_TO_KG_M3, n_blocks)
    hvap, hvap_sem = block_average(hvap_samples(thermo, temperature_K, n, pressure_bar), n_blocks)
    extra = response_properties(thermo, temperature_K, n, responses, pressure_bar, n_blocks)
    for name, observable in (observables or {}).items():
        extra[name], extra[f"{name}_sem"] = block_average(observable.samples(thermo, n_atoms, n), n_blocks)
    return LiquidProperties(
        density_kg_m3=density,
        density_kg_m3_sem=density_sem,
        hvap_kJ_mol=hvap + gas.energy_kJ_mol,
        hvap_kJ_mol_sem=math.hypot(hvap_sem, gas.energy_kJ_mol_sem),
        temperature_K=float(np.mean(thermo["Temp"])),
        pressure_bar=float(np.mean(thermo["Press"])),
        n_atoms=n_atoms,
        n_frames=int(len(thermo["PotEng"])),
        n_molecules=n,
        observables=extra,
    )


def hvap_samples(
    thermo: Mapping[str, np.ndarray], temperature_K: float, n: int, pressure_bar: float | None = None
) -> np.ndarray:
    """Per-row −U/N − pV/N + RT (kJ/mol) of a thermo table, N atoms or molecules (⟨U_gas⟩ not included)."""
    u_kj = thermo["PotEng"] / n * EV_PER_ATOM_TO_KJ_PER_MOL
    pressure = thermo["Press"] if pressure_bar is None else pressure_bar
    pv_kj = pressure * thermo["Volume"] / n * BAR_A3_TO_KJ_PER_MOL
    return -u_kj - pv_kj + GAS_CONSTANT_KJ_PER_MOL_K * temperature_K


def properties_from_log(
    log_path: Path | str,
    temperature_K: float,
    n_blocks: int = 5,
    pressure_bar: float | None = None,
    molecules: Molecules | None = None,
    gas: GasPhaseResult = RIGID,
    responses: Sequence[str] = (),
    observables: Mapping[str, ThermoObservable] | None = None,
) -> LiquidProperties:
    """:func:`liquid_properties` of the last ``run`` in a LAMMPS log."""
    thermo = read_thermo(log_path)[-1]
    return liquid_properties(thermo, temperature_K, n_blocks, pressure_bar, molecules, gas, responses, observables)


def run_template_variables(
    temperature_K: float,
    pressure_bar: float,
    seed: int,
    dump_every: int = 0,
    template_variables: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Variables of one NPT run of a :class:`LiquidStatePointTerm` besides the parameters (which
    the computer adds when it renders): the state point, the seed, k_B, ``dump_every`` (0: no
    frames), ``rerun_dump`` (None: an MD run; :mod:`chemfit_core.science.rerun` sets it) and the
    fixed ``template_variables``."""
    return {
        "temperature_K": temperature_K,
        "pressure_bar": pressure_bar,
        "seed": seed,
        "kB_eV_per_K": KB_EV_PER_K,
        "dump_every": dump_every,
        "rerun_dump": None,
        **(template_variables or {}),
    }


@dataclass(frozen=True)
class Reference:
    """A measured value the fit aims at, and the denominator that scales its residual."""

    value: float
    denominator: float
    source: str = ""


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
            observables whose ∂A/∂θ is unknown, when gradients are asked for.
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
            output_files=["frames.dump"] if method is not None else [],  # cached with the log
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
        properties["_thermo"] = thermo
        return properties

    def loss(self, properties: Mapping[str, float]) -> float:
        """Σ over referenced properties of ((value − reference)/denominator)²."""
        return math.fsum(r * r for r in self.residuals(properties))

    def residuals(self, properties: Mapping[str, float]) -> list[float]:
        """(value − reference)/denominator for each referenced property, in a fixed order."""
        return [(properties[key] - ref.value) / ref.denominator for key, ref in self.references.items()]

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
            gradients.update(finite_difference_gradients(self, parameters, quantities))
        if self.gas is not None:  # ⟨U_gas⟩ per molecule: a separate ensemble, added to the liquid's part
            quantities["hvap_kJ_mol"] += gas.energy_kJ_mol
            quantities["hvap_kJ_mol_sem"] = math.hypot(quantities["hvap_kJ_mol_sem"], gas.energy_kJ_mol_sem)
            quantities["gas_energy_kJ_mol"] = gas.energy_kJ_mol
        residuals = self.residuals(quantities)
        jacobian = None
        if self.gradient_method is not None:
            jacobian = {
                name: [gradients[key][name] / ref.denominator for key, ref in self.references.items()]
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
        ctx.loss = self.loss(quantities)
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
