"""Liquid-state targets from LAMMPS NPT runs: density and enthalpy of vaporisation.

Units at the edges are the user's (kg/m³, kJ/mol, K, bar); LAMMPS runs in
``units metal`` (eV, Å, ps, bar, g/cm³). ΔHvap assumes an ideal vapour:
ΔHvap = −⟨U⟩/N + RT − p⟨V⟩/N (the last term is ~0.003 kJ/mol at 1 atm, kept
for exactness). Statistical errors are standard errors of the mean from block
averages, so correlated MD frames are not counted as independent.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chemfit_core.abstract_objective_function import EvaluateContext, ObjectiveFunctor, Parameters
from chemfit_core.errors import ChemFitError
from chemfit_core.external.lammps import LammpsQuantityComputer, read_thermo
from chemfit_core.term_result import TermResult
from chemfit_core.units import (
    BAR_A3_TO_KJ_PER_MOL,
    EV_PER_ATOM_TO_KJ_PER_MOL,
    G_CM3_TO_KG_M3,
    GAS_CONSTANT_KJ_PER_MOL_K,
    KB_EV_PER_K,
)

PROPERTY_UNITS = {"density_kg_m3": "kg/m³", "hvap_kJ_mol": "kJ/mol"}


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

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON, CSV and ``ctx.meta``)."""
        return asdict(self)


def liquid_properties(
    thermo: Mapping[str, np.ndarray], temperature_K: float, n_blocks: int = 5, pressure_bar: float | None = None
) -> LiquidProperties:
    """Density and ΔHvap from a production thermo table.

    ΔHvap = −U/N − p V/N + RT (ideal gas). ``pressure_bar`` is the barostat's set point,
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
    density, density_sem = block_average(thermo["Density"] * G_CM3_TO_KG_M3, n_blocks)
    u_kj = thermo["PotEng"] / n_atoms * EV_PER_ATOM_TO_KJ_PER_MOL
    pressure = thermo["Press"] if pressure_bar is None else pressure_bar
    pv_kj = pressure * thermo["Volume"] / n_atoms * BAR_A3_TO_KJ_PER_MOL
    hvap_samples = -u_kj - pv_kj + GAS_CONSTANT_KJ_PER_MOL_K * temperature_K
    hvap, hvap_sem = block_average(hvap_samples, n_blocks)
    return LiquidProperties(
        density_kg_m3=density,
        density_kg_m3_sem=density_sem,
        hvap_kJ_mol=hvap,
        hvap_kJ_mol_sem=hvap_sem,
        temperature_K=float(np.mean(thermo["Temp"])),
        pressure_bar=float(np.mean(thermo["Press"])),
        n_atoms=n_atoms,
        n_frames=int(len(thermo["PotEng"])),
    )


def properties_from_log(
    log_path: Path | str, temperature_K: float, n_blocks: int = 5, pressure_bar: float | None = None
) -> LiquidProperties:
    """:func:`liquid_properties` of the last ``run`` in a LAMMPS log."""
    return liquid_properties(read_thermo(log_path)[-1], temperature_K, n_blocks, pressure_bar)


def run_template_variables(
    temperature_K: float,
    pressure_bar: float,
    seed: int,
    dump_every: int = 0,
    template_variables: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Variables of one NPT run of a :class:`LiquidStatePointTerm` besides the parameters (which
    the computer adds when it renders): the state point, the seed, k_B, ``dump_every`` (0: no
    frames) and the fixed ``template_variables``."""
    return {
        "temperature_K": temperature_K,
        "pressure_bar": pressure_bar,
        "seed": seed,
        "kB_eV_per_K": KB_EV_PER_K,
        "dump_every": dump_every,
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
    properties with their standard errors and the residuals (x − x_ref)/d. With ``form``
    given, it also saves frames every ``dump_every`` steps and reports the properties'
    derivatives with respect to the fit's parameters and the residuals' Jacobian, from
    the fluctuation formula (:mod:`chemfit_core.science.fluctuation`): gradients from the
    same single run.

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
    ):
        unknown = set(references) - set(PROPERTY_UNITS)
        if unknown:
            raise ValueError(f"{name}: unknown liquid properties {sorted(unknown)}; known: {sorted(PROPERTY_UNITS)}")
        self.name = name
        self.temperature_K = temperature_K
        self.pressure_bar = pressure_bar
        self.references = dict(references)
        self.seed = seed
        self.n_blocks = n_blocks
        self.form = form
        variables = run_template_variables(
            temperature_K, pressure_bar, seed, dump_every if form is not None else 0, template_variables
        )
        if form is not None and dump_every % int(variables.get("thermo_every", 1)):
            raise ValueError(f"{name}: dump_every ({dump_every}) must be a multiple of thermo_every")
        self.computer = LammpsQuantityComputer(
            template,
            workdir,
            output_parsers=[self._parse],
            template_variables=variables,
            command_timeout=command_timeout,
            delete_temp_workdirs=False,  # the frames are read after parsing; removed below
            name=name,
            output_files=["frames.dump"] if form is not None else [],  # cached with the log
            output_cache=output_cache,
            presubmit_hook=self._copy_files if files else None,
        )
        self.files = [Path(f) for f in files]
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: input files must have distinct names (they land in one folder): {names}")

    def _copy_files(self, parameters: Parameters, workdir: Path) -> None:
        """Put the input files (molecule, data, potential, include files) beside the rendered input;
        the run cache hashes them with it."""
        for path in self.files:
            shutil.copyfile(path, workdir / path.name)

    def _parse(self, output_files: list[Path]) -> dict[str, Any]:
        log = next(p for p in output_files if p.name == "log.lammps")
        thermo = read_thermo(log)[-1]
        properties = liquid_properties(thermo, self.temperature_K, self.n_blocks, self.pressure_bar).as_dict()
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
        quantities = dict(self.computer(parameters, ctx))
        workdir = Path(ctx.meta.pop("workdir"))
        try:
            thermo = quantities.pop("_thermo")
            gradients = (
                self.property_gradients(parameters, thermo, workdir / "frames.dump") if self.form is not None else {}
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        residuals = self.residuals(quantities)
        jacobian = None
        if self.form is not None:
            jacobian = {
                name: [gradients[key][name] / ref.denominator for key, ref in self.references.items()]
                for name in parameters
            }
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
        self, parameters: Mapping[str, float], thermo: Mapping[str, np.ndarray], dump: Path
    ) -> dict[str, dict[str, float]]:
        """d⟨density⟩/dθ (kg/m³ per unit) and d⟨ΔHvap⟩/dθ (kJ/mol per unit) by the fluctuation formula,
        with block standard errors (keys ``..._sem``)."""
        from chemfit_core.science.fluctuation import (
            energy_derivatives,
            fluctuation_gradient,
            fluctuation_gradient_sem,
            read_frames,
        )

        frames = read_frames(dump, [self.form.element])
        steps = [int(f.info["timestep"]) for f in frames]
        row = {int(s): k for k, s in enumerate(thermo["Step"])}
        missing = [s for s in steps if s not in row]
        if missing:
            raise ChemFitError(
                f"{dump}: frames at steps {missing[:3]} have no thermo row; dump_every must be a "
                "multiple of thermo_every"
            )
        rows = np.array([row[s] for s in steps])
        model = self.form.model(parameters)
        energy, d_energy = energy_derivatives(frames, model, self.form.model_tensors, parameters)
        lammps_energy = thermo["PotEng"][rows]
        worst = float(np.max(np.abs(energy - lammps_energy) / np.abs(lammps_energy)))
        if worst > 1e-7:
            raise ChemFitError(
                f"{self.name}: the torch model's frame energies differ from LAMMPS's by up to "
                f"{worst:.1e} (relative): the model and the template disagree"
            )
        n_atoms = int(thermo["Atoms"][-1])
        beta = 1.0 / (KB_EV_PER_K * self.temperature_K)
        density = thermo["Density"][rows] * G_CM3_TO_KG_M3
        u_kj = lammps_energy / n_atoms * EV_PER_ATOM_TO_KJ_PER_MOL
        pv_kj = self.pressure_bar * thermo["Volume"][rows] / n_atoms * BAR_A3_TO_KJ_PER_MOL
        hvap = -u_kj - pv_kj + GAS_CONSTANT_KJ_PER_MOL_K * self.temperature_K
        d_hvap_direct = -d_energy / n_atoms * EV_PER_ATOM_TO_KJ_PER_MOL
        names = list(parameters)
        out = {}
        for key, samples, direct in (("density_kg_m3", density, None), ("hvap_kJ_mol", hvap, d_hvap_direct)):
            grad = fluctuation_gradient(samples, d_energy, beta, direct)
            sem = fluctuation_gradient_sem(samples, d_energy, beta, direct, self.n_blocks)
            out[key] = dict(zip(names, map(float, grad)))
            out[f"{key}_sem"] = dict(zip(names, map(float, sem)))
        return out
