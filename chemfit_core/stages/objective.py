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
from chemfit_core.errors import ChemFitError
from chemfit_core.file_based_computer import flatten_parameters
from chemfit_core.models.forms import PotentialForm, potential_form
from chemfit_core.science.liquid import (
    DIFFUSION_KEY,
    TARGET_UNITS,
    LiquidStatePointTerm,
    Reference,
    run_template_variables,
)
from chemfit_core.science.observables import RESPONSE_KEYWORDS, ThermoObservable
from chemfit_core.science.structure_observables import RdfTarget, read_reference_rdf
from chemfit_core.science.targets import (
    StructureTarget,
    label,
    label_with_lammps,
    random_cells,
    rattled_cells,
)
from chemfit_core.stages.composition import composition_template_variables
from chemfit_core.stages.config import derived_seed
from chemfit_core.stages.crystal_inputs import crystal_targets
from chemfit_core.stages.molecule_inputs import (  # noqa: F401 - the stages import them from here
    atoms_per_molecule,
    gas_phase_run,
    gas_template_path,
    liquid_file,
    liquid_problems,
    molecule_template_variables,
    molecules_of,
)
from chemfit_core.stages.template_contract import REQUIRED_THERMO, referenced_variables
from chemfit_core.units import KB_EV_PER_K

GRADIENT_JACOBIANS = ("analytic", "fluctuation")
"""``optimizer.jacobian`` values under which terms report their own derivatives."""


def potential_form_of(fit: Mapping[str, Any]) -> PotentialForm:
    """The potential form of a fit's config (``potential`` section and ``element``)."""
    return potential_form({**fit["potential"], "element": fit["element"]})


def lammps_labelled_structures(spec: Mapping[str, Any], n_structures: int | None = None) -> list[Any]:
    """The reference structures of a ``structures.lammps`` section, labelled by LAMMPS."""
    cells = dict(spec["cells"])
    if n_structures is not None:
        cells["n_structures"] = n_structures
    structures = random_cells(species=spec["species"], **cells)
    return label_with_lammps(structures, spec["commands"], spec["species"], spec["files"])


def synthetic_cells(fit: Mapping[str, Any]) -> list[Any]:
    """The unlabelled cells of a fit's ``structures.synthetic`` section: any prototype or compound
    (``lattice``/``formula``) by :func:`random_cells`, else rattled cells of the fit's element."""
    synthetic = fit["structures"]["synthetic"]
    repeat = synthetic.get("repeat")
    if "lattice" in synthetic or "formula" in synthetic:
        return random_cells(
            synthetic.get("lattice", "fcc"),
            synthetic["lattice_constant_A"],
            fit["potential"].get("species") or [fit["element"]],
            formula=synthetic.get("formula"),
            n_structures=synthetic["n_structures"],
            repeat=repeat or ((1, 1, 1) if "formula" in synthetic else (2, 2, 2)),
            seed=synthetic["seed"],
        )
    return rattled_cells(
        fit["element"], synthetic["n_structures"], synthetic["lattice_constant_A"], synthetic["seed"], repeat=repeat
    )


def targets_from_config(fit: Mapping[str, Any]) -> list[tuple[str, ObjectiveFunctor, float]]:
    """(name, term, weight) of a fit's in-process targets: its crystals (``crystal``, ``crystal:<name>``:
    :func:`~chemfit_core.stages.crystal_inputs.crystal_targets`) and ``structures``."""
    from ase.io import read

    form = potential_form_of(fit)
    terms: list[tuple[str, ObjectiveFunctor, float]] = [*crystal_targets(fit, form)]
    if "structures" in fit:
        spec = fit["structures"]
        if "file" in spec:
            structures = read(spec["file"], index=":")
        elif "lammps" in spec:
            structures = lammps_labelled_structures(spec["lammps"])
        else:
            parameters = spec["synthetic"]["parameters"]
            structures = label(synthetic_cells(fit), form.model(parameters))
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
    seed: the MD settings, the masses and composition (:mod:`~chemfit_core.stages.composition`),
    the potential form's options (``cutoff_sigma``...) and, for a molecular liquid,
    :func:`molecule_template_variables`."""
    md = dict(fit["liquid"]["md"])
    for key in ("n_blocks", "timeout_s", "dump_every"):
        md.pop(key, None)
    options = {k: v for k, v in potential_form_of(fit).spec().items() if k not in ("form", "element")}
    return {
        **md,
        "mass_g_mol": fit["mass_g_mol"],
        **composition_template_variables(fit),
        **options,
        "kB_eV_per_K": KB_EV_PER_K,
        "thermo_columns": thermo_columns(fit),
        "rdf": None,
        "msd": None,
        **molecule_template_variables(fit),
    }


def rdf_of(fit: Mapping[str, Any], state_point: Mapping[str, Any]) -> RdfTarget | None:
    """The RDF target of a state point (``rdf``), its ``pairs`` as LAMMPS types (the potential's
    species order); None without one."""
    spec = state_point.get("rdf")
    if spec is None:
        return None
    species = list(fit["potential"].get("species") or [fit["element"]])
    unknown = [s for s in spec.get("pairs", []) if s not in species]
    if unknown:
        raise ChemFitError(
            f"rdf.pairs: expected species of the potential {species}, got {unknown} (state point {state_point['name']})"
        )
    types = " ".join(str(species.index(s) + 1) for s in spec.get("pairs", []))
    return RdfTarget(
        read_reference_rdf(spec["file"]),
        r_max_A=spec["r_max_A"],
        n_bins=spec["n_bins"],
        denominator=spec["denominator"],
        types=types,
        weights=spec["weights"],
        r_min_A=spec["r_min_A"],
        source=spec["source"],
    )


def structure_template_variables(fit: Mapping[str, Any], state_point: Mapping[str, Any]) -> dict[str, Any]:
    """The state point's ``rdf`` and ``msd`` template variables (None where it has no such target),
    sampled every ``md.thermo_every`` steps."""
    every = int(fit["liquid"]["md"]["thermo_every"])
    rdf = rdf_of(fit, state_point)
    return {
        "rdf": rdf.template_variable(every) if rdf is not None else None,
        "msd": {"every": every, "file": "msd.dat"} if DIFFUSION_KEY in state_point else None,
    }


def observables_of(state_point: Mapping[str, Any]) -> dict[str, ThermoObservable]:
    """The thermo-column observables of a state point (``observables``), by name."""
    return {
        name: ThermoObservable(spec["column"], spec["per"], spec.get("unit", ""))
        for name, spec in state_point.get("observables", {}).items()
    }


def thermo_columns(fit: Mapping[str, Any]) -> list[str]:
    """The ``thermo_style custom`` keywords the fit's state points need beyond :data:`REQUIRED_THERMO`
    (``ke`` for α_P and c_P, the observables' columns), in first-use order: the template's
    ``thermo_columns``."""
    needed: list[str] = []
    for sp in fit["liquid"]["state_points"]:
        keywords = [k for key, ks in RESPONSE_KEYWORDS.items() if key in sp for k in ks]
        keywords += [o.column for o in observables_of(sp).values()]
        needed += [k for k in keywords if k not in REQUIRED_THERMO and k not in needed]
    return needed


def pair_variables(fit: Mapping[str, Any], parameters: Mapping[str, float], template: Path | str) -> dict[str, Any]:
    """``pair_lines`` (and ``nearest_neighbour_A``) of the fit's form at ``parameters`` when ``template``
    reads them, else nothing; files a form writes go to a scratch folder (their names are relative)."""
    import tempfile

    from chemfit_core.science.rerun import form_template_variables

    if "pair_lines" not in referenced_variables(Path(template).read_text()):
        return {}
    with tempfile.TemporaryDirectory() as scratch:
        return form_template_variables(potential_form_of(fit), parameters, scratch)


def lammps_form_of(fit: Mapping[str, Any], template: Path | str) -> PotentialForm | None:
    """The form whose LAMMPS lines the liquid runs render as ``pair_lines``; None when ``template``
    does not read them."""
    return potential_form_of(fit) if "pair_lines" in referenced_variables(Path(template).read_text()) else None


def gradient_method_of(fit: Mapping[str, Any]) -> str | None:
    """Where the liquid terms' frame derivatives come from (``liquid.gradients.method``; ``auto``:
    LAMMPS reruns for molecules, else the torch model, reruns where it differs from LAMMPS); None
    when the optimiser uses no term gradients."""
    if fit["optimizer"].get("jacobian") not in GRADIENT_JACOBIANS:
        return None
    method = fit["liquid"]["gradients"]["method"]
    return "rerun" if method == "auto" and "molecule" in fit["liquid"] else method


def fit_template_contexts(fit: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, variables) of every kind of run the workflow renders a fit's liquid template
    for, at the initial parameters: each state point's fit run (frames dumped when the fit
    uses fluctuation gradients) and its validation run (longer, no frames). For checking a
    template before any run; the seed is a placeholder."""
    from chemfit_core.stages.config import template_path

    fixed = liquid_template_variables(fit)
    initial = flatten_parameters({name: p["initial"] for name, p in fit["parameters"].items()})
    try:
        initial = {**initial, **pair_variables(fit, initial, template_path(fit["liquid"]["template"]))}
    except (OSError, ValueError, ChemFitError):  # an unreadable template or bad parameters: named elsewhere
        pass
    gradients = fit.get("optimizer", {}).get("jacobian") in GRADIENT_JACOBIANS
    dump_every = fit["liquid"]["md"].get("dump_every", 40) if gradients else 0
    contexts = []
    for sp in fit["liquid"]["state_points"]:
        t, p = sp["temperature_K"], sp["pressure_bar"]
        try:
            own = {**fixed, **structure_template_variables(fit, sp)}
        except (OSError, ValueError, ChemFitError):  # a bad RDF reference: named by the liquid checks
            continue
        contexts.append(
            (f"state point {sp['name']}, fit run", {**run_template_variables(t, p, 1, dump_every, own), **initial})
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
        **structure_template_variables(fit, state_point),
        "production_steps": fit["liquid"]["validation"]["production_steps"],
        "temperature_K": state_point["temperature_K"],
        "pressure_bar": state_point["pressure_bar"],
        "seed": seed,
        "dump_every": 0,
        "rerun_dump": None,
    }


def references_of(state_point: Mapping[str, Any]) -> dict[str, Reference]:
    """The measured targets of a state point, keyed by property name (built-in ones, then the
    thermo-column observables)."""
    specs = {key: state_point[key] for key in TARGET_UNITS if key in state_point}
    specs.update(state_point.get("observables", {}))
    return {key: Reference(spec["value"], spec["denominator"], spec.get("source", "")) for key, spec in specs.items()}


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
    ``crystal:<name>``, ``structures`` for in-process terms), and for liquid terms replica and seed. ``runs``:
    the LAMMPS run cache (None: every run is computed).
    """
    cob, terms_info = (
        build_liquid_objective(fit_name, fit, master_seed, template, workdir, runs)
        if "liquid" in fit
        else (CombinedObjectiveFunction(), [])
    )
    targets = targets_from_config(fit)
    weighted = [target for target in targets if target[2] > 0]
    # weight-0 targets are reported by the validation stage, not computed at every evaluation
    # (unless nothing else is there to fit)
    for name, term, weight in weighted if (weighted or cob.n_terms()) else targets:
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
    method = gradient_method_of(fit)
    form = potential_form_of(fit) if method in ("model", "auto") else None
    molecules = molecules_of(fit)
    lammps_form = lammps_form_of(fit, template)
    cob = CombinedObjectiveFunction()
    terms_info = []
    for sp in fit["liquid"]["state_points"]:
        for replica in range(sp["replicas"]):
            seed = derived_seed(master_seed, fit_name, sp["name"], replica, "fit")
            name = f"{sp['name']}/r{replica}"
            gas_seed = derived_seed(master_seed, fit_name, sp["name"], replica, "gas")
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
                gradients=method,
                rerun_step=fit["liquid"]["gradients"]["relative_step"],
                molecules=molecules,
                gas=gas_phase_run(fit, sp, gas_seed, workdir, runs, gradients=method is not None),
                observables=observables_of(sp),
                lammps_form=lammps_form,
                rdf=rdf_of(fit, sp),
                sample_every=md["thermo_every"],
            )
            cob.add(term, weights=sp["weight"] / sp["replicas"], names=name)
            terms_info.append({"name": name, "state_point": sp["name"], "replica": replica, "seed": seed})
    return cob, terms_info
