"""Short real LAMMPS runs of Lennard-Jones argon that the liquid tests share: the shipped template's
settings, the form, and a term built from them (tests only: nothing outside tests/ imports this)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from chemfit_core.models.forms import potential_form
from chemfit_core.science.liquid import LiquidStatePointTerm, Reference
from chemfit_core.science.rerun import form_template_variables
from chemfit_core.stages.config import TEMPLATE_DIR

SHIPPED = TEMPLATE_DIR / "lj_liquid_npt.lammps.j2"
ARGON_THETA = {"epsilon_K": 116.79, "sigma_A": 3.3952}
"""LJ argon (ε/k_B in K, σ in Å) near the published values."""
NBP = {"temperature_K": 87.302, "pressure_bar": 1.01325}
"""Argon's normal boiling point."""
NBP_REFERENCES = {"density_kg_m3": Reference(1395.4, 10.0), "hvap_kJ_mol": Reference(6.437, 0.1)}


def argon_form(cutoff_sigma: float = 3.0, shift: bool = False) -> Any:
    """The ``lj/cut`` form of argon (tail correction on)."""
    return potential_form(
        {"form": "lj/cut", "element": "Ar", "cutoff_sigma": cutoff_sigma, "tail_correction": True, "shift": shift}
    )


def argon_md(**overrides: Any) -> dict[str, Any]:
    """Template variables of a short 256-atom run (4 fcc cells a side) besides the state point and seed."""
    return {
        "n_cells": 4,
        "mass_g_mol": 39.948,
        "cutoff_sigma": 3.0,
        "tail_correction": True,
        "shift": False,
        "start_reduced_density": 0.8,
        "timestep_fs": 5.0,
        "thermo_every": 20,
        "melt_temperature_K": 300.0,
        "melt_steps": 500,
        "equilibration_steps": 1000,
        "production_steps": 4000,
        **overrides,
    }


def pair_lines(form: Any, theta: dict[str, float]) -> dict[str, Any]:
    """The form's ``pair_lines`` (and ``nearest_neighbour_A``) at ``theta``, for rendering by hand."""
    with tempfile.TemporaryDirectory() as scratch:
        return form_template_variables(form, theta, scratch)


def argon_term(
    workdir: Path,
    *,
    seed: int = 7,
    references: dict[str, Reference] | None = None,
    variables: dict[str, Any] | None = None,
    gradients: bool = False,
    template: Path | str = SHIPPED,
    **kwargs: Any,
) -> LiquidStatePointTerm:
    """A :class:`LiquidStatePointTerm` of argon at the normal boiling point (``kwargs`` override it:
    ``temperature_K``, ``pressure_bar``, ``dump_every``, ``observables`` ...), the shipped template's
    ``pair_lines`` from the form; ``gradients``: fluctuation gradients from the torch model."""
    form = argon_form((variables or {}).get("cutoff_sigma", 3.0))
    options: dict[str, Any] = {**NBP, "dump_every": 40, **kwargs}
    return LiquidStatePointTerm(
        name=options.pop("name", "nbp"),
        template=template,
        workdir=workdir,
        references=references if references is not None else NBP_REFERENCES,
        seed=seed,
        template_variables=variables if variables is not None else argon_md(),
        form=form if gradients else None,
        lammps_form=form,
        **options,
    )


def structure_run(
    folder: Path,
    rdf: dict[str, Any] | None = None,
    msd: dict[str, Any] | None = None,
    every: int = 20,
    seed: int = 11,
    **md: Any,
) -> Path:
    """One real LAMMPS run of the shipped template for argon at 95 K and 1 bar in ``folder`` (108 atoms
    by default) with its ``rdf`` and ``msd`` outputs, frames (``frames.dump``: id type x y z) and
    unwrapped coordinates (``unwrapped.dump``: id xu yu zu, added before the production run) every
    ``every`` steps; returns the log."""
    from chemfit_core.external.lammps import run_lammps
    from chemfit_core.file_based_computer import render_template
    from chemfit_core.science.liquid import run_template_variables

    settings = {"n_cells": 3, "melt_steps": 400, "equilibration_steps": 600, "production_steps": 2000, **md}
    variables = {
        **run_template_variables(95.0, 1.0, seed, every, argon_md(thermo_every=every, **settings)),
        **ARGON_THETA,
        **pair_lines(argon_form(), ARGON_THETA),
        "rdf": rdf,
        "msd": msd,
    }
    text = render_template(SHIPPED, variables)
    head, production = text.rsplit("\nrun ", 1)
    unwrapped = f"dump unwrapped all custom {every} unwrapped.dump id xu yu zu\ndump_modify unwrapped sort id"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.lammps").write_text(f"{head}\n{unwrapped} format float %.12g\nrun {production}")
    return run_lammps(folder, timeout=120)
