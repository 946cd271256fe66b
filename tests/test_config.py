"""Configuration validation: defaults filled, every error names the file, the key and what was expected."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chemfit_core import ConfigError
from chemfit_core.stages.config import config_hash, derived_seed, load_config, validate_config

DEFAULT = Path(__file__).resolve().parent.parent / "config" / "config.yaml"


@pytest.fixture
def config():
    return yaml.safe_load(DEFAULT.read_text())


def test_default_config_is_valid_and_defaults_are_filled(config):
    validated = validate_config(config, "config.yaml")
    md = validated["fits"]["argon"]["liquid"]["md"]
    assert md["n_blocks"] == 5 and md["thermo_every"] == 20  # filled from the schema
    assert validated["fits"]["argon"]["liquid"]["state_points"][0]["weight"] == 1.0


def break_config(config, path, value):
    node = config
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


ARGON = ["fits", "argon"]
SP0 = [*ARGON, "liquid", "state_points", 0]


@pytest.mark.parametrize(
    ("path", "value", "key", "expected"),
    [
        (
            [*ARGON, "parameters", "sigma_A", "initial"],
            "3.4",
            "fits.argon.parameters.sigma_A.initial",
            "expected number",
        ),
        (
            [*ARGON, "potential", "form"],
            "buckingham",
            "fits.argon.potential.form",
            "expected one of ['lj/cut', 'morse', 'eam/analytic'",
        ),
        ([*ARGON, "colour"], "blue", "fits.argon", "unknown key(s) 'colour'"),
        (
            [*SP0, "density_kg_m3", "denominator"],
            -1.0,
            "state_points[0].density_kg_m3.denominator",
            "expected a number > 0",
        ),
        ([*SP0, "replicas"], 0, "state_points[0].replicas", "expected a number >= 1"),
        ([*SP0, "temperature_K"], KeyError, "state_points[0]", "missing required key(s) 'temperature_K'"),
        ([*ARGON, "parameters", "sigma_A", "lower"], 5.0, "fits.argon.parameters.sigma_A", "expected lower < upper"),
        ([*ARGON, "parameters", "epsilon_K", "initial"], 500.0, "epsilon_K.initial", "within [80.0, 180.0]"),
        ([*ARGON, "liquid", "template"], "missing.j2", "fits.argon.liquid.template", "no such file"),
        (["seed"], -3, "seed", "expected a number >= 0"),
        (["fits"], {}, "fits", "expected at least 1 entry"),
    ],
)
def test_broken_config_names_file_key_and_expectation(config, path, value, key, expected):
    break_config(config, path, value)
    with pytest.raises(ConfigError) as info:
        validate_config(config, "my_config.yaml")
    message = str(info.value)
    assert "my_config.yaml: " in message
    assert key in message
    assert expected in message


def test_state_point_without_any_reference_is_rejected(config):
    sp = config["fits"]["argon"]["liquid"]["state_points"][0]
    del sp["density_kg_m3"], sp["hvap_kJ_mol"]
    with pytest.raises(
        ConfigError, match=r"state_points\[0\]: expected at least one of the keys density_kg_m3, hvap_kJ_mol"
    ):
        validate_config(config, "c.yaml")


def test_all_problems_are_reported_at_once(config):
    config["fits"]["argon"]["mass_g_mol"] = "heavy"
    config["seed"] = "abc"
    with pytest.raises(ConfigError) as info:
        validate_config(config, "c.yaml")
    assert "mass_g_mol" in str(info.value) and "seed" in str(info.value)


def test_load_config_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: configuration file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fits: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(scalar)


def test_config_hash_is_canonical(config):
    shuffled = dict(reversed(list(copy.deepcopy(config).items())))
    assert config_hash(config) == config_hash(shuffled)
    config["seed"] += 1
    assert config_hash(config) != config_hash(shuffled)


def test_derived_seeds_are_stable_and_distinct():
    assert derived_seed(1, "argon", "nbp", 0) == derived_seed(1, "argon", "nbp", 0)
    seeds = {derived_seed(1, "argon", "nbp", r) for r in range(1000)}
    # every LAMMPS random-number consumer (create_atoms random, velocity) takes 1 ... 9e8
    assert len(seeds) == 1000 and all(1 <= s <= 900_000_000 for s in seeds)


def test_snakemake_stops_on_a_schema_violation_before_any_job(tmp_path, config, venv_env, repo):
    config["fits"]["argon"]["parameters"]["sigma_A"]["upper"] = "four"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-n", "--configfile", str(bad)],
        cwd=repo,
        env=venv_env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "fits.argon.parameters.sigma_A.upper: expected number, got str 'four'" in output
    assert str(bad) in output


def test_cli_check_config_prints_defaults(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "chemfit_core", "check-config", str(DEFAULT)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "n_blocks: 5" in done.stdout


EXAMPLES = sorted((DEFAULT.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_is_valid(path):
    validate_config(yaml.safe_load(path.read_text()), path.name)


def morse_config():
    return yaml.safe_load((DEFAULT.parent / "examples" / "copper_morse.yaml").read_text())


MORSE = ["fits", "copper_morse"]


@pytest.mark.parametrize(
    ("path", "value", "key", "expected"),
    [
        ([*MORSE, "potential", "cutoff_A"], KeyError, "fits.copper_morse.potential.cutoff_A", "expected a cutoff"),
        (
            [*MORSE, "parameters", "sigma_A"],
            {"initial": 3.4, "lower": 3, "upper": 4},
            "fits.copper_morse.parameters",
            "expected exactly ['D_eV', 'alpha_invA', 'r0_A'] for form morse",
        ),
        (
            [*MORSE, "potential", "cutoff_sigma"],
            3.0,
            "fits.copper_morse.potential",
            "got ['cutoff_sigma'], which it does not use",
        ),
        (
            [*MORSE, "optimizer", "jacobian"],
            "analytic",
            "fits.copper_morse.optimizer.jacobian",
            "crystal targets have no analytic Jacobian",
        ),
        (
            [*MORSE, "crystal", "references", "a0"],
            {"value": 3.6, "denominator": 0.01},
            "fits.copper_morse.crystal.references",
            "a0",
        ),
        ([*MORSE, "crystal"], KeyError, "fits.copper_morse", "liquid"),
    ],
)
def test_broken_crystal_fit_names_file_key_and_expectation(path, value, key, expected):
    config = break_config(morse_config(), path, value)
    with pytest.raises(ConfigError) as info:
        validate_config(config, "cu.yaml")
    message = str(info.value)
    assert "cu.yaml: " in message and key in message and expected in message, message


def test_the_solid_stage_takes_any_form_and_validation_leaves_the_input_alone():
    config = morse_config()
    config["fits"]["copper_morse"]["solid"] = {"enabled": True}
    before = copy.deepcopy(config)
    validated = validate_config(config, "cu.yaml")
    assert validated["fits"]["copper_morse"]["solid"]["enabled"] is True
    assert config == before  # a new config comes back; Snakemake's own stays as given
    assert "structures" in validated["fits"]["copper_morse"]["solid"]
    assert "structures" not in config["fits"]["copper_morse"]["solid"]


def test_the_schema_names_exactly_the_registered_potential_forms():
    """A new potential is its module in chemfit_core.models plus this enum entry: both must agree."""
    from chemfit_core.models.forms import all_forms
    from chemfit_core.stages.config import SCHEMA_PATH

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    enum = schema["$defs"]["fit"]["properties"]["potential"]["properties"]["form"]["enum"]
    assert sorted(enum) == sorted(all_forms())


@pytest.mark.parametrize(
    ("method", "options", "key", "expected"),
    [
        (
            "least_squares",
            {"initial_tr_radius": 0.05},
            "optimizer.options",
            "does not take the option(s) ['initial_tr_radius']",
        ),
        ("Nelder-Mead", {"maxfev": 3, "rhobeg": 1}, "optimizer.options", "['rhobeg']"),
        ("COBYQ", {}, "optimizer.method", "unknown optimizer method 'COBYQ'"),
    ],
)
def test_options_a_method_does_not_take_are_named_before_any_job(config, method, options, key, expected):
    config["fits"]["argon"]["optimizer"].update(method=method, options=options)
    with pytest.raises(ConfigError) as info:
        validate_config(config, "c.yaml")
    assert f"c.yaml: fits.argon.{key}: " in str(info.value) and expected in str(info.value)


def test_each_method_gets_its_own_default_options(config):
    from chemfit_core.stages.optimizers import method_options_with_defaults

    del config["fits"]["argon"]["optimizer"]["options"]
    config["fits"]["argon"]["optimizer"]["method"] = "least_squares"
    validated = validate_config(config, "c.yaml")  # COBYQA's radii no longer leak into least squares
    assert validated["fits"]["argon"]["optimizer"]["options"] == {}
    assert method_options_with_defaults("least_squares", {}) == {}
    assert method_options_with_defaults("COBYQA", {}) == {"initial_tr_radius": 0.05, "final_tr_radius": 0.003}
    assert method_options_with_defaults("COBYQA", {"maxfev": 5}) == {"maxfev": 5}


def test_a_larger_budget_keeps_the_evaluation_cache(config, tmp_path):
    """max_evaluations is not part of the cache key: raising it replays every cached evaluation."""
    from chemfit_core.stages.config import TEMPLATE_DIR
    from chemfit_core.stages.fit import fit_cache

    fit = validate_config(config, "c.yaml")["fits"]["argon"]
    template = TEMPLATE_DIR / fit["liquid"]["template"]
    more = {**fit, "optimizer": {**fit["optimizer"], "max_evaluations": 400}}
    other = {**fit, "optimizer": {**fit["optimizer"], "options": {"maxfev": 3}}}
    key = fit_cache("argon", fit, 1, template, tmp_path).namespace
    assert fit_cache("argon", more, 1, template, tmp_path).namespace == key
    assert fit_cache("argon", other, 1, template, tmp_path).namespace != key
