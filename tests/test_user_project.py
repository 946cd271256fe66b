"""A user's own project outside this checkout: config, template and input files in its folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chemfit_core.stages.config import TEMPLATE_DIR, load_config

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def user_project(root: Path) -> Path:
    """project/config/fit.yaml naming ../templates/argon.lammps.j2 and ../inputs/neighbours.in (an
    include file the template reads by name); returns the config path."""
    (root / "config").mkdir(parents=True)
    (root / "templates").mkdir()
    (root / "inputs").mkdir()
    shipped = (TEMPLATE_DIR / "lj_liquid_npt.lammps.j2").read_text()
    neighbour_lines = "neighbor        {{ 0.3 * length_A }} bin\nneigh_modify    every 1 delay 0 check yes\n"
    assert neighbour_lines in shipped
    (root / "templates" / "argon.lammps.j2").write_text(shipped.replace(neighbour_lines, "include neighbours.in\n"))
    (root / "inputs" / "neighbours.in").write_text("neighbor 1.0 bin\nneigh_modify every 1 delay 0 check yes\n")
    config = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    fit = config["fits"]["argon"]
    fit["liquid"]["template"] = "../templates/argon.lammps.j2"
    fit["liquid"]["files"] = ["../inputs/neighbours.in"]
    fit["liquid"]["validation"]["replicas"] = 1
    fit["optimizer"]["max_evaluations"] = 2
    fit["solid"] = {"enabled": False}
    path = root / "config" / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_inputs_are_relative_to_the_config_file_wherever_the_command_runs(tmp_path, monkeypatch):
    config_path = user_project(tmp_path / "project")
    monkeypatch.chdir(tmp_path)  # neither the project nor the checkout
    liquid = load_config(config_path)["fits"]["argon"]["liquid"]
    assert Path(liquid["template"]).resolve() == (tmp_path / "project" / "templates" / "argon.lammps.j2")
    assert [Path(f).resolve() for f in liquid["files"]] == [tmp_path / "project" / "inputs" / "neighbours.in"]


def test_a_missing_input_file_is_named_before_any_job(tmp_path):
    config_path = user_project(tmp_path / "project")
    (tmp_path / "project" / "inputs" / "neighbours.in").unlink()
    with pytest.raises(Exception, match=r"fits\.argon\.liquid\.files\[0\]: expected a file .* 'neighbours.in'|no such"):
        load_config(config_path)


@pytest.mark.slow
def test_a_fit_runs_from_the_users_project_with_its_template_and_files(tmp_path, venv_env):
    project = tmp_path / "project"
    user_project(project)
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "config/fit.yaml"]
    done = subprocess.run(command, cwd=project, env=venv_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    params = json.loads((project / "results" / "argon" / "params.json").read_text())["argon"]
    assert params["n_evaluations"] == 2
    # LAMMPS read the include file in every run: the validation run's folder holds it
    run = project / "results" / "argon" / "validation" / "normal_boiling_point" / "r0"
    assert (run / "neighbours.in").read_text().startswith("neighbor 1.0")
    assert "include neighbours.in" in (run / "in.lammps").read_text()
    provenance = json.loads((project / "results" / "provenance.json").read_text())
    hashed = set(provenance["inputs_sha256"])
    assert any(name.endswith("argon.lammps.j2") for name in hashed), hashed
    assert any(name.endswith("neighbours.in") for name in hashed), hashed
