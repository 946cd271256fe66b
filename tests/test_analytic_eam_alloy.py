"""The analytic EAM of several elements (``eam/analytic`` with ``species``) against LAMMPS and itself.

The torch model is compared with LAMMPS's ``pair_style eam/alloy`` reading the setfl file the
form writes, on random two-species cells (triclinic, rotated, mixed periodicity); its parameter
gradients with central differences; a fit through a config recovers the parameters that labelled
its cells; one species is today's single-element model. Nothing is mocked.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from form_checks import check_parameter_gradients, recovery_errors
from lammps_reference import lammps_reference
from test_pair_models import evaluate, relative_differences
from test_species_pairs import binary_cells

from chemfit_core import ConfigError, Fitter
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.models.analytic_eam import AnalyticEAM
from chemfit_core.models.eam import EAM
from chemfit_core.models.forms import potential_form
from chemfit_core.science.roundtrip import round_trip
from chemfit_core.stages.config import validate_config
from chemfit_core.stages.objective import potential_form_of, targets_from_config

CUNI = {  # made up, near copper (Cu) and nickel (Ni); Cu-Ni in between
    "D_eV:Cu-Cu": 0.05,
    "alpha_invA:Cu-Cu": 1.5,
    "r0_A:Cu-Cu": 2.8,
    "D_eV:Cu-Ni": 0.055,
    "alpha_invA:Cu-Ni": 1.55,
    "r0_A:Cu-Ni": 2.75,
    "D_eV:Ni-Ni": 0.06,
    "alpha_invA:Ni-Ni": 1.6,
    "r0_A:Ni-Ni": 2.7,
    "A_eV:Cu": 1.2,
    "B_eV:Cu": 0.002,
    "beta:Cu": 5.0,
    "A_eV:Ni": 1.35,
    "B_eV:Ni": 0.003,
    "beta:Ni": 5.5,
}
RE = {"Cu": 2.556, "Ni": 2.49}
CU = {"D_eV": 0.05, "alpha_invA": 1.5, "r0_A": 2.8, "A_eV": 1.2, "B_eV": 0.002, "beta": 5.0}


def alloy_form(**options):
    return potential_form({"form": "eam/analytic", "element": "Cu", "species": ["Cu", "Ni"], "re_A": RE, **options})


@pytest.fixture(scope="module")
def cu_ni():
    return binary_cells(("Cu", "Ni"), 3.58, 24, seed=3, mixed_pbc=True)


# -- against LAMMPS ---------------------------------------------------------------------------------
def test_alloy_equals_lammps_eam_alloy_through_its_setfl(tmp_path, cu_ni):
    form = alloy_form()
    assert len(cu_ni) == 24 and sum(not s.pbc.all() for s in cu_ni) == 6
    assert sum(np.abs(np.triu(s.cell.array, 1)).max() > 0.1 for s in cu_ni) >= 8  # triclinic in LAMMPS's frame
    assert all(set(s.get_chemical_symbols()) == {"Cu", "Ni"} for s in cu_ni)
    commands = form.lammps_commands(CUNI, tmp_path)
    setfl = tmp_path / "fitted.eam.alloy"
    assert commands == ["pair_style eam/alloy", f"pair_coeff * * {setfl} Cu Ni"]
    ref = lammps_reference(cu_ni, commands, tmp_path, form.species)
    analytic = relative_differences(evaluate(form.model(CUNI), cu_ni), ref)
    # LAMMPS interpolates the tabulated F, ρ and r·φ (cubics on 10⁴-point grids): the analytic
    # functions differ from that by interpolation error, ~1e-10 of the forces here; the single
    # element's test allows 1e-6 for the same reason.
    tabulated = relative_differences(evaluate(EAM.from_setfl(setfl), cu_ni), ref)
    print("analytic", analytic, "tabulated", tabulated)
    assert max(analytic.values()) <= 1e-6, analytic
    assert max(tabulated.values()) <= 1e-8, tabulated  # the file holds every element as LAMMPS reads it
    # the workflow's round trip (results/<fit>/potential/) sees the same
    assert max(round_trip(form, CUNI, cu_ni[:8], tmp_path / "round_trip").values()) <= 1e-6


def test_the_species_order_of_the_form_is_free(cu_ni):
    """Ni first: other tables, other LAMMPS types, the same potential."""
    flipped = potential_form({"form": "eam/analytic", "element": "Cu", "species": ["Ni", "Cu"], "re_A": RE})
    renamed = {k.replace("Cu-Ni", "Ni-Cu"): v for k, v in CUNI.items()}
    assert set(flipped.parameter_names) == set(renamed)
    periodic = [s for s in cu_ni if s.pbc.all()][:6]
    a = evaluate(alloy_form().model(CUNI), periodic)
    b = evaluate(flipped.model(renamed), periodic)
    assert max(relative_differences(b, a).values()) < 1e-12


# -- parameter gradients ----------------------------------------------------------------------------
def test_parameter_gradients_match_central_differences(cu_ni):
    cells = [s for s in cu_ni if s.pbc.all() and len(s) <= 48][:2]
    energy_gradients = check_parameter_gradients(alloy_form(), CUNI, atoms_to_state(cells), rel_step=1e-5, rel=2e-6)
    assert all(abs(g) > 1e-6 for g in energy_gradients), energy_gradients  # every parameter moves the energy


# -- parameter recovery -----------------------------------------------------------------------------
def test_two_element_parameters_are_recovered_from_labelled_cells(cu_ni):
    cells = [s for s in cu_ni if s.pbc.all() and len(s) <= 48][:6]
    assert len(cells) == 6
    errors = recovery_errors(alloy_form(), CUNI, cells)
    assert max(errors.values()) < 1e-6, errors


# -- from a config ----------------------------------------------------------------------------------
def alloy_config(setfl_name: str) -> dict:
    """A fit of the two-element form to cells LAMMPS labels with the setfl ``setfl_name``."""
    return {
        "seed": 1,
        "fits": {
            "cuni": {
                "element": "Cu",
                "mass_g_mol": 63.546,
                "potential": {"form": "eam/analytic", "species": ["Cu", "Ni"], "re_A": 2.52},
                "parameters": {
                    name: {"initial": value * 1.03, "lower": value * 0.5 - 0.01, "upper": value * 1.5 + 0.01}
                    for name, value in CUNI.items()
                },
                "structures": {
                    "lammps": {
                        "commands": ["pair_style eam/alloy", f"pair_coeff * * {setfl_name} Cu Ni"],
                        "files": [setfl_name],
                        "species": ["Cu", "Ni"],
                        "cells": {
                            "lattice": "fcc",
                            "a_A": 3.58,
                            "fractions": {"Cu": 0.5, "Ni": 0.5},
                            "n_structures": 4,
                        },
                    },
                    "stress_denominator": 0.001,
                },
                "optimizer": {"method": "least_squares", "jacobian": "analytic", "max_evaluations": 40},
                "workers": 1,
            }
        },
    }


@pytest.mark.slow
def test_a_config_fit_of_the_alloy_form_recovers_lammps_labels(tmp_path, monkeypatch):
    """Through the config: the form's setfl at known parameters labels cells in LAMMPS (the
    ``structures.lammps`` stage), and the fit of the torch model gets the parameters back to the
    tabulation's precision."""
    known = potential_form({"form": "eam/analytic", "element": "Cu", "species": ["Cu", "Ni"], "re_A": 2.52})
    known.model(CUNI).write_setfl(tmp_path / "known.eam.alloy")
    monkeypatch.chdir(tmp_path)
    config = alloy_config("known.eam.alloy")
    (tmp_path / "alloy.yaml").write_text(yaml.safe_dump(config))
    check = subprocess.run(
        [sys.executable, "-m", "chemfit_core", "check-config", "alloy.yaml"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert yaml.safe_load(check.stdout)["fits"]["cuni"]["potential"]["species"] == ["Cu", "Ni"]
    fit = validate_config(config, "alloy.yaml")["fits"]["cuni"]
    [(name, target, weight)] = targets_from_config(fit)
    assert name == "structures" and weight == 1.0 and target.form.spec() == known.spec()
    start = {k: p["initial"] for k, p in fit["parameters"].items()}
    fitter = Fitter(target, start, progress=False)
    fitted = fitter.fit_least_squares(jac="analytic", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    errors = {name: abs(fitted[name] / value - 1) for name, value in CUNI.items()}
    print("config recovery: largest relative error", max(errors.values()), fitter.result.n_evaluations)
    assert max(errors.values()) < 1e-8, errors  # measured 2e-11


# -- one species: today's model ---------------------------------------------------------------------
def test_one_species_is_the_single_element_model_bit_for_bit(tmp_path, cu_ni):
    plain = potential_form({"form": "eam/analytic", "element": "Cu"})
    listed = potential_form({"form": "eam/analytic", "element": "Cu", "species": ["Cu"]})
    names = ("D_eV", "alpha_invA", "r0_A", "A_eV", "B_eV", "beta")
    assert plain.parameter_names == listed.parameter_names == names
    spec = {"form": "eam/analytic", "element": "Cu", "re_A": 2.556, "cutoff_A": 5.5, "width_A": 1.0}
    assert plain.spec() == listed.spec() == spec
    direct = AnalyticEAM(D=0.05, alpha=1.5, r0=2.8, A=1.2, B=0.002, beta=5.0, re=2.556, cutoff=5.5, width=1.0)
    assert all(getattr(direct, n).shape == () for n in AnalyticEAM.PARAMETERS)
    copper = [s.copy() for s in cu_ni[:6]]
    for atoms in copper:
        atoms.symbols[:] = "Cu"
    expected = evaluate(direct, copper)
    for form in (plain, listed):
        assert all(t.shape == () for t in form.model_tensors({k: torch.tensor(v) for k, v in CU.items()}).values())
        for a, b in zip(evaluate(form.model(CU), copper), expected):
            assert a["energy"] == b["energy"]
            np.testing.assert_array_equal(a["forces"], b["forces"])
            np.testing.assert_array_equal(a["stress"], b["stress"])
    for folder, form in (("plain", plain), ("listed", listed)):
        (tmp_path / folder).mkdir()
        form.lammps_commands(CU, tmp_path / folder)
    assert (tmp_path / "plain/fitted.eam.alloy").read_bytes() == (tmp_path / "listed/fitted.eam.alloy").read_bytes()
    assert (tmp_path / "plain/fitted.eam.alloy").read_text().splitlines()[3] == "1 Cu"


def test_two_species_with_the_same_parameters_are_one_element(cu_ni):
    """Cu's parameters for Ni and every pair: the alloy path (tables indexed per atom and pair)
    gives what the one-element model gives with every atom Cu."""
    same = {name: CU[name.split(":")[0]] for name in CUNI}
    alloy = potential_form({"form": "eam/analytic", "element": "Cu", "species": ["Cu", "Ni"]}).model(same)
    periodic = [s for s in cu_ni if s.pbc.all()][:6]
    copper = [s.copy() for s in periodic]
    for atoms in copper:
        atoms.symbols[:] = "Cu"
    one = potential_form({"form": "eam/analytic", "element": "Cu"}).model(CU)
    assert max(relative_differences(evaluate(alloy, periodic), evaluate(one, copper)).values()) < 1e-14


# -- bad input --------------------------------------------------------------------------------------
def test_missing_and_unknown_parameters_are_clear_errors():
    form = alloy_form()
    with pytest.raises(ValueError, match=r"missing parameters \['D_eV:Cu-Ni'\]"):
        form.model({k: v for k, v in CUNI.items() if k != "D_eV:Cu-Ni"})
    with pytest.raises(ValueError, match=r"missing parameters \['beta:Ni'\]"):
        form.model({k: v for k, v in CUNI.items() if k != "beta:Ni"})
    with pytest.raises(
        ValueError, match=r"per element: A_eV:<El>.* for El in \['Cu', 'Ni'\]\): unknown parameters \['A_eV:Fe'\]"
    ):
        form.model({**CUNI, "A_eV:Fe": 1.0})
    reversed_name = {**{k: v for k, v in CUNI.items() if k != "r0_A:Cu-Ni"}, "r0_A:Ni-Cu": 2.75}
    with pytest.raises(ValueError, match=r"unknown parameters \['r0_A:Ni-Cu'\].*missing parameters \['r0_A:Cu-Ni'\]"):
        form.model(reversed_name)
    with pytest.raises(ValueError, match=r"eam/analytic needs parameters .*missing parameters \['beta'\]"):
        potential_form({"form": "eam/analytic", "element": "Cu"}).model({k: v for k, v in CU.items() if k != "beta"})


def test_bad_species_and_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown chemical symbol 'Qq'"):
        alloy_form(species=["Cu", "Qq"], re_A=2.5)
    with pytest.raises(ValueError, match=r"species \['Ni', 'Fe'\] do not hold the fit's element Cu"):
        alloy_form(species=["Ni", "Fe"], re_A=2.5)
    with pytest.raises(ValueError, match=r"re_A must give a distance in Å for exactly the species \['Cu', 'Ni'\]"):
        alloy_form(re_A={"Cu": 2.5})
    with pytest.raises(ValueError, match="re_A must be a distance > 0"):
        alloy_form(re_A={"Cu": 2.5, "Ni": -1.0})
    with pytest.raises(ValueError, match=r"no parameters for atomic numbers \[26\]"):
        alloy_form().model(CUNI)(atoms_to_state([binary_cells(("Cu", "Fe"), 3.58, 1, seed=0, mixed_pbc=False)[0]]))
    with pytest.raises(
        ValueError, match=r"D must be a symmetric \[2, 2\] table \(one per species pair\); it is not symmetric"
    ):
        AnalyticEAM(D=[[0.05, 0.06], [0.07, 0.05]], species=(29, 28))
    with pytest.raises(ValueError, match=r"beta must be one value or \[2\] \(one per element\), got shape \[3\]"):
        AnalyticEAM(beta=[5.0, 5.5, 6.0], species=(29, 28))
    with pytest.raises(ValueError, match="A of one species is one value"):
        AnalyticEAM(A=[1.2, 1.3])


def test_the_config_check_names_the_key_of_a_bad_parameter():
    base = alloy_config("CuNi.eam.alloy")  # shipped with LAMMPS: found without a path
    cases = [
        (lambda fit: fit["parameters"].pop("A_eV:Ni"), "fits.cuni.parameters: expected exactly", "'A_eV:Ni'"),
        (
            lambda fit: fit["parameters"].__setitem__("D_eV:Ni-Cu", fit["parameters"].pop("D_eV:Cu-Ni")),
            "fits.cuni.parameters: expected exactly",
            "'D_eV:Ni-Cu'",
        ),
        (
            lambda fit: fit["potential"].__setitem__("species", ["Cu", "Qq"]),
            "fits.cuni.potential: unknown chemical symbol",
            "'Qq'",
        ),
    ]
    for edit, key, detail in cases:
        config = copy.deepcopy(base)
        config["fits"]["cuni"]["structures"]["lammps"]["files"] = []
        edit(config["fits"]["cuni"])
        with pytest.raises(ConfigError) as info:
            validate_config(config, "alloy.yaml")
        assert key in str(info.value) and detail in str(info.value), str(info.value)


def test_a_config_may_give_re_per_element_and_a_bad_one_is_named():
    config = alloy_config("CuNi.eam.alloy")
    fit = config["fits"]["cuni"]
    fit["structures"]["lammps"]["files"] = []
    fit["potential"]["re_A"] = {"Cu": 2.556, "Ni": 2.49}
    checked = validate_config(copy.deepcopy(config), "alloy.yaml")["fits"]["cuni"]
    assert potential_form_of(checked).re_values() == [2.556, 2.49]
    fit["potential"]["re_A"] = {"Cu": 2.556, "Ni": -1.0}
    with pytest.raises(ConfigError) as info:
        validate_config(config, "alloy.yaml")
    assert "fits.cuni.potential.re_A" in str(info.value) and "alloy.yaml" in str(info.value), str(info.value)
