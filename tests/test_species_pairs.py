"""Several species in the pair forms ``lj/cut`` and ``morse``: per-pair parameters, mixing rules.

The forms' models are checked against LAMMPS running the forms' own ``lammps_commands`` on random
two-species cells (triclinic, rotated, mixed periodicity), the mixing rules against LAMMPS's own
``pair_modify mix`` given only the like pairs, the parameter gradients against central
differences, and a binary fit recovers the parameters that labelled its data. Nothing is mocked.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from form_checks import check_parameter_gradients, recovery_errors
from lammps_reference import lammps_reference
from test_pair_models import KINDS, distort, evaluate, relative_differences

from chemfit_core import ConfigError
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.models.forms import potential_form
from chemfit_core.models.pair import LennardJones
from chemfit_core.stages.config import validate_config
from chemfit_core.units import KB_EV_PER_K

LJ_LIKE = {"epsilon_K:Ar-Ar": 119.8, "sigma_A:Ar-Ar": 3.405, "epsilon_K:Kr-Kr": 164.0, "sigma_A:Kr-Kr": 3.63}
LJ_UNLIKE = {"epsilon_K:Ar-Kr": 131.0, "sigma_A:Ar-Kr": 3.55}  # made up: off every mixing rule
MORSE = {  # Cu-Cu, Ni-Ni after Girifalco and Weizer (1959); Cu-Ni made up
    "D_eV:Cu-Cu": 0.3429,
    "alpha_invA:Cu-Cu": 1.3588,
    "r0_A:Cu-Cu": 2.866,
    "D_eV:Cu-Ni": 0.3800,
    "alpha_invA:Cu-Ni": 1.3900,
    "r0_A:Cu-Ni": 2.820,
    "D_eV:Ni-Ni": 0.4205,
    "alpha_invA:Ni-Ni": 1.4199,
    "r0_A:Ni-Ni": 2.780,
}
LAMMPS_RULE = {"geometric": "geometric", "arithmetic": "arithmetic", "lorentz-berthelot": "arithmetic"}
LAMMPS_RULE["sixthpower"] = "sixthpower"


def lj_form(**options):
    return potential_form({"form": "lj/cut", "element": "Ar", "species": ["Ar", "Kr"], "cutoff_sigma": 2.5, **options})


def morse_form(**options):
    return potential_form({"form": "morse", "element": "Cu", "species": ["Cu", "Ni"], "cutoff_A": 6.0, **options})


def binary_cells(symbols: tuple[str, str], a: float, n: int, seed: int, mixed_pbc: bool) -> list[Atoms]:
    """``n`` rattled, strained fcc supercells (32-108 atoms) with a random share (20-80 %) of the
    sites given to the second species, cycling through :data:`test_pair_models.KINDS` (every third
    sheared and rotated: LAMMPS rotates those into its frame); with ``mixed_pbc`` every fourth is a
    slab, a rod or a cluster (pbc (T, T, F), (F, F, T), all F), and some atoms of others sit
    outside the cell."""
    rng = np.random.default_rng(seed)
    cells = []
    for k in range(n):
        reps = [(2, 2, 2), (3, 2, 2), (3, 3, 2), (3, 3, 3)][rng.integers(4)]
        atoms = bulk(symbols[0], "fcc", a=a, cubic=True).repeat(reps)
        distort(atoms, rng, KINDS[k % 3], rattle_A=(0.05, 0.15))
        second = rng.random(len(atoms)) < rng.uniform(0.2, 0.8)
        second[:2] = [False, True]  # both species in every cell
        atoms.symbols[second] = symbols[1]
        if k % 4 == 3:
            if mixed_pbc:
                atoms.pbc = [(True, True, False), (False, False, True), (False, False, False)][(k // 4) % 3]
            else:
                atoms.positions[::3] += np.array([2, 1, -3]) @ atoms.cell.array
        cells.append(atoms)
    return cells


@pytest.fixture(scope="module")
def ar_kr() -> list[Atoms]:
    return binary_cells(("Ar", "Kr"), 5.45, 24, seed=1, mixed_pbc=True)


@pytest.fixture(scope="module")
def cu_ni() -> list[Atoms]:
    return binary_cells(("Cu", "Ni"), 3.58, 24, seed=2, mixed_pbc=True)


# -- against LAMMPS, the forms' own commands --------------------------------------------------------
LJ_CASES = {  # (options, parameters); the tail correction needs cells periodic in every direction
    "all-pairs-shifted": ({"shift": True, "tail_correction": False}, {**LJ_LIKE, **LJ_UNLIKE}),
    "all-pairs-tail": ({"tail_correction": True}, {**LJ_LIKE, **LJ_UNLIKE}),
    "lorentz-berthelot": ({"mixing": "lorentz-berthelot", "tail_correction": False}, LJ_LIKE),
    "geometric-explicit": (
        {"mixing": "geometric", "explicit_pairs": ["Kr-Ar"], "tail_correction": False},
        {**LJ_LIKE, **LJ_UNLIKE},
    ),
}


@pytest.mark.parametrize("case", list(LJ_CASES))
def test_binary_lj_equals_lammps(tmp_path, ar_kr, case):
    options, params = LJ_CASES[case]
    form = lj_form(**options)
    structures = ar_kr if not form.option("tail_correction") else [s for s in ar_kr if s.pbc.all()]
    assert len(structures) >= 18 and sum(np.abs(np.triu(s.cell.array, 1)).max() > 0.1 for s in structures) >= 6
    assert all(set(s.get_chemical_symbols()) == {"Ar", "Kr"} for s in structures)
    ref = lammps_reference(structures, form.lammps_commands(params), tmp_path, form.species)
    worst = relative_differences(evaluate(form.model(params), structures), ref)
    print(case, len(structures), worst)
    assert max(worst.values()) <= 1e-8, worst


@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
def test_binary_morse_equals_lammps(tmp_path, cu_ni, shift):
    form = morse_form(shift=shift)
    assert sum(not s.pbc.all() for s in cu_ni) == 6
    ref = lammps_reference(cu_ni, form.lammps_commands(MORSE), tmp_path, form.species)
    worst = relative_differences(evaluate(form.model(MORSE), cu_ni), ref)
    print("morse", shift, worst)
    assert max(worst.values()) <= 1e-8, worst


def test_the_species_order_of_the_form_is_free(ar_kr):
    """Kr first: other LAMMPS types and table order, the same potential."""
    params = {**LJ_LIKE, **LJ_UNLIKE}
    flipped = potential_form(
        {"form": "lj/cut", "element": "Ar", "species": ["Kr", "Ar"], "cutoff_sigma": 2.5, "tail_correction": False}
    )
    renamed = {k.replace("Ar-Kr", "Kr-Ar"): v for k, v in params.items()}
    periodic = [s for s in ar_kr if s.pbc.all()][:6]
    a = evaluate(lj_form(tail_correction=False).model(params), periodic)
    b = evaluate(flipped.model(renamed), periodic)
    assert max(relative_differences(b, a).values()) < 1e-12


# -- mixing rules against LAMMPS's own pair_modify mix --------------------------------------------
def like_only_lines(form, params: dict, rule: str, unlike: dict | None = None) -> list[str]:
    """LAMMPS input with only the like pairs' coefficients (plus ``unlike`` ones), mixed by LAMMPS."""
    cutoff = form.model(params).cutoff
    lines = [f"pair_style lj/cut {cutoff!r}"]
    for k, s in enumerate(form.species):
        lines.append(
            f"pair_coeff {k + 1} {k + 1} {params[f'epsilon_K:{s}-{s}'] * KB_EV_PER_K!r} {params[f'sigma_A:{s}-{s}']}"
        )
    if unlike:
        lines.append(f"pair_coeff 1 2 {unlike['epsilon_K:Ar-Kr'] * KB_EV_PER_K!r} {unlike['sigma_A:Ar-Kr']}")
    return [*lines, f"pair_modify mix {rule} shift no tail no"]


@pytest.mark.parametrize("rule", list(LAMMPS_RULE))
def test_mixed_parameters_equal_lammps_pair_modify_mix(tmp_path, ar_kr, rule):
    form = lj_form(mixing=rule, tail_correction=False)
    structures = ar_kr[:12]
    ref = lammps_reference(structures, like_only_lines(form, LJ_LIKE, LAMMPS_RULE[rule]), tmp_path, form.species)
    worst = relative_differences(evaluate(form.model(LJ_LIKE), structures), ref)
    print(rule, worst)
    assert max(worst.values()) <= 1e-8, worst


def test_explicit_unlike_pair_overrides_mixing_as_in_lammps(tmp_path, ar_kr):
    form = lj_form(mixing="arithmetic", explicit_pairs=["Ar-Kr"], tail_correction=False)
    params = {**LJ_LIKE, **LJ_UNLIKE}
    structures = ar_kr[:8]
    lines = like_only_lines(form, params, "arithmetic", unlike=LJ_UNLIKE)
    ref = lammps_reference(structures, lines, tmp_path / "explicit", form.species)
    assert max(relative_differences(evaluate(form.model(params), structures), ref).values()) <= 1e-8
    # guard: the rules differ from each other and from the explicit pair by far more than that
    mixed = lammps_reference(structures, like_only_lines(form, params, "arithmetic"), tmp_path / "mixed", ["Ar", "Kr"])
    geometric = lammps_reference(structures, like_only_lines(form, params, "geometric"), tmp_path / "geo", ["Ar", "Kr"])
    for other in (mixed, geometric):
        assert min(abs(a["energy"] / b["energy"] - 1) for a, b in zip(other, ref)) > 1e-4
    assert min(abs(a["energy"] / b["energy"] - 1) for a, b in zip(mixed, geometric)) > 1e-5


def test_mixing_rules_are_lammps_formulas():
    """The unlike table entries of each rule, against the closed forms of LAMMPS's pair.cpp."""
    e1, e2 = LJ_LIKE["epsilon_K:Ar-Ar"] * KB_EV_PER_K, LJ_LIKE["epsilon_K:Kr-Kr"] * KB_EV_PER_K
    s1, s2 = LJ_LIKE["sigma_A:Ar-Ar"], LJ_LIKE["sigma_A:Kr-Kr"]
    expected = {
        "geometric": (np.sqrt(e1 * e2), np.sqrt(s1 * s2)),
        "arithmetic": (np.sqrt(e1 * e2), (s1 + s2) / 2),
        "lorentz-berthelot": (np.sqrt(e1 * e2), (s1 + s2) / 2),
        "sixthpower": (2 * np.sqrt(e1 * e2) * s1**3 * s2**3 / (s1**6 + s2**6), ((s1**6 + s2**6) / 2) ** (1 / 6)),
    }
    for rule, (eps, sig) in expected.items():
        model = lj_form(mixing=rule).model(LJ_LIKE)
        assert model.epsilon[0, 1].item() == pytest.approx(eps, rel=1e-14) == model.epsilon[1, 0].item()
        assert model.sigma[0, 1].item() == pytest.approx(sig, rel=1e-14)
        assert model.epsilon[1, 1].item() == pytest.approx(e2, rel=1e-14)


# -- parameter gradients ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "form,params",
    [
        (lj_form(mixing="sixthpower", shift=True), LJ_LIKE),  # the gradient through the mixing rule
        (lj_form(mixing="geometric", explicit_pairs=["Ar-Kr"]), {**LJ_LIKE, **LJ_UNLIKE}),  # tail correction on
        (morse_form(shift=True), MORSE),
    ],
    ids=["lj-sixthpower", "lj-explicit-tail", "morse"],
)
def test_parameter_gradients_match_central_differences(ar_kr, cu_ni, form, params):
    cells = [s for s in (ar_kr if form.name == "lj/cut" else cu_ni) if s.pbc.all() and len(s) <= 48][:2]
    energy_gradients = check_parameter_gradients(form, params, atoms_to_state(cells), rel_step=1e-5, rel=2e-6)
    assert all(abs(g) > 1e-6 for g in energy_gradients), energy_gradients  # every parameter moves the energy


# -- parameter recovery ------------------------------------------------------------------------------
def test_binary_morse_parameters_are_recovered_from_labelled_cells(cu_ni):
    cells = [s for s in cu_ni if s.pbc.all() and len(s) <= 48][:6]
    assert len(cells) == 6
    errors = recovery_errors(morse_form(), MORSE, cells)
    assert max(errors.values()) < 1e-6, errors


# -- one species: unchanged ------------------------------------------------------------------------
def test_single_element_forms_keep_their_names_options_and_numbers(ar_kr):
    plain = potential_form({"form": "lj/cut", "element": "Ar"})
    listed = potential_form({"form": "lj/cut", "element": "Ar", "species": ["Ar"], "mixing": "geometric"})
    assert plain.parameter_names == listed.parameter_names == ("epsilon_K", "sigma_A")
    assert (
        plain.spec()
        == listed.spec()
        == {
            "form": "lj/cut",
            "element": "Ar",
            "cutoff_sigma": 3.0,
            "shift": False,
            "tail_correction": True,
        }
    )
    params = {"epsilon_K": 119.8, "sigma_A": 3.405}
    direct = LennardJones(119.8 * KB_EV_PER_K, 3.405, 3.0 * 3.405, tail_correction=True)
    argon = [a for a in ar_kr if a.pbc.all()][:3]
    for atoms in argon:
        atoms.symbols[:] = "Ar"
    for got in (plain, listed):
        for a, b in zip(evaluate(got.model(params), argon), evaluate(direct, argon)):
            assert a["energy"] == b["energy"]
            np.testing.assert_array_equal(a["forces"], b["forces"])
    assert plain.lammps_commands(params) == direct.lammps_commands(["Ar"])
    morse = potential_form({"form": "morse", "element": "Cu", "cutoff_A": 6.0})
    assert morse.parameter_names == ("D_eV", "alpha_invA", "r0_A")
    assert morse.nearest_neighbour_A({"D_eV": 0.34, "alpha_invA": 1.36, "r0_A": 2.87}) == 2.87
    assert lj_form().nearest_neighbour_A({**LJ_LIKE, **LJ_UNLIKE}) == pytest.approx(2 ** (1 / 6) * 3.405)


def test_one_naming_convention_for_every_pair_form():
    """``<name>:<A>-<B>`` in species order with several species, bare names with one, in every pair form."""
    buck = {"form": "buck", "element": "O", "cutoff_A": 6.0}
    assert potential_form({**buck, "species": ["Mg", "O"]}).parameter_names[:3] == (
        "A_eV:Mg-Mg",
        "rho_A:Mg-Mg",
        "C_eVA6:Mg-Mg",
    )
    assert potential_form({**buck, "species": ["O"]}).parameter_names == ("A_eV", "rho_A", "C_eVA6")
    assert lj_form().parameter_names == tuple(
        f"{p}:{pair}" for pair in ("Ar-Ar", "Ar-Kr", "Kr-Kr") for p in ("epsilon_K", "sigma_A")
    )
    assert lj_form(mixing="arithmetic").parameter_names == tuple(LJ_LIKE)
    assert morse_form().parameter_names == tuple(MORSE)
    lepton = {"form": "lepton", "element": "Cu", "cutoff_A": 6.0, "expression": "D*exp(-a*r)"}
    assert potential_form({**lepton, "species": ["Cu", "Ni"]}).parameter_names[:2] == ("D:Cu-Cu", "a:Cu-Cu")


# -- bad input ----------------------------------------------------------------------------------------
def test_unknown_species_pairs_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown parameters \['D_eV:Cu-Fe'\].*species pair"):
        morse_form().model({**MORSE, "D_eV:Cu-Fe": 0.3})
    reversed_name = {**{k: v for k, v in MORSE.items() if k != "D_eV:Cu-Ni"}, "D_eV:Ni-Cu": 0.38}
    with pytest.raises(ValueError, match=r"unknown parameters \['D_eV:Ni-Cu'\].*missing parameters \['D_eV:Cu-Ni'\]"):
        morse_form().model(reversed_name)
    with pytest.raises(ValueError, match=r"explicit_pairs.*unknown parameters \['epsilon_K:Ar-Kr', 'sigma_A:Ar-Kr'\]"):
        lj_form(mixing="geometric").model({**LJ_LIKE, **LJ_UNLIKE})  # unlike pair without explicit_pairs
    with pytest.raises(ValueError, match="unknown species pair 'Ar-Xe' in explicit_pairs"):
        lj_form(mixing="geometric", explicit_pairs=["Ar-Xe"])
    with pytest.raises(ValueError, match="pair 'Kr-Ar' given twice in explicit_pairs"):
        lj_form(mixing="geometric", explicit_pairs=["Ar-Kr", "Kr-Ar"])


def test_missing_pair_parameters_are_clear_errors():
    with pytest.raises(ValueError, match=r"missing parameters \['r0_A:Ni-Ni'\]"):
        morse_form().model({k: v for k, v in MORSE.items() if k != "r0_A:Ni-Ni"})
    with pytest.raises(ValueError, match=r"missing parameters \['epsilon_K:Ar-Kr', 'sigma_A:Ar-Kr'\]"):
        lj_form().model(LJ_LIKE)  # mixing none: the unlike pair needs its own
    with pytest.raises(ValueError, match=r"lj/cut needs parameters \['epsilon_K', 'sigma_A'\].*missing .*'sigma_A'"):
        potential_form({"form": "lj/cut", "element": "Ar"}).model({"epsilon_K": 120.0})


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="morse: no mixing rule"):
        morse_form(mixing="geometric")
    with pytest.raises(ValueError, match="mixing: expected one of none, geometric"):
        lj_form(mixing="waldman-hagler")
    with pytest.raises(ValueError, match="explicit_pairs needs a mixing rule"):
        lj_form(explicit_pairs=["Ar-Kr"])
    with pytest.raises(ValueError, match=r"explicit_pairs: \['Ar-Ar'\] are like pairs"):
        lj_form(mixing="geometric", explicit_pairs=["Ar-Ar"])
    with pytest.raises(ValueError, match=r"species \['Kr', 'Xe'\] do not hold the fit's element Ar"):
        lj_form(species=["Kr", "Xe"])
    with pytest.raises(ValueError, match="distinct chemical symbols"):
        morse_form(species=["Cu", "Cu"])
    with pytest.raises(ValueError, match="unknown chemical symbol 'Qq'"):
        morse_form(species=["Cu", "Qq"])
    model = morse_form().model(MORSE)
    with pytest.raises(ValueError, match=r"no parameters for atomic numbers \[26\]"):
        model(atoms_to_state(bulk("Fe", "bcc", a=2.87)))


def test_the_config_check_names_the_key_of_a_bad_pair(repo):
    """Through ``chemfit check-config``'s validation of the binary example: each problem names its key."""
    base = yaml.safe_load((repo / "config" / "examples" / "cuni_morse.yaml").read_text())
    cases = [
        (
            lambda fit: fit["parameters"].__setitem__("D_eV:Ni-Cu", fit["parameters"].pop("D_eV:Cu-Ni")),
            "fits.cuni.parameters: expected exactly",
            "'D_eV:Ni-Cu'",
        ),
        (lambda fit: fit["parameters"].pop("r0_A:Ni-Ni"), "fits.cuni.parameters: expected exactly", "'r0_A:Ni-Ni'"),
        (
            lambda fit: fit["potential"].__setitem__("mixing", "geometric"),
            "fits.cuni.potential: form morse takes",
            "['mixing'], which it does not use",
        ),
        (
            lambda fit: fit["potential"].__setitem__("species", ["Ni", "Fe"]),
            "fits.cuni.potential: morse: species",
            "do not hold the fit's element Cu",
        ),
    ]
    for edit, key, detail in cases:
        config = copy.deepcopy(base)
        edit(config["fits"]["cuni"])
        with pytest.raises(ConfigError) as info:
            validate_config(config, "alloy.yaml")
        assert key in str(info.value) and detail in str(info.value), str(info.value)
