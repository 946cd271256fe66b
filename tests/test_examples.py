"""The shipped examples: every one passes check-config; the reduced ones run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from chemfit_core.stages.config import load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "config" / "examples").glob("*.yaml"))
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_passes_the_config_check(path):
    config = load_config(path)
    assert config["fits"]


def run_reduced(tmp_path: Path, example: str, edit, env) -> Path:
    config = yaml.safe_load((REPO / "config" / "examples" / example).read_text())
    for fit in config["fits"].values():
        edit(fit)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "config.yaml"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "results"


@pytest.mark.slow
def test_the_ionic_example_reports_unfitted_properties_next_to_fitted_ones(tmp_path, venv_env):
    def reduce(fit):
        fit["optimizer"]["max_evaluations"] = 2
        fit["structures"]["synthetic"]["n_structures"] = 2
        fit["crystal"]["validate"] = ["C44_GPa"]

    results = run_reduced(tmp_path, "mgo_buckingham.yaml", reduce, venv_env)
    params = json.loads((results / "params.json").read_text())["mgo"]
    assert params["potential"]["form"] == "buck" and params["n_evaluations"] == 2
    table = pd.read_csv(results / "properties.csv").set_index("property")
    assert not table.loc["a0_A", "fitted_to"] and table.loc["a0_A", "target"] == 4.212  # weight 0: reported only
    assert abs(table.loc["a0_A", "fitted"] / 4.212 - 1) < 0.05 and table.loc["C44_GPa", "fitted"] > 0
    assert table.loc["max_relative_difference_energy", "fitted"] < 1e-8  # LAMMPS born/coul/dsf round trip


@pytest.mark.slow
def test_the_binary_alloy_example_fits_per_pair_morse_and_reports_the_compound(tmp_path, venv_env):
    def reduce(fit):
        fit["optimizer"]["max_evaluations"] = 2
        fit["structures"]["lammps"]["cells"].update(n_structures=2, repeat=[3, 3, 3])
        fit["crystals"]["B2"]["validate"] = ["a0_A", "C44_GPa"]
        for name in ("Cu_fcc", "Ni_fcc"):
            fit["crystals"][name]["validate"] = []

    results = run_reduced(tmp_path, "cuni_morse.yaml", reduce, venv_env)
    params = json.loads((results / "params.json").read_text())["cuni"]
    assert params["potential"]["form"] == "morse" and params["potential"]["species"] == ["Cu", "Ni"]
    assert {"D_eV:Cu-Cu", "D_eV:Cu-Ni", "r0_A:Ni-Ni"} <= set(params["parameters"])
    table = pd.read_csv(results / "properties.csv").set_index(["state_point", "property"])
    b2 = table.loc["crystal:B2"]
    assert b2.loc["formation_eV", "fitted_to"] and b2.loc["formation_eV", "target"] == 0.1118
    assert not b2.loc["a0_A", "fitted_to"] and abs(b2.loc["a0_A", "fitted"] / 2.8925 - 1) < 0.1  # reported only
    assert b2.loc["C44_GPa", "fitted"] > 0
    for name, a0 in (("crystal:Cu_fcc", 3.615), ("crystal:Ni_fcc", 3.52)):  # the elements' own crystals
        assert table.loc[(name, "a0_A"), "fitted_to"] and table.loc[(name, "a0_A"), "target"] == a0
        assert abs(table.loc[(name, "a0_A"), "fitted"] / a0 - 1) < 0.05 and table.loc[(name, "Ec_eV"), "fitted_to"]
    forces = table.loc[("lammps_round_trip", "max_relative_difference_forces"), "fitted"]
    assert forces < 1e-8  # LAMMPS morse, two types, round trip


@pytest.mark.slow
def test_the_covalent_example_fits_sw_silicon_to_tersoff_cells_and_writes_the_potential(tmp_path, venv_env):
    def reduce(fit):
        fit["optimizer"]["max_evaluations"] = 4
        fit["structures"]["lammps"]["cells"]["n_structures"] = 2
        fit["crystal"]["validate"] = ["C44_GPa", "E_bcc_eV"]

    results = run_reduced(tmp_path, "silicon_sw.yaml", reduce, venv_env)
    params = json.loads((results / "params.json").read_text())["silicon_sw"]
    assert params["potential"]["form"] == "sw" and set(params["parameters"]) == {
        "epsilon:Si-Si-Si",
        "sigma:Si-Si-Si",
        "B:Si-Si-Si",
    }
    table = pd.read_csv(results / "properties.csv").set_index("property")
    assert table.loc["a0_A", "fitted_to"] and table.loc["a0_A", "target"] == 5.431
    assert abs(table.loc["a0_A", "fitted"] / 5.431 - 1) < 0.02 and abs(table.loc["Ec_eV", "fitted"] / 4.63 - 1) < 0.1
    assert not table.loc["C44_GPa", "fitted_to"] and table.loc["C44_GPa", "target"] == 79.5  # reported only
    assert table.loc["C44_GPa", "fitted"] > 0 and table.loc["E_bcc_eV", "fitted"] > 0  # diamond stays the ground state
    assert table.loc["max_relative_difference_energy", "fitted"] < 1e-8  # LAMMPS sw round trip
    # the fitted potential beside the results, named in params.json, runs in LAMMPS as fitted.sw
    names = [f["name"] for f in params["potential_files"]]
    assert names == ["potential.lammps", "potential/fitted.sw"]
    assert "pair_coeff * * potential/fitted.sw Si" in (results / "silicon_sw" / "potential.lammps").read_text()


@pytest.mark.slow
def test_the_expression_example_fits_a_lepton_morse_and_runs_it_in_lammps(tmp_path, venv_env):
    def reduce(fit):
        fit["optimizer"]["max_evaluations"] = 4
        fit["crystal"]["validate"] = ["C44_GPa"]

    results = run_reduced(tmp_path, "copper_lepton.yaml", reduce, venv_env)
    params = json.loads((results / "params.json").read_text())["copper_lepton"]
    assert params["potential"]["form"] == "lepton" and set(params["parameters"]) == {"D", "a", "r0"}
    assert params["potential"]["expression"] == "D*(exp(-2*a*(r-r0))-2*exp(-a*(r-r0)))"
    table = pd.read_csv(results / "properties.csv").set_index("property")
    assert table.loc["a0_A", "fitted_to"] and table.loc["a0_A", "target"] == 3.615
    assert abs(table.loc["a0_A", "fitted"] / 3.615 - 1) < 0.05 and table.loc["C44_GPa", "fitted"] > 0
    assert not table.loc["C44_GPa", "fitted_to"] and table.loc["C44_GPa", "target"] == 75.8  # reported only
    assert table.loc["max_relative_difference_energy", "fitted"] < 1e-8  # LAMMPS pair_style lepton round trip
    assert "pair_style lepton" in (results / "copper_lepton" / "potential.lammps").read_text()
