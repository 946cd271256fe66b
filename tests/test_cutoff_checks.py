"""check-config's cutoff warnings (chemfit_core.stages.cutoff_checks): the cutoff over the parameter
bounds, cell heights and neighbour shells against independent geometry, the warnings on configs
that break the minimum-image rule or cut inside the second shell, and their wiring into
``chemfit check-config``."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk

from chemfit_core.models.forms import potential_form
from chemfit_core.stages.config import load_config
from chemfit_core.stages.cutoff_checks import cutoff_range, cutoff_warnings, neighbour_shells, perpendicular_heights

REPO = Path(__file__).resolve().parent.parent


def test_the_lj_cutoff_moves_with_sigma_between_its_bounds():
    form = potential_form({"form": "lj/cut", "element": "Ar", "cutoff_sigma": 2.5})
    parameters = {
        "epsilon_K": {"initial": 120.0, "lower": 80.0, "upper": 160.0},
        "sigma_A": {"initial": 3.4, "lower": 3.0, "upper": 3.8},
    }
    start, low, high, moving = cutoff_range(form, parameters)
    assert moving == ["sigma_A"]  # ε does not move it
    assert (start, low, high) == pytest.approx((2.5 * 3.4, 2.5 * 3.0, 2.5 * 3.8), rel=1e-12)


def test_the_sw_cutoff_is_a_sigma_over_the_corners_of_both_bounds():
    form = potential_form({"form": "sw", "element": "Si", "file": "Si.sw", "fit": ["sigma", "a", "epsilon"]})
    parameters = {
        "sigma:Si-Si-Si": {"initial": 2.0951, "lower": 2.0, "upper": 2.2},
        "a:Si-Si-Si": {"initial": 1.8, "lower": 1.7, "upper": 1.9},
        "epsilon:Si-Si-Si": {"initial": 2.1683, "lower": 1.5, "upper": 2.5},
    }
    start, low, high, moving = cutoff_range(form, parameters)
    assert sorted(moving) == ["a:Si-Si-Si", "sigma:Si-Si-Si"]
    corners = [s * a for s, a in itertools.product((2.0, 2.2), (1.7, 1.9))]  # LAMMPS's cut = a σ
    assert (start, low, high) == pytest.approx((1.8 * 2.0951, min(corners), max(corners)), rel=1e-12)


def test_perpendicular_heights_are_the_distances_between_lattice_planes():
    rng = np.random.default_rng(4)
    cell = np.diag([5.0, 6.0, 7.0]) + rng.uniform(-1.5, 1.5, (3, 3))
    heights = perpendicular_heights(Atoms("Ar", cell=cell, pbc=True))
    for i in range(3):
        normal = np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])
        assert heights[i] == pytest.approx(abs(cell[i] @ normal) / np.linalg.norm(normal), rel=1e-12)
    slab = perpendicular_heights(Atoms("Ar", cell=cell, pbc=[True, True, False]))
    assert slab == pytest.approx(heights[:2])  # only periodic directions count


@pytest.mark.parametrize(
    ("formula", "lattice", "a"), [("Cu", "fcc", 3.615), ("Fe", "bcc", 2.87), ("Si", "diamond", 5.431)]
)
def test_neighbour_shells_match_the_distance_matrix_of_a_supercell(formula, lattice, a):
    crystal = bulk(formula, lattice, a=a, cubic=True)
    big = crystal.repeat(3)
    distances = np.sort(big.get_all_distances(mic=True)[0][1:])  # from one atom, minimum image
    first = distances[0]
    second = distances[distances > first * 1.01][0]
    assert neighbour_shells(crystal) == pytest.approx([first, second], rel=1e-9)
    geometry = {
        "fcc": (a / np.sqrt(2), a),
        "bcc": (a * np.sqrt(3) / 2, a),
        "diamond": (a * np.sqrt(3) / 4, a / np.sqrt(2)),
    }
    assert neighbour_shells(crystal) == pytest.approx(geometry[lattice], rel=1e-9)


def lj_config(tmp_path, cutoff_sigma, vacancy_cells, upper_sigma=3.5):
    config = {
        "seed": 1,
        "fits": {
            "argon_crystal": {
                "element": "Ar",
                "potential": {"form": "lj/cut", "cutoff_sigma": cutoff_sigma},
                "parameters": {
                    "epsilon_K": {"initial": 120.0, "lower": 80.0, "upper": 160.0, "unit": "K"},
                    "sigma_A": {"initial": 3.4, "lower": 3.2, "upper": upper_sigma, "unit": "Å"},
                },
                "crystal": {
                    "lattice": "fcc",
                    "a_guess_A": 5.3,
                    "vacancy_cells": vacancy_cells,
                    "references": {
                        "a0_A": {"value": 5.3, "denominator": 0.01},
                        "vacancy_eV": {"value": 0.08, "denominator": 0.01},
                    },
                },
                "solid": {"enabled": False},
            }
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def test_a_cutoff_longer_than_half_the_vacancy_cell_is_named_with_its_numbers(tmp_path):
    path = lj_config(tmp_path, cutoff_sigma=3.0, vacancy_cells=2)  # rc 10.2-10.5 Å; cell 10.6 Å
    (warning,) = cutoff_warnings(load_config(path), str(path))
    assert "fits.argon_crystal.potential.cutoff_sigma" in warning and "crystal.vacancy_cells" in warning
    assert "cutoff 10.2 Å" in warning and "9.6–10.5 Å within the bounds of sigma_A" in warning
    assert "half (5.3 Å)" in warning and "periodic image" in warning


def test_a_cutoff_inside_the_second_shell_is_named_with_both_shells(tmp_path):
    path = lj_config(tmp_path, cutoff_sigma=1.6, vacancy_cells=4, upper_sigma=3.8)  # rc 5.12-6.08 Å; a 5.3 Å
    (warning,) = cutoff_warnings(load_config(path), str(path))
    assert "shorter than the second-neighbour shell (5.3 Å)" in warning and "first shell 3.748 Å" in warning
    assert "5.12–6.08 Å within the bounds of sigma_A" in warning and "a_guess_A = 5.3" in warning


def test_a_cutoff_that_suits_the_cells_gives_no_warning_and_sw_may_cut_before_the_second_shell(tmp_path):
    assert cutoff_warnings(load_config(lj_config(tmp_path, cutoff_sigma=2.5, vacancy_cells=4))) == []
    # Stillinger-Weber silicon cuts at 3.77 Å, between diamond's first (2.35 Å) and second (3.84 Å) shells
    config = yaml.safe_load(lj_config(tmp_path, 2.5, 4).read_text())
    fit = config["fits"]["argon_crystal"]
    fit.update(element="Si", potential={"form": "sw", "file": "Si.sw", "fit": ["sigma"]})
    fit["parameters"] = {"sigma:Si-Si-Si": {"initial": 2.0951, "lower": 1.9, "upper": 2.3}}
    fit["crystal"].update(
        lattice="diamond", a_guess_A=5.431, references={"a0_A": {"value": 5.431, "denominator": 0.01}}
    )
    (tmp_path / "sw.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    assert cutoff_warnings(load_config(tmp_path / "sw.yaml")) == []


def test_check_config_prints_the_cutoff_warnings(tmp_path):
    path = lj_config(tmp_path, cutoff_sigma=3.0, vacancy_cells=2)
    done = subprocess.run(
        [sys.executable, "-m", "chemfit_core", "check-config", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "chemfit check-config: warning:" in done.stderr and "crystal.vacancy_cells" in done.stderr


@pytest.mark.parametrize("section", [{}, {"lattice": "fcc"}])
def test_synthetic_cells_repeated_past_twice_the_cutoff_silence_the_image_warning(tmp_path, section):
    from chemfit_core.stages.objective import synthetic_cells

    config = yaml.safe_load((REPO / "config" / "examples" / "recovery.yaml").read_text())
    synthetic = config["fits"]["recovery"]["structures"]["synthetic"]
    synthetic.update(section)
    synthetic.pop("repeat")
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    small = load_config(tmp_path / "small.yaml")
    (warning,) = cutoff_warnings(small, "small.yaml")
    assert "fits.recovery.structures.synthetic" in warning and "repeat the cells" in warning
    synthetic["repeat"] = [4, 4, 4]  # 14.5 Å high: more than twice the 5.5 Å cutoff
    (tmp_path / "large.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    large = load_config(tmp_path / "large.yaml")
    assert cutoff_warnings(large, "large.yaml") == []
    cells = synthetic_cells(large["fits"]["recovery"])
    assert {len(c) for c in cells} == {256, 255}  # every fourth lacks an atom
    assert min(min(perpendicular_heights(c)) for c in cells) > 2 * 5.5
