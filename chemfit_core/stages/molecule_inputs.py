"""A molecular liquid's configuration (``liquid.molecule``) as the science's inputs, and the checks of
``liquid.molecule`` and ``liquid.gradients`` before any job.

The molecules of the box, what the template gets about them, the gas-phase run of ⟨U_gas⟩ and
the problems check-config names, each as ``fits.<fit>.liquid...: expected ..., got ...``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chemfit_core.cache import OutputCache
from chemfit_core.errors import ChemFitError
from chemfit_core.file_based_computer import flatten_parameters
from chemfit_core.science.molecules import GasPhaseRun, Molecules, data_file_atoms, read_molecule_file


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
    from chemfit_core.stages.objective import lammps_form_of, liquid_template_variables

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
        form=lammps_form_of(fit, gas_template_path(fit)),
    )


def liquid_problems(where: str, fit: Mapping[str, Any], checked_dir: Path | str | None = None) -> list[str]:
    """Checks of ``liquid.molecule`` and ``liquid.gradients`` before any job, as ``where.key: ...``: the
    molecule's files among liquid.files, a molecule file LAMMPS rejects (its ERROR line, run once
    per file content when ``checked_dir`` remembers it), atom counts that are not whole molecules,
    templates that cannot serve LAMMPS reruns or the gas phase."""
    from chemfit_core.science.molecules import count_problem, molecule_file_error
    from chemfit_core.science.rerun import rerun_input
    from chemfit_core.stages.objective import gradient_method_of, liquid_template_variables, pair_variables

    liquid, problems = fit["liquid"], thermo_column_problems(where, fit) + structure_target_problems(where, fit)
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
            at.update(pair_variables(fit, initial, template_path(template)))
            try:
                rerun_input(str(template_path(template)), at, "frames.dump", ["id", "type", "x", "y", "z"])
            except Exception as exc:  # noqa: BLE001 - a render error or MD in the rerun input: the template's
                problems.append(f"{where}.{name}: {exc}")
                break
    return problems


def thermo_column_problems(where: str, fit: Mapping[str, Any]) -> list[str]:
    """The thermo columns the state points' targets read that the liquid template's fit runs do not
    print (:func:`chemfit_core.stages.template_contract.column_problems`), as ``where.liquid.template:
    <template>: ...``; a template that does not render is named by the template checks."""
    from chemfit_core.file_based_computer import render_template
    from chemfit_core.stages.config import template_path
    from chemfit_core.stages.objective import fit_template_contexts, thermo_columns
    from chemfit_core.stages.template_contract import column_problems

    columns = thermo_columns(fit)
    if not columns:
        return []
    path = template_path(fit["liquid"]["template"])
    for _, variables in fit_template_contexts(fit)[:1]:
        try:
            rendered = render_template(str(path), variables)
        except Exception:  # noqa: BLE001 - reported by the template checks
            return []
        return [f"{where}.liquid.template: {path}: {p}" for p in column_problems(rendered, columns, path.read_text())]
    return []


def structure_target_problems(where: str, fit: Mapping[str, Any]) -> list[str]:
    """The state points' RDF targets that cannot be built (reference file, bins, weights, pairs) and
    the RDF and MSD outputs the liquid template's fit runs do not write
    (:func:`chemfit_core.stages.template_contract.structure_problems`), each naming its key."""
    from chemfit_core.file_based_computer import render_template
    from chemfit_core.stages.config import template_path
    from chemfit_core.stages.objective import fit_template_contexts, rdf_of
    from chemfit_core.stages.template_contract import structure_problems

    problems = []
    for index, sp in enumerate(fit["liquid"]["state_points"]):
        if "rdf" in sp:
            try:
                rdf_of(fit, sp)
            except (ChemFitError, ValueError, OSError) as exc:
                message = str(exc) if str(exc).startswith("rdf") else f"rdf: {exc}"
                problems.append(f"{where}.liquid.state_points[{index}].{message}")
    if problems or not any("rdf" in sp or "diffusion_1e9_m2_s" in sp for sp in fit["liquid"]["state_points"]):
        return problems
    path = template_path(fit["liquid"]["template"])
    for label, variables in fit_template_contexts(fit):
        if not (variables.get("rdf") or variables.get("msd")) or not label.endswith("fit run"):
            continue
        try:
            rendered = render_template(str(path), variables)
        except Exception:  # noqa: BLE001 - reported by the template checks
            return problems
        found = structure_problems(rendered, variables.get("rdf"), variables.get("msd"))
        problems += [f"{where}.liquid.template: {path}: {label}: {p}" for p in found]
    return problems
