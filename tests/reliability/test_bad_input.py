"""Bad input is refused by the configuration check, before any expensive work starts.

Every case runs :func:`validate_config` or :func:`load_config` (what Snakemake and
``chemfit check-config`` call before any job) on a real configuration broken in one way,
and checks that the :class:`ConfigError` names the file, the key (and the structure index
or template line where there is one) and what was expected. Nothing is mocked: structure
files are real extxyz files written with ase, templates are rendered by the workflow's
sandboxed Jinja environment.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from chemfit_core import ConfigError
from chemfit_core.stages.config import (
    MAX_STRUCTURE_PROBLEMS,
    TEMPLATE_DIR,
    load_config,
    validate_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
SOURCE = "bad.yaml"

Config = dict[str, Any]


def argon() -> Config:
    """The default configuration: a liquid fit with one state point."""
    return yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())


def copper_morse() -> Config:
    """The crystal example."""
    return yaml.safe_load((CONFIG_DIR / "examples" / "copper_morse.yaml").read_text())


def structures_fit(file: Path | str, **spec: Any) -> Config:
    """The recovery example fitted to the structures in ``file`` instead of synthetic data."""
    config = yaml.safe_load((CONFIG_DIR / "examples" / "recovery.yaml").read_text())
    config["fits"]["recovery"]["structures"] = {"file": str(file), **spec}
    return config


def problems_of(config: Config, template_dir: Path | None = None) -> str:
    """The message of the ConfigError that validate_config raises (the test fails if it does not)."""
    kwargs = {} if template_dir is None else {"template_dir": template_dir}
    with pytest.raises(ConfigError) as info:
        validate_config(config, SOURCE, **kwargs)
    return str(info.value)


def assert_names(message: str, *fragments: str) -> None:
    """Every fragment (file, key, index, expectation) appears in the message."""
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from:\n{message}"


# -- the schema and the checks next to it ------------------------------------------------------
FIT = ["fits", "argon"]
SP0 = [*FIT, "liquid", "state_points", 0]


def setting(path: list[Any], value: Any) -> Callable[[Config], None]:
    """A mutation that sets (or, for ``KeyError``, deletes) the value at ``path``."""

    from test_config import break_config

    return lambda config: break_config(config, path, value)


def without_references(config: Config) -> None:
    sp = config["fits"]["argon"]["liquid"]["state_points"][0]
    del sp["density_kg_m3"], sp["hvap_kJ_mol"]


def duplicated_state_point(name: str) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        points = config["fits"]["argon"]["liquid"]["state_points"]
        points.append({**copy.deepcopy(points[0]), "name": name})

    return mutate


def renamed_fit(name: Any) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        config["fits"] = {name: config["fits"].pop("argon")}

    return mutate


def two_fits_differing_in_case(config: Config) -> None:
    config["fits"]["Argon"] = copy.deepcopy(config["fits"]["argon"])


CASES = {
    "wrong_type": (
        setting([*FIT, "parameters", "sigma_A", "initial"], "3.4"),
        "fits.argon.parameters.sigma_A.initial",
        "expected number, got str '3.4'",
    ),
    "wrong_type_list": (
        setting([*FIT, "liquid", "state_points"], {"name": "nbp"}),
        "fits.argon.liquid.state_points",
        "expected array, got dict",
    ),
    "unknown_key": (setting([*FIT, "colour"], "blue"), "fits.argon", "unknown key(s) 'colour'; allowed keys:"),
    "unknown_key_in_state_point": (
        setting([*SP0, "density"], 1400.0),
        "fits.argon.liquid.state_points[0]",
        "unknown key(s) 'density'",
    ),
    "negative_weight": (
        setting([*SP0, "weight"], -1.0),
        "fits.argon.liquid.state_points[0].weight",
        "expected a number >= 0, got -1.0",
    ),
    "inverted_bounds": (
        setting([*FIT, "parameters", "sigma_A", "lower"], 5.0),
        "fits.argon.parameters.sigma_A",
        "expected lower < upper, got lower=5.0, upper=4.0",
    ),
    "initial_outside_bounds": (
        setting([*FIT, "parameters", "epsilon_K", "initial"], 500.0),
        "fits.argon.parameters.epsilon_K.initial",
        "expected a value within [80.0, 180.0], got 500.0",
    ),
    "missing_reference": (
        without_references,
        "fits.argon.liquid.state_points[0]",
        "expected at least one of the keys density_kg_m3, hvap_kJ_mol",
    ),
    "missing_required_key": (
        setting([*SP0, "temperature_K"], KeyError),
        "fits.argon.liquid.state_points[0]",
        "missing required key(s) 'temperature_K'",
    ),
    "missing_parameters": (
        setting([*FIT, "parameters"], KeyError),
        "fits.argon",
        "missing required key(s) 'parameters'",
    ),
    "bad_enum": (
        setting([*FIT, "optimizer", "jacobian"], "exact"),
        "fits.argon.optimizer.jacobian",
        "expected one of ['2-point', '3-point', 'analytic', 'fluctuation'], got 'exact'",
    ),
    "unknown_potential_form": (
        setting([*FIT, "potential", "form"], "eam/fs"),
        "fits.argon.potential.form",
        "expected one of ['lj/cut', 'morse', 'eam/analytic'",
    ),
    "zero_replicas": (
        setting([*SP0, "replicas"], 0),
        "fits.argon.liquid.state_points[0].replicas",
        "expected a number >= 1, got 0",
    ),
    "zero_denominator": (
        setting([*SP0, "density_kg_m3", "denominator"], 0.0),
        "fits.argon.liquid.state_points[0].density_kg_m3.denominator",
        "expected a number > 0",
    ),
    "nan_reference_value": (
        setting([*SP0, "density_kg_m3", "value"], float("nan")),
        "fits.argon.liquid.state_points[0].density_kg_m3.value",
        "expected a finite number, got nan",
    ),
    "inf_denominator": (
        setting([*SP0, "hvap_kJ_mol", "denominator"], float("inf")),
        "fits.argon.liquid.state_points[0].hvap_kJ_mol.denominator",
        "expected a finite number, got inf",
    ),
    "nan_weight": (
        setting([*SP0, "weight"], float("nan")),
        "fits.argon.liquid.state_points[0].weight",
        "expected a finite number, got nan",
    ),
    "minus_inf_pressure": (
        setting([*SP0, "pressure_bar"], float("-inf")),
        "fits.argon.liquid.state_points[0].pressure_bar",
        "expected a finite number, got -inf",
    ),
    "nan_bound": (
        setting([*FIT, "parameters", "sigma_A", "upper"], float("nan")),
        "fits.argon.parameters.sigma_A.upper",
        "expected a finite number, got nan",
    ),
    "duplicate_state_points": (
        duplicated_state_point("normal_boiling_point"),
        "fits.argon.liquid.state_points",
        (
            "expected unique state point names (letter case ignored: they name folders), "
            "got duplicates ['normal_boiling_point']"
        ),
    ),
    "state_points_differing_in_case": (
        duplicated_state_point("Normal_Boiling_Point"),
        "fits.argon.liquid.state_points",
        "expected unique state point names",
    ),
    "fits_differing_in_case": (
        two_fits_differing_in_case,
        f"{SOURCE}: fits:",
        ("expected unique fit names (letter case ignored: they name folders), got duplicates ['Argon', 'argon']"),
    ),
    "parameters_not_matching_form": (
        setting([*FIT, "parameters", "D_eV"], {"initial": 0.3, "lower": 0.1, "upper": 1}),
        "fits.argon.parameters",
        "expected exactly ['epsilon_K', 'sigma_A'] for form lj/cut, got ['D_eV',",
    ),
    "unknown_element": (
        setting([*FIT, "element"], "Xx"),
        "fits.argon.element",
        "expected a chemical symbol (H, He, ... Og), got 'Xx'",
    ),
    "missing_template": (
        setting([*FIT, "liquid", "template"], "missing.j2"),
        "fits.argon.liquid.template",
        "got 'missing.j2' (no such file)",
    ),
    "no_fits": (setting(["fits"], {}), f"{SOURCE}: fits:", "expected at least 1 entry, got none"),
    "negative_seed": (setting(["seed"], -3), f"{SOURCE}: seed:", "expected a number >= 0, got -3"),
}


@pytest.mark.parametrize(("mutate", "key", "expected"), CASES.values(), ids=CASES.keys())
def test_broken_setting_names_file_key_and_expectation(mutate, key, expected):
    config = argon()
    mutate(config)
    assert_names(problems_of(config), f"{SOURCE}: ", key, expected)


def test_crystal_fit_with_analytic_jacobian_is_refused():
    config = copper_morse()
    config["fits"]["copper_morse"]["optimizer"]["jacobian"] = "analytic"
    assert_names(
        problems_of(config),
        f"{SOURCE}: fits.copper_morse.optimizer.jacobian",
        "crystal targets have no analytic Jacobian; expected 2-point or 3-point, got analytic",
    )


def test_all_problems_are_reported_at_once():
    config = argon()
    setting([*SP0, "density_kg_m3", "value"], float("nan"))(config)
    setting([*FIT, "mass_g_mol"], "heavy")(config)
    setting([*SP0, "replicas"], 0)(config)
    assert_names(
        problems_of(config),
        "density_kg_m3.value: expected a finite number",
        "mass_g_mol: expected number",
        "replicas: expected a number >= 1",
    )


# -- names that become paths (results/<fit>/..., work/<fit>/..., .../validation/<state>/...) ------
ESCAPING = ["../evil", "..", ".", "a/b", "/etc", "/tmp/x", "a\\b", "", " argon", "name\n", "~root"]


@pytest.mark.parametrize("name", [*ESCAPING, 7], ids=repr)
def test_fit_name_cannot_escape_the_results_folder(name):
    config = argon()
    renamed_fit(name)(config)
    message = problems_of(config)
    assert f"{SOURCE}: fits: expected a " in message and repr(name) in message, message


@pytest.mark.parametrize("name", ESCAPING, ids=repr)
def test_state_point_name_cannot_escape_the_results_folder(name):
    config = argon()
    setting([*SP0, "name"], name)(config)
    assert_names(problems_of(config), f"{SOURCE}: fits.argon.liquid.state_points[0].name: expected a ", repr(name))


@pytest.mark.parametrize(
    "name", ["../templates/lj_liquid_npt.lammps.j2", "/nonexistent/t.j2", "sub/t.j2", ".hidden.j2"]
)
def test_a_template_that_is_neither_the_users_file_nor_shipped_is_named(name):
    """Templates are the user's files (relative to the config file) or shipped names; neither: an error."""
    config = argon()
    setting([*FIT, "liquid", "template"], name)(config)
    message = problems_of(config)
    assert f"{SOURCE}: fits.argon.liquid.template: expected a template file" in message, message
    assert "lj_liquid_npt.lammps.j2" in message and "no such file" in message, message


def test_fit_names_of_the_examples_are_plain():
    """The check is no stricter than the names the shipped configurations use."""
    for path in [CONFIG_DIR / "config.yaml", *sorted((CONFIG_DIR / "examples").glob("*.yaml"))]:
        load_config(path)


# -- the config file itself --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fits: [unclosed\n", "not valid YAML"),
        ("fits:\n  argon:\n    element: Ar\n      mass_g_mol: 4\n", "line 4"),
        ("- fits\n- seed\n", "expected a mapping of keys at the top level, got list"),
        ("", "expected a mapping of keys at the top level, got NoneType"),
        ("42\n", "expected a mapping of keys at the top level, got int"),
    ],
    ids=["unclosed_bracket", "bad_indentation", "list_at_top_level", "empty_file", "scalar_at_top_level"],
)
def test_malformed_config_file_is_named(tmp_path, text, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_names(str(info.value), f"{path}: ", expected)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: configuration file not found"):
        load_config(tmp_path / "nope.yaml")


def test_non_mapping_top_level_passed_directly():
    assert_names(problems_of(["fits"]), f"{SOURCE}: (top level): expected object, got list")


def test_yaml_nan_and_inf_are_refused_with_their_keys(tmp_path):
    text = (CONFIG_DIR / "config.yaml").read_text()
    text = text.replace("value: 1395.40", "value: .nan").replace("denominator: 0.1", "denominator: .inf")
    path = tmp_path / "nan.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_names(
        str(info.value),
        f"{path}: fits.argon.liquid.state_points[0].density_kg_m3.value: expected a finite number, got nan",
        f"{path}: fits.argon.liquid.state_points[0].hvap_kJ_mol.denominator: expected a finite number, got inf",
    )


# -- the liquid template, rendered as the workflow renders it -------------------------------------
def template_dir_with(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "lj_liquid_npt.lammps.j2").write_text(text)
    return folder


REAL_TEMPLATE = (TEMPLATE_DIR / "lj_liquid_npt.lammps.j2").read_text()


def test_template_syntax_error_names_file_and_line(tmp_path):
    good = "timestep        {{ timestep_fs / 1000.0 }}"
    broken = REAL_TEMPLATE.replace(good, good[:-1])  # an unclosed expression
    line = REAL_TEMPLATE.splitlines().index(good) + 1
    folder = template_dir_with(tmp_path, broken)
    assert_names(
        problems_of(argon(), folder),
        f"{SOURCE}: fits.argon.liquid.template: expected a valid Jinja template",
        f"{folder / 'lj_liquid_npt.lammps.j2'}, line {line}: syntax error",
    )


def test_template_unclosed_block_is_a_syntax_error(tmp_path):
    folder = template_dir_with(tmp_path, "units metal\n{% if tail_correction %}\npair_modify tail yes\n")
    assert_names(
        problems_of(argon(), folder),
        "fits.argon.liquid.template: expected a valid Jinja template",
        "syntax error",
        "endif",
    )


def test_template_undefined_variable_names_file_line_and_variable(tmp_path):
    folder = template_dir_with(
        tmp_path, REAL_TEMPLATE.replace("{{ timestep_fs / 1000.0 }}", "{{ time_step_fs / 1000.0 }}")
    )
    line = next(k for k, text in enumerate(REAL_TEMPLATE.splitlines(), 1) if "{{ timestep_fs / 1000.0 }}" in text)
    assert_names(
        problems_of(argon(), folder),
        "fits.argon.liquid.template: expected a template that renders with the variables the workflow sets",
        "timestep_fs",
        f"{folder / 'lj_liquid_npt.lammps.j2'}, line {line}: 'time_step_fs' is undefined",
        "(state point normal_boiling_point, fit run)",
    )


def test_every_kind_of_run_gets_the_same_variables(tmp_path):
    """Fit and validation runs render with the same names (a validation run gets dump_every 0: no
    frames), so a template that renders for one renders for the other; a name neither has is named."""
    from chemfit_core.stages.objective import fit_template_contexts

    contexts = dict(fit_template_contexts(validate_config(argon(), SOURCE)["fits"]["argon"]))
    fit_run, validation_run = contexts.values()
    assert set(fit_run) == set(validation_run) and validation_run["dump_every"] == 0
    folder = template_dir_with(tmp_path, "units metal\ndump d all custom {{ dump_evry }} f.dump id x y z\n")
    assert_names(
        problems_of(argon(), folder), "line 2: 'dump_evry' is undefined", "(state point normal_boiling_point, "
    )


def test_template_runtime_error_is_reported(tmp_path):
    folder = template_dir_with(tmp_path, "units metal\n\nmass 1 {{ mass_g_mol + 'g' }}\n")
    assert_names(problems_of(argon(), folder), "fits.argon.liquid.template", "line 3: TypeError")


def test_sandbox_refuses_unsafe_template(tmp_path):
    folder = template_dir_with(tmp_path, "{{ seed.__class__.__subclasses__() }}\n")
    assert_names(problems_of(argon(), folder), "fits.argon.liquid.template", "line 1", "unsafe")


def test_validation_renders_the_template_with_the_variables_the_pipeline_sets(tmp_path):
    """The check's fit-run variables are the ones each LiquidStatePointTerm renders with."""
    from chemfit_core.science.rerun import form_template_variables
    from chemfit_core.stages.objective import build_liquid_objective, fit_template_contexts

    config = validate_config(argon(), SOURCE)
    for jacobian in ("2-point", "fluctuation"):
        fit = copy.deepcopy(config["fits"]["argon"])
        fit["optimizer"]["jacobian"] = jacobian
        cob, _ = build_liquid_objective(
            "argon", fit, config["seed"], TEMPLATE_DIR / fit["liquid"]["template"], tmp_path
        )
        term = cob.objective_functions[0]
        initial = {n: p["initial"] for n, p in fit["parameters"].items()}
        rendered = {**term.computer.template_variables, **initial}
        rendered.update(form_template_variables(term.computer.form, initial, tmp_path))  # per evaluation
        checked = dict(fit_template_contexts(fit))["state point normal_boiling_point, fit run"]
        assert {k: v for k, v in checked.items() if k != "seed"} == {k: v for k, v in rendered.items() if k != "seed"}


# -- reference structure files (fits.<f>.structures.file) ----------------------------------------
def copper(
    energy: float | None = -28.0,
    forces: np.ndarray | None | str = "zeros",
    stress: np.ndarray | None = None,
    symbols: dict[int, str] | None = None,
) -> Any:
    """An 8-atom periodic fcc copper cell with single-point results (None: left out)."""
    atoms = bulk("Cu", "fcc", a=3.615).repeat(2)
    for index, symbol in (symbols or {}).items():
        atoms[index].symbol = symbol
    results: dict[str, Any] = {}
    if energy is not None:
        results["energy"] = energy
    if isinstance(forces, str):
        forces = np.zeros((len(atoms), 3))
    if forces is not None:
        results["forces"] = forces
    if stress is not None:
        results["stress"] = stress
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def extxyz(tmp_path: Path, frames: list[Any], name: str = "ref.extxyz") -> Path:
    path = tmp_path / name
    write(path, frames, format="extxyz")
    return path


def structure_problems_of(path: Path | str, **spec: Any) -> str:
    return problems_of(structures_fit(path, **spec))


KEY = f"{SOURCE}: fits.recovery.structures.file"


def test_good_structure_file_is_accepted(tmp_path):
    path = extxyz(tmp_path, [copper(), copper(energy=-27.5)])
    validate_config(structures_fit(path), SOURCE)


def test_missing_structure_file(tmp_path):
    missing = str(tmp_path / "nowhere.extxyz")
    assert_names(
        structure_problems_of(missing),
        KEY,
        "expected an extxyz file of Cu structures with energy, forces",
        f"got {missing!r} (no such file)",
    )


def test_corrupt_structure_file(tmp_path):
    path = tmp_path / "garbage.extxyz"
    path.write_text("this is not\nan extxyz file\n")
    assert_names(
        structure_problems_of(path),
        KEY,
        "expected an extxyz file of Cu structures",
        f"got {str(path)!r}, which ase cannot read (XYZError:",
    )


def test_truncated_structure_file(tmp_path):
    text = extxyz(tmp_path, [copper()]).read_text()
    path = tmp_path / "truncated.extxyz"
    path.write_text("".join(text.splitlines(keepends=True)[:6]))
    assert_names(structure_problems_of(path), KEY, "which ase cannot read")


def test_empty_structure_file(tmp_path):
    path = tmp_path / "empty.extxyz"
    path.write_text("")
    assert_names(structure_problems_of(path), KEY, f"expected at least 1 structure in {str(path)!r}, got none")


def test_structure_without_forces(tmp_path):
    path = extxyz(tmp_path, [copper(), copper(forces=None)])
    assert_names(
        structure_problems_of(path),
        f"{KEY}: {path}, structure 1: expected energy, forces (they are fitted), got no forces",
    )


def test_structure_without_any_results(tmp_path):
    path = extxyz(tmp_path, [copper(energy=None, forces=None)])
    assert_names(structure_problems_of(path), f"{KEY}: {path}, structure 0:", "got no energy and no forces")


def test_structure_without_stress_when_stresses_are_fitted(tmp_path):
    path = extxyz(tmp_path, [copper(stress=np.zeros(6)), copper()])
    assert_names(
        structure_problems_of(path, stress_denominator=0.001),
        f"{KEY}: {path}, structure 1:",
        "expected energy, forces, stress (they are fitted), got no stress",
    )


def test_nan_force_names_structure_and_atom(tmp_path):
    forces = np.zeros((8, 3))
    forces[3, 1] = np.nan
    path = extxyz(tmp_path, [copper(), copper(), copper(forces=forces)])
    assert_names(structure_problems_of(path), f"{KEY}: {path}, structure 2: expected finite forces, got nan on atom 3")


def test_infinite_energy(tmp_path):
    path = extxyz(tmp_path, [copper(energy=float("inf"))])
    assert_names(structure_problems_of(path), f"{KEY}: {path}, structure 0: expected finite energy, got inf")


def test_overlapping_atoms_name_structure_atoms_and_distance(tmp_path):
    crowded = copper()
    crowded.positions[5] = crowded.positions[0] + [0.2, 0.0, 0.0]
    path = extxyz(tmp_path, [copper(), crowded])
    assert_names(
        structure_problems_of(path),
        f"{KEY}: {path}, structure 1: expected atoms at least 0.5 Å apart",
        "got atoms 0 and 5 0.200 Å apart",
    )


def test_a_remembered_check_never_hides_a_file_edited_in_place(tmp_path):
    """validate_config(checked_dir=...) (what every Snakemake start does) remembers a file that
    passed by its content: the same bytes are not read again, an edit is checked afresh."""
    checked = tmp_path / "checked"
    path = extxyz(tmp_path, [copper(), copper(energy=-27.5)])
    validate_config(structures_fit(path), SOURCE, checked_dir=checked)
    (marker,) = checked.iterdir()
    assert json.loads(marker.read_text())["structures"] == 2
    validate_config(structures_fit(path), SOURCE, checked_dir=checked)
    assert list(checked.iterdir()) == [marker]  # the same content: remembered, nothing new written

    crowded = copper()
    crowded.positions[5] = crowded.positions[0] + [0.2, 0.0, 0.0]
    write(path, [copper(), crowded], format="extxyz")  # same name, new content
    with pytest.raises(ConfigError) as info:
        validate_config(structures_fit(path), SOURCE, checked_dir=checked)
    assert_names(str(info.value), f"{KEY}: {path}, structure 1: expected atoms at least 0.5 Å apart")
    assert list(checked.iterdir()) == [marker]  # a file with problems is never remembered

    write(path, [copper(), copper(energy=-27.5)], format="extxyz")  # the passing content again
    config = structures_fit(path)
    config["fits"]["recovery"]["structures"]["stress_denominator"] = 0.001  # now stress is needed too
    with pytest.raises(ConfigError) as info:  # the remembered pass was for energy and forces only
        validate_config(config, SOURCE, checked_dir=checked)
    assert_names(str(info.value), "expected energy, forces, stress (they are fitted), got no stress")


def test_overlap_across_the_periodic_boundary_is_found(tmp_path):
    """Atom 3 sits 3.415 Å from atom 0 in the cell, 0.2 Å from its periodic image."""
    cell = bulk("Cu", "fcc", a=3.615, cubic=True)
    cell.positions[3] = [3.415, 0.0, 0.0]
    cell.calc = SinglePointCalculator(cell, energy=-14.0, forces=np.zeros((4, 3)))
    path = extxyz(tmp_path, [cell])
    assert_names(structure_problems_of(path), f"{KEY}: {path}, structure 0:", "got atoms 0 and 3 0.200 Å apart")


def test_unknown_chemical_symbol_in_structure_file(tmp_path):
    path = extxyz(tmp_path, [copper()])
    path.write_text(path.read_text().replace("\nCu ", "\nXx ", 1))
    assert_names(structure_problems_of(path), KEY, "which ase cannot read (unknown chemical symbol 'Xx')")


def test_dummy_atoms_in_structure_file(tmp_path):
    path = extxyz(tmp_path, [copper(symbols={2: "X"})])
    assert_names(structure_problems_of(path), f"{KEY}: {path}, structure 0: expected only Cu atoms", "got X (atoms 2)")


def test_element_mismatch_names_structure_and_atoms(tmp_path):
    path = extxyz(tmp_path, [copper(), copper(symbols={1: "Ag", 4: "Ag"})])
    assert_names(
        structure_problems_of(path),
        f"{KEY}: {path}, structure 1: expected only Cu atoms (the fit's species), got Ag (atoms 1, 4)",
    )


def test_fit_element_other_than_the_structures(tmp_path):
    path = extxyz(tmp_path, [copper()])
    config = structures_fit(path)
    config["fits"]["recovery"]["element"] = "Ni"
    assert_names(problems_of(config), f"{KEY}: {path}, structure 0: expected only Ni atoms", "got Cu")


def test_many_bad_structures_are_counted_not_listed(tmp_path):
    path = extxyz(tmp_path, [copper(forces=None) for _ in range(MAX_STRUCTURE_PROBLEMS + 5)])
    message = structure_problems_of(path)
    assert message.count("got no forces") == MAX_STRUCTURE_PROBLEMS
    assert_names(message, f"{KEY}: {path}: ... and 5 more problems")


def test_structure_problems_come_with_the_other_problems(tmp_path):
    path = extxyz(tmp_path, [copper(forces=None)])
    config = structures_fit(path)
    config["fits"]["recovery"]["parameters"]["beta"]["lower"] = 10.0
    assert_names(
        problems_of(config), "structure 0:", "got no forces", "fits.recovery.parameters.beta: expected lower < upper"
    )


def test_atom_overlapping_its_own_periodic_image(tmp_path):
    thin = Atoms("Cu", positions=[[0, 0, 0]], cell=[0.3, 5.0, 5.0], pbc=True)
    thin.calc = SinglePointCalculator(thin, energy=0.0, forces=np.zeros((1, 3)))
    path = extxyz(tmp_path, [copper(), thin])
    assert_names(
        structure_problems_of(path), f"{KEY}: {path}, structure 1:", "got atom 0 and its periodic image 0.300 Å apart"
    )


def test_periodic_structure_without_a_cell(tmp_path):
    flat = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]], cell=[0.0, 5.0, 5.0], pbc=True)
    flat.calc = SinglePointCalculator(flat, energy=0.0, forces=np.zeros((2, 3)))
    path = extxyz(tmp_path, [flat])
    assert_names(
        structure_problems_of(path),
        f"{KEY}: {path}, structure 0: expected a cell vector along periodic axis x, got length 0",
    )


def test_solid_structure_set_is_checked_like_reference_structures(tmp_path):
    """Files of ``solid.sets`` are read before any job too; they need no energies or forces."""
    crowded = bulk("Ar", "fcc", a=5.26).repeat(2)
    crowded.positions[1] = crowded.positions[0] + [0.0, 0.3, 0.0]
    config = argon()
    config["fits"]["argon"]["solid"]["sets"] = {
        "defects": {"file": str(extxyz(tmp_path, [bulk("Ar", "fcc", a=5.26), crowded]))},
        "gone": {"file": str(tmp_path / "gone.extxyz")},
    }
    assert_names(
        problems_of(config),
        f"{SOURCE}: fits.argon.solid.sets.defects.file: {tmp_path / 'ref.extxyz'}, structure 1: "
        "expected atoms at least 0.5 Å apart (periodic images included), got atoms 0 and 1 0.300 Å apart",
        f"{SOURCE}: fits.argon.solid.sets.gone.file: expected an extxyz file of Ar structures (relative",
        "(no such file)",
    )


def test_a_solid_set_is_checked_again_where_it_is_read(tmp_path):
    """chemfit_core.stages.solid (the prepare_solid rule, or a user calling it) applies the same per-structure
    check as the config validation, so an unvalidated config cannot slip a bad set through."""
    from chemfit_core.errors import ChemFitError
    from chemfit_core.stages.solid import set_structures

    copper = bulk("Cu", "fcc", a=3.615).repeat(2)
    config = validate_config(argon(), SOURCE)
    config["fits"]["argon"]["solid"]["sets"] = {
        "foreign": {"file": str(extxyz(tmp_path, [bulk("Ar", "fcc", a=5.26), copper]))}
    }
    with pytest.raises(ChemFitError) as info:
        set_structures("argon", config["fits"]["argon"], "foreign", 3.76, 1)
    assert_names(
        str(info.value),
        "fits.argon.solid.sets.foreign:",
        f"{tmp_path / 'ref.extxyz'}, structure 1: expected only Ar atoms (the fit's species), got Cu",
    )
