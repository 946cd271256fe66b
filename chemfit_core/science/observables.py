"""Liquid observables beyond density and ΔHvap: any thermo column, and NPT response functions.

**Thermo columns** (:class:`ThermoObservable`): any ``thermo_style custom`` keyword of the
production run (``enthalpy``, ``ke``, ``lx``, ``v_name``, ``c_id[2]``...), block-averaged
like the density, as printed (``thermo_modify norm no``: totals) or per atom / molecule.

**Response functions** of the NPT production run, from its fluctuations (Allen & Tildesley,
*Computer Simulation of Liquids*, 2nd ed., §2.5), with H = U + K + p V per frame (U, K the
potential and kinetic energy, V the volume, p the barostat's set point):

    κ_T = ⟨δV²⟩ / (k_B T ⟨V⟩)                 isothermal compressibility, 1/GPa
    α_P = ⟨δV δH⟩ / (k_B T² ⟨V⟩)              isobaric thermal expansion coefficient, 1/K
    c_P = ⟨δH²⟩ / (k_B T² N)                  isobaric heat capacity per atom / molecule, J/(mol K)

each with a standard error from the scatter of the same estimate over contiguous blocks.

**Parameter derivatives** (fluctuation formula, :mod:`chemfit_core.science.fluctuation`):
d⟨A⟩/dθ = ⟨∂A/∂θ⟩ − β(⟨A ∂U/∂θ⟩ − ⟨A⟩⟨∂U/∂θ⟩). ∂A/∂θ is 0 for columns of positions, box and
velocities only (volume, density, box lengths, temperature, kinetic energy) and ∂U/∂θ for the
potential and total energy; for the response functions, moments of V and H are differentiated
(∂V/∂θ = 0, ∂H/∂θ = ∂U/∂θ) and combined by the chain rule. Any other column (pressure,
enthalpy with the virial, computes, variables) has no known ∂A/∂θ: :data:`NO_DIRECT_DERIVATIVE`.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chemfit_core.errors import ChemFitError
from chemfit_core.units import (
    BAR_A3_TO_KJ_PER_MOL,
    EV_A3_TO_GPA,
    EV_PER_ATOM_TO_KJ_PER_MOL,
    EV_PER_K_TO_J_PER_MOL_K,
    KB_EV_PER_K,
)

logger = logging.getLogger(__name__)

RESPONSE_UNITS = {"kappa_T_1_GPa": "1/GPa", "alpha_P_1_K": "1/K", "cp_J_mol_K": "J/(mol K)"}
"""The NPT response functions a state point can target, with their units."""
RESPONSE_KEYWORDS = {"kappa_T_1_GPa": ("vol",), "alpha_P_1_K": ("vol", "pe", "ke"), "cp_J_mol_K": ("pe", "ke")}
"""The thermo keywords each response function reads."""
BAR_A3_TO_EV = BAR_A3_TO_KJ_PER_MOL / EV_PER_ATOM_TO_KJ_PER_MOL
"""1 bar·Å³ in eV."""

_HEADERS = {
    "ke": "KinEng",
    "pe": "PotEng",
    "etotal": "TotEng",
    "vol": "Volume",
    "evdwl": "E_vdwl",
    "ecoul": "E_coul",
    "epair": "E_pair",
    "ebond": "E_bond",
    "eangle": "E_angle",
    "edihed": "E_dihed",
    "eimp": "E_impro",
    "emol": "E_mol",
    "elong": "E_long",
    "etail": "E_tail",
    "cpu": "CPU",
}
_NO_DIRECT = {"step", "atoms", "temp", "ke", "vol", "density", "lx", "ly", "lz", "xy", "xz", "yz"}
_NO_DIRECT |= {
    "cella",
    "cellb",
    "cellc",
    "cellalpha",
    "cellbeta",
    "cellgamma",
    "xlo",
    "xhi",
    "ylo",
    "yhi",
    "zlo",
    "zhi",
}
_ENERGY_DIRECT = {"pe", "etotal"}
NO_DIRECT_DERIVATIVE = "unknown"
""":meth:`ThermoObservable.direct_derivative` of a column whose ∂A/∂θ the workflow does not know."""
PER = ("box", "atom", "molecule")


def thermo_header(keyword: str) -> str:
    """The column header LAMMPS prints for a ``thermo_style custom`` keyword (``ke`` → ``KinEng``,
    ``lx`` → ``Lx``; computes, fixes and variables as written)."""
    if keyword.startswith(("c_", "f_", "v_")):
        return keyword
    return _HEADERS.get(keyword, keyword.capitalize())


@dataclass(frozen=True)
class ThermoObservable:
    """A thermo column as a target: ``column`` a ``thermo_style custom`` keyword, averaged as printed
    (``per="box"``, totals) or divided by the atoms or molecules (``per="atom"``/``"molecule"``)."""

    column: str
    per: str = "box"
    unit: str = ""

    def __post_init__(self) -> None:
        if self.per not in PER:
            raise ValueError(f"observable {self.column}: per must be one of {PER}, got {self.per!r}")

    @property
    def header(self) -> str:
        """The column's header in the log."""
        return thermo_header(self.column)

    @property
    def direct_derivative(self) -> str:
        """``zero`` (∂A/∂θ = 0), ``energy`` (∂A/∂θ = ∂U/∂θ) or :data:`NO_DIRECT_DERIVATIVE`."""
        if self.column in _NO_DIRECT:
            return "zero"
        return "energy" if self.column in _ENERGY_DIRECT else NO_DIRECT_DERIVATIVE

    def samples(self, thermo: Mapping[str, np.ndarray], n_atoms: int, n_molecules: int) -> np.ndarray:
        """The per-row values of the column, per box, atom or molecule."""
        if self.header not in thermo:
            raise ChemFitError(
                f"thermo output lacks the column {self.header} (thermo keyword {self.column}); the template's "
                f"production run must print it (`thermo_style custom ... {self.column}`)"
            )
        return (
            np.asarray(thermo[self.header], dtype=float)
            / {"box": 1, "atom": n_atoms, "molecule": n_molecules}[self.per]
        )


def enthalpy_samples(thermo: Mapping[str, np.ndarray], pressure_bar: float | None = None) -> np.ndarray:
    """H = U + K + p V per row (eV, per box), p the set point (None: the instantaneous pressure)."""
    missing = [c for c in ("PotEng", "KinEng", "Volume") if c not in thermo]
    if missing:
        raise ChemFitError(
            f"thermo output lacks {', '.join(missing)}: the enthalpy's fluctuations need `thermo_style custom "
            "... pe ke vol` in the production run"
        )
    pressure = thermo["Press"] if pressure_bar is None else pressure_bar
    return thermo["PotEng"] + thermo["KinEng"] + pressure * thermo["Volume"] * BAR_A3_TO_EV


def compressibility(volume: np.ndarray, temperature_K: float) -> float:
    """κ_T = ⟨δV²⟩/(k_B T ⟨V⟩) in 1/GPa from volumes in Å³."""
    v = np.asarray(volume, dtype=float)
    return float(v.var() / (KB_EV_PER_K * temperature_K * v.mean()) / EV_A3_TO_GPA)


def thermal_expansion(volume: np.ndarray, enthalpy: np.ndarray, temperature_K: float) -> float:
    """α_P = ⟨δV δH⟩/(k_B T² ⟨V⟩) in 1/K from volumes (Å³) and enthalpies (eV)."""
    v, h = np.asarray(volume, dtype=float), np.asarray(enthalpy, dtype=float)
    covariance = ((v - v.mean()) * (h - h.mean())).mean()
    return float(covariance / (KB_EV_PER_K * temperature_K**2 * v.mean()))


def heat_capacity(enthalpy: np.ndarray, temperature_K: float, n: int) -> float:
    """c_P = ⟨δH²⟩/(k_B T² N) in J/(mol K) per atom or molecule from enthalpies in eV (per box)."""
    h = np.asarray(enthalpy, dtype=float)
    return float(h.var() / (KB_EV_PER_K * temperature_K**2) / n * EV_PER_K_TO_J_PER_MOL_K)


def blocked(estimate: Callable[..., float], series: Sequence[np.ndarray], n_blocks: int) -> tuple[float, float]:
    """``estimate(*series)`` over all rows, and its standard error from ``n_blocks`` contiguous blocks."""
    n = len(series[0])
    if n < 2 * n_blocks:
        raise ChemFitError(f"{n} thermo rows are too few for fluctuations in {n_blocks} blocks (2 rows per block)")
    edges = np.linspace(0, n, n_blocks + 1).astype(int)
    blocks = [estimate(*(s[a:b] for s in series)) for a, b in zip(edges[:-1], edges[1:])]
    return estimate(*series), float(np.std(blocks, ddof=1) / math.sqrt(n_blocks))


def response_properties(
    thermo: Mapping[str, np.ndarray],
    temperature_K: float,
    n: int,
    keys: Sequence[str],
    pressure_bar: float | None = None,
    n_blocks: int = 5,
) -> dict[str, float]:
    """``{key: value, key_sem: error}`` of the response functions ``keys`` (:data:`RESPONSE_UNITS`)
    of a production thermo table; ``n`` atoms or molecules for c_P, ``temperature_K`` the set point."""
    out: dict[str, float] = {}
    for key in keys:
        if key == "kappa_T_1_GPa":
            value = blocked(lambda v: compressibility(v, temperature_K), [thermo["Volume"]], n_blocks)
        elif key == "alpha_P_1_K":
            h = enthalpy_samples(thermo, pressure_bar)
            value = blocked(lambda v, e: thermal_expansion(v, e, temperature_K), [thermo["Volume"], h], n_blocks)
        elif key == "cp_J_mol_K":
            h = enthalpy_samples(thermo, pressure_bar)
            value = blocked(lambda e: heat_capacity(e, temperature_K, n), [h], n_blocks)
        else:
            raise ValueError(f"unknown response function {key!r}; known: {sorted(RESPONSE_UNITS)}")
        out[key], out[f"{key}_sem"] = value
    return out


def _gradient(a: np.ndarray, du: np.ndarray, beta: float, direct: np.ndarray | None = None) -> np.ndarray:
    from chemfit_core.science.fluctuation import fluctuation_gradient

    return fluctuation_gradient(a, du, beta, direct)


def response_gradient(
    key: str, volume: np.ndarray, enthalpy: np.ndarray, d_energy: np.ndarray, temperature_K: float, n: int
) -> np.ndarray:
    """d(response function ``key``)/dθ ``[p]`` from frames' V (Å³), H (eV) and ∂U/∂θ ``[n, p]`` (eV per
    parameter unit), in the function's unit per parameter unit: derivatives of the moments by the
    fluctuation formula (∂V/∂θ = 0, ∂H/∂θ = ∂U/∂θ), combined by the chain rule."""
    beta = 1.0 / (KB_EV_PER_K * temperature_K)
    v, h, du = np.asarray(volume, float), np.asarray(enthalpy, float), np.asarray(d_energy, float)
    dv = _gradient(v, du, beta)
    if key == "kappa_T_1_GPa":
        variance = v.var()
        d_variance = _gradient(v * v, du, beta) - 2 * v.mean() * dv
        return (d_variance / v.mean() - variance * dv / v.mean() ** 2) * beta / EV_A3_TO_GPA
    dh = _gradient(h, du, beta, du)
    if key == "alpha_P_1_K":
        covariance = ((v - v.mean()) * (h - h.mean())).mean()
        d_covariance = _gradient(v * h, du, beta, v[:, None] * du) - v.mean() * dh - h.mean() * dv
        return (d_covariance / v.mean() - covariance * dv / v.mean() ** 2) * beta / temperature_K
    if key == "cp_J_mol_K":
        d_variance = _gradient(h * h, du, beta, 2 * h[:, None] * du) - 2 * h.mean() * dh
        return d_variance * beta / temperature_K / n * EV_PER_K_TO_J_PER_MOL_K
    raise ValueError(f"unknown response function {key!r}; known: {sorted(RESPONSE_UNITS)}")


def response_gradients(
    keys: Sequence[str],
    volume: np.ndarray,
    enthalpy: np.ndarray,
    d_energy: np.ndarray,
    temperature_K: float,
    n: int,
    names: Sequence[str],
    n_blocks: int = 5,
) -> dict[str, dict[str, float]]:
    """``{key: {parameter: derivative}, key_sem: {...}}`` of the response functions ``keys``, the
    standard errors from the scatter over ``n_blocks`` blocks of frames."""
    out: dict[str, dict[str, float]] = {}
    edges = np.linspace(0, len(volume), n_blocks + 1).astype(int)
    for key in keys:
        grad = response_gradient(key, volume, enthalpy, d_energy, temperature_K, n)
        blocks = [
            response_gradient(key, volume[a:b], enthalpy[a:b], d_energy[a:b], temperature_K, n)
            for a, b in zip(edges[:-1], edges[1:])
        ]
        sem = np.std(blocks, axis=0, ddof=1) / math.sqrt(n_blocks)
        out[key] = dict(zip(names, map(float, grad)))
        out[f"{key}_sem"] = dict(zip(names, map(float, sem)))
    return out


def observable_gradients(
    observables: Mapping[str, ThermoObservable],
    responses: Sequence[str],
    frames: Mapping[str, np.ndarray],
    d_energy: np.ndarray,
    state: tuple[float, float | None],
    counts: tuple[int, int],
    names: Sequence[str],
    n_blocks: int = 5,
) -> dict[str, dict[str, float]]:
    """Fluctuation-formula derivatives (with ``_sem``) of the thermo ``observables`` whose ∂A/∂θ is
    known and of the response functions ``responses``, from the frames' thermo rows ``frames`` and
    ∂U/∂θ ``[n, p]`` (eV per parameter unit); ``state`` = (T in K, set pressure in bar),
    ``counts`` = (atoms, molecules)."""
    from chemfit_core.science.fluctuation import property_gradients

    temperature_K, pressure_bar = state
    n_atoms, n = counts
    samples, direct = {}, {}
    for key, observable in observables.items():
        if observable.direct_derivative != NO_DIRECT_DERIVATIVE:
            samples[key] = observable.samples(frames, n_atoms, n)
            scale = observable.samples({observable.header: np.ones(1)}, n_atoms, n)[0]
            direct[key] = d_energy * scale if observable.direct_derivative == "energy" else None
    beta = 1.0 / (KB_EV_PER_K * temperature_K)
    out = property_gradients(samples, direct, d_energy, beta, names, n_blocks) if samples else {}
    if responses:
        enthalpy = enthalpy_samples(frames, pressure_bar)
        out.update(
            response_gradients(responses, frames["Volume"], enthalpy, d_energy, temperature_K, n, names, n_blocks)
        )
    return out


def finite_difference_gradients(
    term: Any, parameters: Mapping[str, float], base: Mapping[str, Any], extra: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """d⟨A⟩/dθ of a liquid term's observables whose ∂A/∂θ is unknown (pressure, computes, variables...)
    and of the ``extra`` quantities of ``base`` (self-diffusion, the RDF's bins ``rdf_g``: arrays
    give arrays) by forward differences of runs of ``term.computer`` at θ + h_k (h_k =
    ``term.fd_step``·|θ_k|, the same seed: common random numbers) against ``base`` (the run at θ),
    standard errors from the two runs' block errors. Logged, as they cost one run per parameter."""
    from chemfit_core.abstract_objective_function import EvaluateContext

    keys = [k for k, o in term.observables.items() if o.direct_derivative == NO_DIRECT_DERIVATIVE]
    keys = [k for k in keys if k in term.references] + [k for k in extra if k in base]
    if not keys:
        return {}
    logger.info(
        "%s: %s: no known ∂A/∂θ, derivatives by finite differences (%d more runs, h = %g·|θ|)",
        term.name,
        ", ".join("rdf (per bin)" if k == "rdf_g" else k for k in keys),
        len(parameters),
        term.fd_step,
    )
    out: dict[str, dict[str, Any]] = {k: {} for key in keys for k in (key, f"{key}_sem")}
    for name, value in parameters.items():
        h = term.fd_step * (abs(value) or 1.0)
        ctx = EvaluateContext()
        shifted = dict(term.computer({**parameters, name: value + h}, ctx))
        shutil.rmtree(ctx.meta.pop("workdir"), ignore_errors=True)
        for key in keys:
            difference = (np.asarray(shifted[key]) - np.asarray(base[key])) / h
            error = np.hypot(shifted[f"{key}_sem"], base[f"{key}_sem"]) / h
            out[key][name] = float(difference) if difference.ndim == 0 else difference
            out[f"{key}_sem"][name] = float(error) if np.ndim(error) == 0 else error
    return out
