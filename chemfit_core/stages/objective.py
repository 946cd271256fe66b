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
from chemfit_core.science.crystal import CrystalSetup
from chemfit_core.science.liquid import (
    PROPERTY_UNITS,
    LiquidStatePointTerm,
    Reference,
    run_template_variables,
)
from chemfit_core.science.molecules import GasPhaseRun, Molecules, data_file_atoms, read_molecule_file
from chemfit_core.science.targets import (
    CrystalTarget,
    StructureTarget,
    label,
    label_with_lammps,
    random_cells,
    synthetic_structures,
)
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


def lammps_labelled_structures(spec: Mapping[str, Any], n_structures: int | None = None) -> list[Any]:
    """The reference structures of a ``structures.lammps`` section, labelled by LAMMPS."""
    cells = dict(spec["cells"])
    if n_structures is not None:
        cells["n_structures"] = n_structures
    structures = random_cells(species=spec["species"], **cells)
    return label_with_lammps(structures, spec["commands"], spec["species"], spec["files"])


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
        elif "lammps" in spec:
            structures = lammps_labelled_structures(spec["lammps"])
        else:
            synthetic = spec["synthetic"]
            if "lattice" in synthetic or "formula" in synthetic:  # any prototype, compounds too
                cells = random_cells(
                    synthetic.get("lattice", "fcc"),
                    synthetic["lattice_constant_A"],
                    fit["potential"].get("species") or [fit["element"]],
                    formula=synthetic.get("formula"),
                    n_structures=synthetic["n_structures"],
                    repeat=(1, 1, 1) if "formula" in synthetic else (2, 2, 2),
                    seed=synthetic["seed"],
                )
                structures = label(cells, form.model(synthetic["parameters"]))
            else:
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
    seed: the MD settings, the mass, the potential form's options (``cutoff_sigma``...) and, for a
    molecular liquid, :func:`molecule_template_variables`."""
    md = dict(fit["liquid"]["md"])
    for key in ("n_blocks", "timeout_s", "dump_every"):
        md.pop(key, None)
    options = {k: v for k, v in potential_form_of(fit).spec().items() if k not in ("form", "element")}
    return {
        **md,
        "mass_g_mol": fit["mass_g_mol"],
        **options,
        "kB_eV_per_K": KB_EV_PER_K,
        **molecule_template_variables(fit),
    }


# -- molecular liquids ------------------------------------------------------------------------
def liquid_file(fit: Mapping[str, Any], name: str) -> Path | None:
    """The entry of ``liquid.files`` a molecule key names (by file name, or as written), else None."""
    for file in fit["liquid"]["files"]:
        if Path(file).name == Path(name).name:
            return Path(file)
    return None


def atoms_per_molecule(fit: Mapping[str, Any]) -> int:
    """Atoms per molecule of a molecular fit: ``molecule.atoms_per_molecule``, else the molecule
    file's header (1 where neither can be read: the checks name the problem)."""
    molecule = fit["liquid"]["molecule"]
    if "atoms_per_molecule" in molecule:
        return int(molecule["atoms_per_molecule"])
    path = liquid_file(fit, molecule["file"]) if "file" in molecule else None
    try:
        return read_molecule_file(path).n_atoms if path is not None else 1
    except ChemFitError:
        return 1


def molecules_of(fit: Mapping[str, Any]) -> Molecules | None:
    """The molecules of a fit's liquid box (``liquid.molecule``); None for an atomic liquid."""
    molecule = fit["liquid"].get("molecule")
    if molecule is None:
        return None
    apm = atoms_per_molecule(fit)
    if "count" in molecule:
        return Molecules(molecule["count"], apm)
    path = liquid_file(fit, molecule["data"])
    try:
        return Molecules(max(data_file_atoms(path) // apm, 1) if path is not None else 1, apm)
    except (ChemFitError, OSError):
        return Molecules(1, apm)


def molecule_template_variables(fit: Mapping[str, Any]) -> dict[str, Any]:
    """What a molecular liquid's template gets (config/README.md): ``molecule_file`` and ``data_file``
    (names in the run folder, or None), ``molecule_count``, ``atoms_per_molecule``, ``n_atoms``,
    ``molecule_mass_g_mol`` (the molecule file's masses, else atoms × ``mass_g_mol``),
    ``start_density_kg_m3``, ``overlap_A`` and ``maxtry`` (for ``create_atoms ... random``); nothing
    for an atomic liquid."""
    molecules = molecules_of(fit)
    if molecules is None:
        return {}
    molecule = fit["liquid"]["molecule"]
    masses = None
    if "file" in molecule and (path := liquid_file(fit, molecule["file"])) is not None:
        try:
            masses = read_molecule_file(path).masses
        except ChemFitError:
            masses = None
    return {
        "molecule_file": Path(molecule["file"]).name if "file" in molecule else None,
        "data_file": Path(molecule["data"]).name if "data" in molecule else None,
        "molecule_count": molecules.count,
        "atoms_per_molecule": molecules.atoms_per_molecule,
        "n_atoms": molecules.n_atoms,
        "molecule_mass_g_mol": sum(masses) if masses else molecules.atoms_per_molecule * fit["mass_g_mol"],
        "start_density_kg_m3": molecule["start_density_kg_m3"],
        "overlap_A": molecule["overlap_A"],
        "maxtry": molecule["maxtry"],
    }


def gradient_method_of(fit: Mapping[str, Any]) -> str | None:
    """Where the liquid terms' frame derivatives come from (``liquid.gradients.method``; ``auto``:
    LAMMPS reruns for molecules, else the torch model, reruns where it differs from LAMMPS); None
    when the optimiser uses no term gradients."""
    if fit["optimizer"].get("jacobian") not in GRADIENT_JACOBIANS:
        return None
    method = fit["liquid"]["gradients"]["method"]
    return "rerun" if method == "auto" and "molecule" in fit["liquid"] else method


def gas_template_path(fit: Mapping[str, Any]) -> Path | None:
    """The gas-phase template (``molecule.gas.template``: one of liquid.files, or a shipped name)."""
    from chemfit_core.stages.config import TEMPLATE_DIR

    gas = fit["liquid"].get("molecule", {}).get("gas")
    if gas is None:
        return None
    own = liquid_file(fit, gas["template"])
    return own if own is not None else TEMPLATE_DIR / gas["template"]


def gas_phase_run(
    fit: Mapping[str, Any],
    state_point: Mapping[str, Any],
    seed: int,
    workdir: Path | str,
    runs: OutputCache | None = None,
    gradients: bool = False,
) -> GasPhaseRun | None:
    """The gas-phase run of ⟨U_gas⟩ at a state point's temperature (``molecule.gas``); None without one
    (rigid molecules: U_gas = 0)."""
    gas = fit["liquid"].get("molecule", {}).get("gas")
    if gas is None:
        return None
    md = fit["liquid"]["md"]
    variables = {
        **liquid_template_variables(fit),
        "equilibration_steps": gas["equilibration_steps"],
        "production_steps": gas["production_steps"],
        "pressure_bar": state_point["pressure_bar"],
    }
    return GasPhaseRun(
        name=f"{state_point['name']}/gas",
        template=gas_template_path(fit),
        workdir=Path(workdir),
        temperature_K=state_point["temperature_K"],
        molecules=Molecules(gas["molecules"], atoms_per_molecule(fit)),
        seed=seed,
        template_variables=variables,
        n_blocks=md["n_blocks"],
        command_timeout=md["timeout_s"],
        gradients=gradients,
        dump_every=md["dump_every"],
        relative_step=fit["liquid"]["gradients"]["relative_step"],
        files=fit["liquid"]["files"],
        output_cache=runs,
    )


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
        "dump_every": 0,
        "rerun_dump": None,
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
            )
            cob.add(term, weights=sp["weight"] / sp["replicas"], names=name)
            terms_info.append({"name": name, "state_point": sp["name"], "replica": replica, "seed": seed})
    return cob, terms_info


def liquid_problems(where: str, fit: Mapping[str, Any], checked_dir: Path | str | None = None) -> list[str]:
    """Checks of ``liquid.molecule`` and ``liquid.gradients`` before any job, as ``where.key: ...``: the
    molecule's files among liquid.files, a molecule file LAMMPS rejects (its ERROR line, run once
    per file content when ``checked_dir`` remembers it), atom counts that are not whole molecules,
    templates that cannot serve LAMMPS reruns or the gas phase."""
    from chemfit_core.science.molecules import count_problem, molecule_file_error
    from chemfit_core.science.rerun import rerun_input

    liquid, problems = fit["liquid"], []
    molecule = liquid.get("molecule")
    method = gradient_method_of(fit)
    if molecule is not None:
        key = f"{where}.liquid.molecule"
        names = [Path(f).name for f in liquid["files"]]
        for field in ("file", "data"):
            if field in molecule and liquid_file(fit, molecule[field]) is None:
                problems.append(
                    f"{key}.{field}: expected the name of one of liquid.files {names} (copied into every run "
                    f"folder, where the template reads it), got {molecule[field]!r}: add it to liquid.files"
                )
        if "file" not in molecule and "data" not in molecule:
            problems.append(f"{key}: expected a molecule file (file, with count) or a data file (data), got neither")
        if "file" in molecule and "count" not in molecule and "data" not in molecule:
            problems.append(f"{key}.count: expected the number of molecules in the box (with file), got none")
        if "data" in molecule and "file" not in molecule and "atoms_per_molecule" not in molecule:
            problems.append(f"{key}.atoms_per_molecule: expected it (or a molecule file) with data, got neither")
        if problems:
            return problems
        apm = atoms_per_molecule(fit)
        if "file" in molecule:
            path = liquid_file(fit, molecule["file"])
            error = molecule_file_error(path, remember_in=checked_dir)
            if error:
                problems.append(f"{key}.file: LAMMPS rejects the molecule file {path}: {error}")
            elif apm != read_molecule_file(path).n_atoms:
                problems.append(
                    f"{key}.atoms_per_molecule: the molecule file {path} has {read_molecule_file(path).n_atoms} "
                    f"atoms, got {apm}"
                )
        if "data" in molecule:
            path = liquid_file(fit, molecule["data"])
            try:
                problem = count_problem(data_file_atoms(path), apm, molecule.get("count"))
            except (ChemFitError, OSError, ValueError) as exc:
                problem = f"cannot read its atom count: {exc}"
            if problem:
                problems.append(f"{key}.data: {path}: {problem}")
        if molecule.get("gas") and not gas_template_path(fit).is_file():
            problems.append(
                f"{key}.gas.template: expected the name of one of liquid.files or of a shipped template, got "
                f"{molecule['gas']['template']!r} (no such file)"
            )
    if liquid["gradients"]["method"] == "model" and molecule is not None and method is not None:
        problems.append(
            f"{where}.liquid.gradients.method: the torch model of a form knows no molecules (bonds, exclusions, "
            "constraints); expected rerun or auto for a molecular liquid, got model"
        )
    if problems or method not in ("rerun",):
        return problems
    initial = flatten_parameters({name: p["initial"] for name, p in fit["parameters"].items()})
    fixed = {**liquid_template_variables(fit), **initial, "seed": 1, "dump_every": fit["liquid"]["md"]["dump_every"]}
    templates = [("liquid.template", liquid["template"], fixed)]
    if gas_template_path(fit) is not None:
        templates.append(("liquid.molecule.gas.template", gas_template_path(fit), fixed))
    for name, template, variables in templates:
        from chemfit_core.stages.config import template_path

        for sp in liquid["state_points"]:
            at = {**variables, "temperature_K": sp["temperature_K"], "pressure_bar": sp["pressure_bar"]}
            try:
                rerun_input(str(template_path(template)), at, "frames.dump", ["id", "type", "x", "y", "z"])
            except Exception as exc:  # noqa: BLE001 - a render error or MD in the rerun input: the template's
                problems.append(f"{where}.{name}: {exc}")
                break
    return problems
