"""From a validated configuration to the science's objects: the config stays at this edge.

Every lookup of a fit's configuration that builds a science object lives here: the
potential form, the crystal setup, the references, the LAMMPS template variables and the
objective terms. The science modules (:mod:`chemfit_core.science`) take plain typed
arguments and never read the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chemfit_core.abstract_objective_function import ObjectiveFunctor
from chemfit_core.cache import OutputCache
from chemfit_core.combined_objective_function import CombinedObjectiveFunction
from chemfit_core.file_based_computer import flatten_parameters
from chemfit_core.models.forms import PotentialForm, potential_form
from chemfit_core.science.crystal import CrystalSetup
from chemfit_core.science.liquid import (
    PROPERTY_UNITS,
    LiquidStatePointTerm,
    Reference,
    run_template_variables,
)
from chemfit_core.science.targets import CrystalTarget, StructureTarget, synthetic_structures
from chemfit_core.stages.config import derived_seed
from chemfit_core.units import KB_EV_PER_K

GRADIENT_JACOBIANS = ("analytic", "fluctuation")
"""``optimizer.jacobian`` values under which terms report their own derivatives."""


def potential_form_of(fit: Mapping[str, Any]) -> PotentialForm:
    """The potential form of a fit's config (``potential`` section and ``element``)."""
    return potential_form({**fit["potential"], "element": fit["element"]})


def crystal_setup(element: str, crystal: Mapping[str, Any]) -> CrystalSetup:
    """The :class:`CrystalSetup` of a config's ``crystal`` section."""
    return CrystalSetup(
        element,
        lattice=crystal["lattice"],
        a_guess_A=crystal["a_guess_A"],
        strain=crystal["strain"],
        vacancy_cells=crystal["vacancy_cells"],
        slab_layers=crystal["slab_layers"],
        fmax=crystal["fmax"],
        c_over_a=crystal.get("c_over_a"),
        structure_file=crystal.get("structure_file"),
        element_references={k: (v["lattice"], v["a_guess_A"]) for k, v in crystal["element_references"].items()},
    )


def targets_from_config(fit: Mapping[str, Any]) -> list[tuple[str, ObjectiveFunctor, float]]:
    """(name, term, weight) of a fit's in-process targets: ``crystal`` and ``structures``."""
    from ase.io import read

    form = potential_form_of(fit)
    terms: list[tuple[str, ObjectiveFunctor, float]] = []
    if "crystal" in fit:
        crystal = fit["crystal"]
        references = {
            k: Reference(r["value"], r["denominator"], r.get("source", "")) for k, r in crystal["references"].items()
        }
        terms.append(
            (
                "crystal",
                CrystalTarget(
                    form,
                    crystal_setup(crystal.get("formula", fit["element"]), crystal),
                    references,
                    crystal.get("validate", []),
                ),
                crystal["weight"],
            )
        )
    if "structures" in fit:
        spec = fit["structures"]
        if "file" in spec:
            structures = read(spec["file"], index=":")
        else:
            synthetic = spec["synthetic"]
            structures = synthetic_structures(
                form,
                synthetic["parameters"],
                synthetic["n_structures"],
                synthetic["lattice_constant_A"],
                synthetic["seed"],
            )
        terms.append(
            (
                "structures",
                StructureTarget(
                    form, structures, spec["energy_denominator"], spec["force_denominator"], spec["stress_denominator"]
                ),
                spec["weight"],
            )
        )
    return terms


def liquid_template_variables(fit: Mapping[str, Any]) -> dict[str, Any]:
    """Fixed values of a fit's config the liquid template needs besides parameters, state point and
    seed: the MD settings, the mass and the potential form's options (``cutoff_sigma``...)."""
    md = dict(fit["liquid"]["md"])
    for key in ("n_blocks", "timeout_s", "dump_every"):
        md.pop(key, None)
    options = {k: v for k, v in potential_form_of(fit).spec().items() if k not in ("form", "element")}
    return {**md, "mass_g_mol": fit["mass_g_mol"], **options, "kB_eV_per_K": KB_EV_PER_K}


def fit_template_contexts(fit: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, variables) of every kind of run the workflow renders a fit's liquid template
    for, at the initial parameters: each state point's fit run (frames dumped when the fit
    uses fluctuation gradients) and its validation run (longer, no frames). For checking a
    template before any run; the seed is a placeholder."""
    fixed = liquid_template_variables(fit)
    initial = flatten_parameters({name: p["initial"] for name, p in fit["parameters"].items()})
    gradients = fit.get("optimizer", {}).get("jacobian") in GRADIENT_JACOBIANS
    dump_every = fit["liquid"]["md"].get("dump_every", 40) if gradients else 0
    contexts = []
    for sp in fit["liquid"]["state_points"]:
        t, p = sp["temperature_K"], sp["pressure_bar"]
        contexts.append(
            (f"state point {sp['name']}, fit run", {**run_template_variables(t, p, 1, dump_every, fixed), **initial})
        )
        contexts.append(
            (f"state point {sp['name']}, validation run", {**validation_template_variables(fit, sp, 1), **initial})
        )
    return contexts


def validation_template_variables(fit: Mapping[str, Any], state_point: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Variables of one validation run at ``state_point`` besides the parameters: the fit's
    fixed values with the validation's production length, no frames dumped."""
    return {
        **liquid_template_variables(fit),
        "production_steps": fit["liquid"]["validation"]["production_steps"],
        "temperature_K": state_point["temperature_K"],
        "pressure_bar": state_point["pressure_bar"],
        "seed": seed,
    }


def references_of(state_point: Mapping[str, Any]) -> dict[str, Reference]:
    """The measured targets of a state point, keyed by property name."""
    return {
        key: Reference(spec["value"], spec["denominator"], spec.get("source", ""))
        for key in PROPERTY_UNITS
        if (spec := state_point.get(key)) is not None
    }


def build_objective(
    fit_name: str,
    fit: Mapping[str, Any],
    master_seed: int,
    template: Path | str | None,
    workdir: Path | str,
    runs: OutputCache | None = None,
) -> tuple[CombinedObjectiveFunction, list[dict[str, Any]]]:
    """All of a fit's terms: liquid state points (LAMMPS), then crystal and structures (in-process).

    Returns the combined objective and, per term, its name and state point (``crystal``,
    ``structures`` for in-process terms), and for liquid terms replica and seed. ``runs``:
    the LAMMPS run cache (None: every run is computed).
    """
    cob, terms_info = (
        build_liquid_objective(fit_name, fit, master_seed, template, workdir, runs)
        if "liquid" in fit
        else (CombinedObjectiveFunction(), [])
    )
    for name, term, weight in targets_from_config(fit):
        cob.add(term, weights=weight, names=name)
        terms_info.append({"name": name, "state_point": name})
    return cob, terms_info


def build_liquid_objective(
    fit_name: str,
    fit: Mapping[str, Any],
    master_seed: int,
    template: Path | str,
    workdir: Path | str,
    runs: OutputCache | None = None,
) -> tuple[CombinedObjectiveFunction, list[dict[str, Any]]]:
    """One term per (state point, replica); a state point's weight is split over its replicas.

    Returns the combined objective and, per term, its state point, replica and seed.
    """
    variables = liquid_template_variables(fit)
    md = fit["liquid"]["md"]
    analytic = fit["optimizer"].get("jacobian") in GRADIENT_JACOBIANS
    form = potential_form_of(fit) if analytic else None
    cob = CombinedObjectiveFunction()
    terms_info = []
    for sp in fit["liquid"]["state_points"]:
        for replica in range(sp["replicas"]):
            seed = derived_seed(master_seed, fit_name, sp["name"], replica, "fit")
            name = f"{sp['name']}/r{replica}"
            term = LiquidStatePointTerm(
                name=name,
                template=template,
                workdir=Path(workdir),
                temperature_K=sp["temperature_K"],
                pressure_bar=sp["pressure_bar"],
                references=references_of(sp),
                seed=seed,
                template_variables=variables,
                n_blocks=md["n_blocks"],
                command_timeout=md["timeout_s"],
                form=form,
                output_cache=runs,
                dump_every=md.get("dump_every", 40),
                files=fit["liquid"]["files"],
            )
            cob.add(term, weights=sp["weight"] / sp["replicas"], names=name)
            terms_info.append({"name": name, "state_point": sp["name"], "replica": replica, "seed": seed})
    return cob, terms_info
