"""Averages of a liquid's NPT production run: density, enthalpy of vaporisation, and the others asked for.

Units at the edges are the user's (kg/m³, kJ/mol, K, bar); LAMMPS runs in
``units metal`` (eV, Å, ps, bar, g/cm³). ΔHvap assumes an ideal vapour:
ΔHvap = ⟨U_gas⟩ − ⟨U⟩/N + RT − p⟨V⟩/N (the last term is ~0.003 kJ/mol at 1 atm, kept
for exactness), N the atoms of an atomic liquid or the molecules of a molecular one
(:mod:`chemfit_core.science.molecules`; ⟨U_gas⟩ = 0 unless a gas-phase run gives it).
Statistical errors are standard errors of the mean from block averages, so correlated MD
frames are not counted as independent. Further targets: thermo columns, κ_T, α_P, c_P
(:mod:`chemfit_core.science.observables`), the RDF and self-diffusion
(:mod:`chemfit_core.science.structure_observables`, read from files beside the log).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chemfit_core.errors import ChemFitError
from chemfit_core.external.lammps import read_thermo
from chemfit_core.science.molecules import RIGID, GasPhaseResult, Molecules
from chemfit_core.science.observables import RESPONSE_UNITS, ThermoObservable, response_properties
from chemfit_core.science.structure_observables import RdfTarget, structure_properties
from chemfit_core.units import (
    BAR_A3_TO_KJ_PER_MOL,
    EV_PER_ATOM_TO_KJ_PER_MOL,
    G_CM3_TO_KG_M3,
    GAS_CONSTANT_KJ_PER_MOL_K,
    KB_EV_PER_K,
)

PROPERTY_UNITS = {"density_kg_m3": "kg/m³", "hvap_kJ_mol": "kJ/mol"}
"""The properties every liquid run reports."""
DIFFUSION_KEY = "diffusion_1e9_m2_s"
"""The self-diffusion target (1e-9 m²/s, from the MSD: :mod:`chemfit_core.science.structure_observables`)."""
TARGET_UNITS = {**PROPERTY_UNITS, **RESPONSE_UNITS, DIFFUSION_KEY: "1e-9 m²/s"}
"""The built-in scalar liquid targets (besides thermo-column observables and the RDF), with their units."""


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
        observables = out.pop("observables")
        return {**out, **observables}


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
    rdf: RdfTarget | None = None,
    diffusion: bool = False,
) -> LiquidProperties:
    """:func:`liquid_properties` of the last ``run`` in a LAMMPS log, with ``rdf_rmsd`` of an ``rdf``
    target and ``diffusion_1e9_m2_s`` (``diffusion``) from the files beside the log (scalars only)."""
    thermo = read_thermo(log_path)[-1]
    out = liquid_properties(thermo, temperature_K, n_blocks, pressure_bar, molecules, gas, responses, observables)
    extra = structure_properties(Path(log_path).parent, rdf, diffusion, n_blocks, str(log_path))
    extra = {k: v for k, v in extra.items() if not k.startswith("rdf_g")}
    return LiquidProperties(**{**asdict(out), "observables": {**out.observables, **extra}}) if extra else out


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
