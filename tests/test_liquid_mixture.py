"""An atomic liquid of two elements through the shipped template: composition and masses per element.

Checked with LAMMPS itself: the number of atoms of each type in the rendered run (LAMMPS's
``count()``), and the mass behind LAMMPS's own ``density`` column (ρ·V·N_A = Σ n_t m_t).
"""

from __future__ import annotations

import re

import pytest
import yaml
from ase.data import atomic_masses, atomic_numbers

from chemfit_core import ConfigError
from chemfit_core.external.lammps import read_thermo, run_lammps
from chemfit_core.file_based_computer import render_template
from chemfit_core.stages.composition import composition_template_variables
from chemfit_core.stages.config import TEMPLATE_DIR, load_config, validate_config
from chemfit_core.stages.objective import fit_template_contexts
from chemfit_core.units import AVOGADRO

LJ = {  # Ar-Ar and Kr-Kr; the unlike pair by Lorentz-Berthelot
    "epsilon_K:Ar-Ar": 116.79,
    "sigma_A:Ar-Ar": 3.3952,
    "epsilon_K:Kr-Kr": 162.58,
    "sigma_A:Kr-Kr": 3.6274,
}


def mixture_config(composition: dict | None = None, **fit_keys) -> dict:
    """Liquid Ar-Kr at 120 K, 1 bar: 108 atoms, a few hundred steps."""
    liquid = {
        "state_points": [
            {
                "name": "T120",
                "temperature_K": 120.0,
                "pressure_bar": 1.0,
                "density_kg_m3": {"value": 1800.0, "denominator": 20.0},
                "replicas": 1,
            }
        ],
        "md": {"n_cells": 3, "melt_steps": 200, "equilibration_steps": 200, "production_steps": 400},
    }
    if composition is not None:
        liquid["composition"] = composition
    fit = {
        "element": "Ar",
        "mass_g_mol": 39.948,
        "potential": {"form": "lj/cut", "species": ["Ar", "Kr"], "mixing": "lorentz-berthelot"},
        "parameters": {k: {"initial": v, "lower": 0.8 * v, "upper": 1.2 * v} for k, v in LJ.items()},
        "liquid": liquid,
        **fit_keys,
    }
    return {"seed": 7, "fits": {"arkr": fit}}


def test_composition_becomes_conversions_of_type_one_atoms():
    fit = validate_config(mixture_config({"Ar": 0.5, "Kr": 0.25}), "mix.yaml")["fits"]["arkr"]
    variables = composition_template_variables(fit)  # normalised: 2/3 Ar, 1/3 Kr
    assert variables["n_types"] == 2 and variables["type_ratios"] == [{"type": 2, "ratio": pytest.approx(1 / 3)}]
    assert variables["masses"] == [39.948, pytest.approx(atomic_masses[atomic_numbers["Kr"]])]
    three = validate_config(mixture_config(None), "mix.yaml")["fits"]["arkr"]
    three["potential"]["species"] = ["Ar", "Kr", "Xe"]
    three["liquid"]["composition"] = {"Ar": 0.5, "Kr": 0.3, "Xe": 0.2}
    ratios = composition_template_variables(three)["type_ratios"]
    assert [r["type"] for r in ratios] == [2, 3]
    assert ratios[0]["ratio"] == pytest.approx(0.3) and ratios[1]["ratio"] == pytest.approx(0.2 / 0.7)
    alone = validate_config(mixture_config(None), "mix.yaml")["fits"]["arkr"]  # no composition: argon only
    assert composition_template_variables(alone)["type_ratios"] == []


@pytest.mark.parametrize("masses", [None, {"Kr": 84.0}])
def test_lammps_runs_the_mixture_with_its_counts_and_masses(tmp_path, masses):
    extra = {"masses_g_mol": masses} if masses else {}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(mixture_config({"Ar": 0.75, "Kr": 0.25}, **extra)))
    fit = load_config(tmp_path / "mix.yaml")["fits"]["arkr"]
    _, variables = fit_template_contexts(fit)[0]
    rendered = render_template(TEMPLATE_DIR / "lj_liquid_npt.lammps.j2", {**variables, "seed": 12345})
    assert "pair_coeff 1 2" in rendered or "pair_modify mix arithmetic" in rendered
    rendered += '\ngroup kr type 2\nprint "N_KR $(count(kr))"\n'
    (tmp_path / "in.lammps").write_text(rendered)
    log = run_lammps(tmp_path, timeout=300)
    n_kr = int(float(re.search(r"^N_KR (\S+)", log.read_text(), re.M).group(1)))
    last = read_thermo(log)[-1]
    n = int(last["Atoms"][-1])
    assert n == 108 and n_kr == 27  # exactly a quarter of the box
    m_ar, m_kr = 39.948, (masses or {}).get("Kr", atomic_masses[atomic_numbers["Kr"]])
    molar_mass = float(last["Density"][-1]) * float(last["Volume"][-1]) * 1e-24 * AVOGADRO  # g/cm³ · Å³ · N_A
    assert molar_mass == pytest.approx((n - n_kr) * m_ar + n_kr * m_kr, rel=1e-6)  # g/mol of the box


def test_bad_compositions_and_masses_are_named_before_any_job():
    cases = [
        ({"Ar": 0.7, "Xe": 0.3}, {}, "fits.arkr.liquid.composition: expected species of the potential"),
        ({"Ar": 0.0, "Kr": 0.0}, {}, "fits.arkr.liquid.composition: expected mole fractions with a sum > 0"),
        ({"Ar": 1.0}, {"masses_g_mol": {"Ne": 20.18}}, "fits.arkr.masses_g_mol: expected species of the potential"),
    ]
    for composition, extra, message in cases:
        with pytest.raises(ConfigError) as info:
            validate_config(mixture_config(composition, **extra), "mix.yaml")
        assert message in str(info.value) and "mix.yaml" in str(info.value), str(info.value)


def test_the_fits_element_takes_mass_g_mol_not_masses_g_mol():
    with pytest.raises(ConfigError, match=r"fits.arkr.masses_g_mol: the fit's element Ar takes mass_g_mol"):
        validate_config(mixture_config({"Ar": 1.0}, masses_g_mol={"Ar": 40.0}), "mix.yaml")
