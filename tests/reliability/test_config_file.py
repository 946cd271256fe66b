"""Config files and cross-key constraints that used to pass the check and fail later (or hang)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from chemfit_core.errors import ConfigError
from chemfit_core.stages.config import load_config, read_config_file

REPO = Path(__file__).resolve().parents[2]
DEFAULT = (REPO / "config" / "config.yaml").read_text()


def write(tmp_path: Path, text: str | bytes, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def edited(edit) -> str:
    config = yaml.safe_load(DEFAULT)
    edit(config["fits"]["argon"])
    return yaml.safe_dump(config)


def test_the_same_fit_name_twice_is_refused_not_dropped(tmp_path):
    text = DEFAULT.replace("fits:\n", "fits:\n  argon:\n    description: first\n", 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"(?s)c\.yaml: not valid YAML: .*expected unique keys, got 'argon' twice"):
        load_config(path)


def test_a_billion_laughs_is_refused_at_once(tmp_path):
    lines = ["x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"x{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 9)]
    path = write(tmp_path, DEFAULT + "\n".join(lines) + "\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="alias"):
        load_config(path)
    assert time.monotonic() - start < 5


def test_a_config_that_is_not_utf8_names_the_file(tmp_path):
    path = write(tmp_path, DEFAULT.replace("Å", "A").encode() + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"c\.yaml: expected UTF-8 text, got byte 0xe9"):
        load_config(path)


def test_a_directory_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="expected a YAML file, got a directory"):
        load_config(tmp_path)


def test_yte_templates_are_refused_with_the_reason(tmp_path):
    path = write(tmp_path, "__use_yte__: true\n" + DEFAULT)
    with pytest.raises(ConfigError, match="__use_yte__: expected a plain YAML configuration"):
        read_config_file(path)


def test_names_that_cannot_be_folders_are_refused(tmp_path):
    long = "a" * 300
    path = write(tmp_path, edited(lambda fit: fit["liquid"]["state_points"][0].update(name=long)))
    with pytest.raises(ConfigError, match="state_points\\[0\\].name: expected a state point name of at most 100"):
        load_config(path)


@pytest.mark.parametrize(
    ("edit", "key", "expected"),
    [
        (
            lambda fit: fit["liquid"]["md"].update(n_blocks=60, production_steps=1000, thermo_every=20),
            "liquid.md.n_blocks",
            "expected at most the 51 thermo rows",
        ),
        (
            lambda fit: (
                fit["liquid"]["md"].update(dump_every=30),
                fit.update(optimizer={"method": "least_squares", "jacobian": "fluctuation", "options": {}}),
            ),
            "liquid.md.dump_every",
            "expected a multiple of thermo_every (20",
        ),
        (
            lambda fit: (
                fit["liquid"]["md"].update(dump_every=2000),
                fit.update(optimizer={"method": "least_squares", "jacobian": "fluctuation", "options": {}}),
            ),
            "liquid.md.dump_every",
            "expected at least 10 frames",
        ),
    ],
)
def test_run_lengths_that_cannot_give_the_averages_are_named(tmp_path, edit, key, expected):
    path = write(tmp_path, edited(edit))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"fits.argon.{key}: {expected}" in str(info.value), str(info.value)


def test_a_coplanar_cell_names_file_and_structure(tmp_path):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.2, 1.3, 0.1]], cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=True)
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((2, 3)))
    atoms.write(tmp_path / "flat.extxyz")
    config = yaml.safe_load((REPO / "config" / "examples" / "recovery.yaml").read_text())
    fit = config["fits"]["recovery"]
    fit["structures"] = {"file": "flat.extxyz"}
    path = write(tmp_path, yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"flat\.extxyz, structure 0: expected cell vectors along periodic axes"):
        load_config(path)


@pytest.mark.slow
def test_snakemake_stops_on_a_duplicate_key_before_any_job(tmp_path, venv_env):
    text = DEFAULT.replace("    element: Ar\n", "    element: Ar\n    element: Cu\n", 1)
    write(tmp_path, text, "config.yaml")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "-n",
            "--configfile",
            "config.yaml",
        ],
        cwd=tmp_path,
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "expected unique keys, got 'element' twice" in done.stdout + done.stderr
