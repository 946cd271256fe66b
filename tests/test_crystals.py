"""Several crystal targets in one fit (``crystals``): one term each, named ``crystal:<name>``, its
properties checked against LAMMPS; the single ``crystal`` section is the same as a one-entry
``crystals``; the config errors name their key and file; the report shows every crystal."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_report import FITTED, _crystal_config, _params, _record, _row

from chemfit_core import ConfigError
from chemfit_core.external.lammps import read_thermo, run_lammps
from chemfit_core.stages.config import load_config, validate_config
from chemfit_core.stages.cutoff_checks import cutoff_warnings
from chemfit_core.stages.objective import build_objective, potential_form_of
from chemfit_core.stages.report import write_report
from chemfit_core.stages.report_tables import Sources, denominators, properties_table, property_warnings

PAIRS = {  # Girifalco and Weizer (1959) for Cu-Cu and Ni-Ni, their means for Cu-Ni (cuni_morse.yaml)
    "D_eV:Cu-Cu": 0.3429,
    "alpha_invA:Cu-Cu": 1.3588,
    "r0_A:Cu-Cu": 2.866,
    "D_eV:Cu-Ni": 0.38,
    "alpha_invA:Cu-Ni": 1.39,
    "r0_A:Cu-Ni": 2.82,
    "D_eV:Ni-Ni": 0.4205,
    "alpha_invA:Ni-Ni": 1.4199,
    "r0_A:Ni-Ni": 2.78,
}
CU = {
    "formula": "Cu",
    "a_guess_A": 3.615,
    "references": {"a0_A": {"value": 3.615, "denominator": 0.01}, "Ec_eV": {"value": 3.54, "denominator": 0.02}},
    "weight": 2.0,
}
NI = {
    "formula": "Ni",
    "a_guess_A": 3.52,
    "references": {"a0_A": {"value": 3.52, "denominator": 0.01}, "Ec_eV": {"value": 4.45, "denominator": 0.02}},
    "weight": 0.5,
}
B2 = {"formula": "CuNi", "lattice": "cesiumchloride", "a_guess_A": 2.89}


def _config(**crystal_keys) -> dict:
    """A Cu-Ni Morse fit with the given crystal sections (``crystal``, ``crystals``)."""
    parameters = {k: {"initial": v, "lower": 0.5 * v, "upper": 2 * v} for k, v in PAIRS.items()}
    fit = {
        "element": "Cu",
        "potential": {"form": "morse", "species": ["Cu", "Ni"], "cutoff_A": 6.0},
        "parameters": parameters,
        "optimizer": {"method": "least_squares"},
        **copy.deepcopy(crystal_keys),
    }
    return {"fits": {"cuni": fit}}


def _lammps_fcc(element: str, a_guess: float, tmp_path: Path) -> tuple[float, float]:
    """a0 (Å) and Ec (eV/atom; a Morse atom alone has energy 0) of fcc ``element`` under the Morse
    pairs, by LAMMPS (fix box/relax), independent of the torch relaxation engine."""
    form = potential_form_of(_config(crystals={"x": CU})["fits"]["cuni"])
    workdir = tmp_path / element
    workdir.mkdir()
    lines = ["units metal", "atom_style atomic", f"lattice fcc {a_guess}", "region b block 0 1 0 1 0 1"]
    lines += ["create_box 2 b", f"create_atoms {['Cu', 'Ni'].index(element) + 1} box", "mass * 60.0"]
    lines += [*form.lammps_commands(PAIRS), "thermo_style custom step pe lx", "thermo_modify format float %.15g"]
    lines += ["fix r all box/relax iso 0.0 vmax 0.001", "min_style cg", "minimize 0 1e-14 10000 100000"]
    (workdir / "in.lammps").write_text("\n".join(lines) + "\n")
    thermo = read_thermo(run_lammps(workdir))[-1]
    return float(thermo["Lx"][-1]), -float(thermo["PotEng"][-1]) / 4


def test_two_crystals_are_two_named_weighted_terms_whose_properties_lammps_confirms(tmp_path):
    fit = validate_config(_config(crystals={"Cu_fcc": CU, "Ni_fcc": NI}))["fits"]["cuni"]
    cob, info = build_objective("cuni", fit, 1, None, tmp_path)
    assert cob.names == ["crystal:Cu_fcc", "crystal:Ni_fcc"] and cob.weights == [2.0, 0.5]
    assert [i["state_point"] for i in info] == ["crystal:Cu_fcc", "crystal:Ni_fcc"]
    value = cob(PAIRS)
    expected = 0.0
    for crystal, (term, contribution) in zip((CU, NI), cob.contributions().items()):
        a0, ec = _lammps_fcc(crystal["formula"], crystal["a_guess_A"], tmp_path)
        refs = crystal["references"]
        loss = ((a0 - refs["a0_A"]["value"]) / 0.01) ** 2 + ((ec - refs["Ec_eV"]["value"]) / 0.02) ** 2
        assert contribution == pytest.approx(crystal["weight"] * loss, rel=1e-5), term
        expected += crystal["weight"] * loss
    assert value == pytest.approx(expected, rel=1e-5)


def test_the_single_crystal_key_is_the_same_objective_as_a_one_entry_crystals(tmp_path):
    legacy = validate_config(_config(crystal=NI))["fits"]["cuni"]
    named = validate_config(_config(crystals={"Ni_fcc": NI}))["fits"]["cuni"]
    assert legacy["crystal"] == named["crystals"]["Ni_fcc"]  # the same defaults filled in
    cob_legacy, info_legacy = build_objective("cuni", legacy, 1, None, tmp_path)
    cob_named, _ = build_objective("cuni", named, 1, None, tmp_path)
    assert cob_legacy.names == ["crystal"] and info_legacy == [{"name": "crystal", "state_point": "crystal"}]
    assert cob_named.names == ["crystal:Ni_fcc"]
    shifted = {**PAIRS, "r0_A:Ni-Ni": 2.7}
    assert cob_legacy(shifted) == cob_named(shifted) > 0
    both = validate_config(_config(crystal=NI, crystals={"Cu_fcc": CU}))["fits"]["cuni"]
    assert build_objective("cuni", both, 1, None, tmp_path)[0].names == ["crystal", "crystal:Cu_fcc"]


def _problems(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("keys", "fragments"),
    [
        (
            {"crystal": CU, "crystals": {"crystal": NI}},
            ["fits.cuni.crystals.crystal: expected a name other than 'crystal'", "'crystal' section"],
        ),
        ({"crystals": {}}, ["fits.cuni.crystals: expected at least 1 entry"]),
        ({"crystals": {"2nd": CU}}, ["fits.cuni.crystals: expected a name matching", "'2nd'"]),
        ({"crystals": {"Cu-fcc": CU}}, ["fits.cuni.crystals: expected a name matching", "'Cu-fcc'"]),
        ({"crystals": {"Cu_fcc": {**CU, "weight": -1}}}, ["fits.cuni.crystals.Cu_fcc.weight: expected a number >="]),
        ({"crystals": {"Ni_fcc": {**NI, "validate": ["C13_GPa"]}}}, ["fits.cuni.crystals.Ni_fcc.references:", "C13"]),
        (
            {"crystals": {"B2": {**B2, "references": {"vacancy_eV": {"value": 1.0, "denominator": 0.1}}}}},
            ["fits.cuni.crystals.B2.references: ['vacancy_eV'] are not properties of CuNi cesiumchloride"],
        ),
        (
            {"crystals": {"own": {**CU, "lattice": "file", "structure_file": "missing.extxyz"}}},
            ["fits.cuni.crystals.own.structure_file: expected a structure file", "missing.extxyz' (no such file)"],
        ),
    ],
    ids=["crystal-twice", "empty", "digit-first", "hyphen", "weight", "property", "compound", "file"],
)
def test_bad_crystals_are_named_with_their_key_and_file(tmp_path, keys, fragments):
    message = _problems(tmp_path, _config(**keys))
    for fragment in [f"{tmp_path / 'fit.yaml'}: ", *fragments]:
        assert fragment in message, f"{fragment!r} missing from:\n{message}"


def test_fitted_crystals_need_a_finite_difference_jacobian(tmp_path):
    config = _config(crystals={"Cu_fcc": CU, "Ni_fcc": {**NI, "weight": 0.0}})
    config["fits"]["cuni"]["optimizer"]["jacobian"] = "analytic"
    message = _problems(tmp_path, config)
    assert "fits.cuni.optimizer.jacobian: crystal targets have no analytic Jacobian" in message
    assert "(fitted crystals: crystals.Cu_fcc)" in message


def test_each_crystal_is_checked_against_the_cutoff_under_its_own_key():
    config = validate_config(_config(crystals={"Cu_fcc": CU, "Ni_fcc": {**NI, "validate": ["vacancy_eV"]}}))
    config["fits"]["cuni"]["potential"]["cutoff_A"] = 3.56  # past fcc Ni's second shell (3.52 Å), not Cu's (3.615)
    (warning,) = cutoff_warnings(config, "fit.yaml")  # Ni's 3x3x3 vacancy cells: half their height is 5.28 Å
    assert "second-neighbour shell (3.615 Å) of Cu fcc at fits.cuni.crystals.Cu_fcc.a_guess_A = 3.615 Å" in warning
    config["fits"]["cuni"]["crystals"]["Ni_fcc"]["vacancy_cells"] = 2  # half the height 3.52 Å: images seen
    warnings = cutoff_warnings(config, "fit.yaml")
    assert len(warnings) == 2 and "longer than half (3.52 Å)" in warnings[0]
    assert "the cells of fits.cuni.crystals.Ni_fcc.vacancy_cells" in warnings[0]


def _two_crystal_properties(cu_a0: float = 3.6150) -> pd.DataFrame:
    rows = [
        _row("a0_A", "Å", True, 3.615, cu_a0, state="crystal:Cu_fcc", initial=3.66, sigma=0.002),
        _row("Ec_eV", "eV/atom", True, 3.54, 3.541, state="crystal:Cu_fcc", initial=3.40),
        _row("a0_A", "Å", False, 2.8925, 3.2, state="crystal:B2", sigma=0.004),
        _row("formation_eV", "eV/atom", True, 0.1118, 0.112, state="crystal:B2"),
        _row("C44_GPa", "GPa", False, np.nan, 93.0, state="crystal:B2"),
        _row("max_relative_difference_energy", "1", False, np.nan, 1e-15, state="lammps_round_trip"),
    ]
    return pd.DataFrame(rows)


def _two_crystal_config() -> dict:
    config = _crystal_config()
    crystal = config.pop("crystal")
    b2 = {"formula": "CuNi", "lattice": "cesiumchloride", "references": {"formation_eV": {"value": 0.1118}}}
    b2["references"]["formation_eV"]["denominator"] = 0.01
    config["crystals"] = {"Cu_fcc": {"references": {k: crystal["references"][k] for k in ("a0_A", "Ec_eV")}}, "B2": b2}
    return config


def test_the_report_shows_every_crystal_by_name_fitted_and_unfitted(tmp_path):
    config = _two_crystal_config()
    assert denominators(config) == {
        ("crystal:Cu_fcc", "a0_A"): 0.003615,
        ("crystal:Cu_fcc", "Ec_eV"): 0.0354,
        ("crystal:B2", "formation_eV"): 0.01,
    }
    table = properties_table(_two_crystal_properties(), "copper", Sources())
    state, fitted_to = table.columns.index("state point"), table.columns.index("fitted to")
    assert [(r[0], r[state], r[fitted_to]) for r in table.rows] == [
        ("a0_A", "crystal Cu_fcc", "yes"),
        ("Ec_eV", "crystal Cu_fcc", "yes"),
        ("a0_A", "crystal B2", "no"),
        ("formation_eV", "crystal B2", "yes"),
        ("C44_GPa", "crystal B2", "no"),
    ]
    warnings = property_warnings(_two_crystal_properties(cu_a0=3.64), "copper", config)
    assert [w["kind"] for w in warnings] == ["fitted_property", "unfitted", "no_reference"]
    assert "fitted property a0_A of crystal Cu_fcc misses its target by 6.9 ×" in warnings[0]["message"]
    assert "a0_A of crystal B2 +10.6 % from its reference" in warnings[1]["message"]
    assert warnings[2]["message"].endswith("C44_GPa (B2)")
    record = _record(config, FITTED, 2.0)
    out = write_report([record], _params(config, FITTED), _two_crystal_properties(), tmp_path / "report.html")
    text = re.sub(r"<[^>]+>", " ", out.read_text().split("<body>")[1])
    assert "crystal Cu_fcc" in text and "crystal B2" in text and "formation_eV" in text
    assert "Crystal properties are computed in-process" in text
