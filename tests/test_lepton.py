"""The expression form (``lepton``) against Morse, LAMMPS ``pair_style lepton``, finite differences
and a fit that must give its parameters back; bad expressions named before any job.

The reference is LAMMPS itself: its own lepton library parses and differentiates the expression
the model writes (:meth:`LeptonPair.lammps_commands`), so the comparison checks the parser, the
printer, the derivative and the pair sum at once. Structures are built as in
``test_pair_models.py``: rattled, strained, triclinic supercells (some rotated, some with atoms
outside the cell) and slabs, rotated slabs and clusters with mixed periodicity.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from form_checks import check_forces_against_energy_differences
from lammps_reference import lammps_reference
from test_pair_models import crystals, evaluate, mixed_structures, random_crystal

from chemfit_core import ConfigError, Fitter
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.models import build_model
from chemfit_core.models.forms import potential_form
from chemfit_core.models.lepton import LeptonForm, LeptonPair, parse_expression
from chemfit_core.models.pair import Morse

MORSE_TEXT = "D*(exp(-2*a*(r-r0))-2*exp(-a*(r-r0)))"
MORSE = {"D": 0.3429, "a": 1.3588, "r0": 2.866}
CUTOFF = 6.5
EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "examples"

# expressions of copper-like scale (r from ~2.2 to 6.5 Å), with parameters; together they use
# every supported function, subexpressions and names that mean something to sympy or Python
EXPRESSIONS = {
    "morse": (MORSE_TEXT, MORSE),
    "lj": ("4*eps*((sig/r)^12-(sig/r)^6)", {"eps": 0.4, "sig": 2.3}),
    "buckingham": (
        "A*exp(-r/rho) - C/r^6 + E*exp(-lambda*r)",
        {"A": 900.0, "rho": 0.29, "C": 12.0, "E": 2.0, "lambda": 1.1},
    ),
    "functions": (
        "D*square(1-exp(-a*x)) - D + q*erfc(r/w)/r + c*cube(tanh(x)) + s*sqrt(r)*step(-x) + b*min(r, m)"
        " + g*max(x, 0)^2 - k*abs(sin(r)) + h*recip(r)*cosh(x/3) + u*atan(x) + v*log(r); x=r-r0",
        {"D": 0.34, "a": 1.4, "r0": 2.9, "q": 0.5, "w": 1.7, "c": 0.02, "s": 0.01, "b": -0.03, "m": 4.0,
         "g": 0.015, "k": 0.01, "h": 0.05, "u": 0.01, "v": -0.02},
    ),
}  # fmt: skip


def structures_of(symbol: str = "Cu", n: int = 20, seed: int = 2) -> list:
    """``n`` random triclinic copper crystals plus the five mixed-periodicity structures."""
    mixed = mixed_structures()
    for atoms in mixed:  # argon geometry scaled to copper
        atoms.set_cell(atoms.cell.array * 3.615 / 5.26, scale_atoms=True)
        atoms.symbols[:] = symbol
    return crystals(symbol, 3.615, n, seed) + mixed


def assert_close(got: list[dict], ref: list[dict], rtol: float) -> None:
    """Energies to ``rtol``; forces and stresses to ``rtol`` of each structure's largest component."""
    for k, (g, r) in enumerate(zip(got, ref)):
        assert g["energy"] == pytest.approx(r["energy"], rel=rtol), f"energy of structure {k}"
        scale = np.abs(r["forces"]).max()
        np.testing.assert_allclose(g["forces"], r["forces"], rtol=rtol, atol=rtol * scale, err_msg=f"forces {k}")
        if r["stress"] is not None:
            scale = np.abs(r["stress"]).max()
            np.testing.assert_allclose(g["stress"], r["stress"], rtol=rtol, atol=rtol * scale, err_msg=f"stress {k}")
        else:
            assert not g["stress"].any()


def lepton_model(name: str, shift: bool = False) -> LeptonPair:
    text, params = EXPRESSIONS[name]
    return build_model(
        {
            "form": "lepton",
            "expression": text,
            "parameters": params,
            "cutoff": CUTOFF,
            "species": ["Cu"],
            "shift": shift,
        }
    )


@pytest.fixture(scope="module")
def structures():
    return structures_of()


# -- Morse, written as an expression --------------------------------------------------------------
@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
def test_the_morse_expression_is_the_morse_model_and_lammps_morse(tmp_path, structures, shift):
    expression = evaluate(lepton_model("morse", shift), structures)
    morse = evaluate(Morse(MORSE["D"], MORSE["a"], MORSE["r0"], CUTOFF, shift=shift), structures)
    assert_close(expression, morse, rtol=1e-12)
    lines = [f"pair_style morse {CUTOFF}", "pair_coeff 1 1 {D} {a} {r0}".format(**MORSE)]
    lines.append(f"pair_modify shift {'yes' if shift else 'no'}")
    assert_close(expression, lammps_reference(structures, lines, tmp_path, ["Cu"]), rtol=1e-8)


# -- LAMMPS pair_style lepton -------------------------------------------------------------------
@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_expressions_equal_lammps_pair_style_lepton(tmp_path, structures, name, shift):
    assert len(structures) >= 20
    model = lepton_model(name, shift)
    commands = model.lammps_commands(["Cu"])
    assert commands[0] == f"pair_style lepton {CUTOFF!r}" and "**" not in "".join(commands)
    ref = lammps_reference(structures, commands, tmp_path, ["Cu"])
    got = evaluate(model, structures)
    assert_close(got, ref, rtol=1e-8)
    assert max(abs(g["energy"]) for g in got) > 1.0  # not a trivially small potential


def test_lammps_shift_subtracts_the_energy_at_the_cutoff_as_the_model_does(tmp_path, structures):
    plain, shifted = lepton_model("buckingham"), lepton_model("buckingham", shift=True)
    few = structures[:3]
    gap = [a["energy"] - b["energy"] for a, b in zip(evaluate(plain, few), evaluate(shifted, few))]
    ref = [
        a["energy"] - b["energy"]
        for a, b in zip(
            lammps_reference(few, plain.lammps_commands(["Cu"]), tmp_path / "plain", ["Cu"]),
            lammps_reference(few, shifted.lammps_commands(["Cu"]), tmp_path / "shifted", ["Cu"]),
        )
    ]
    assert min(abs(g) for g in ref) > 1e-3
    np.testing.assert_allclose(gap, ref, rtol=1e-9)


def test_one_expression_per_species_pair_equals_lammps(tmp_path):
    rng = np.random.default_rng(17)
    structures = []
    for k in range(20):
        atoms = random_crystal("Cu", 3.7, rng, ("orthorhombic", "lower-triangular", "general")[k % 3])
        atoms.symbols[rng.random(len(atoms)) < rng.uniform(0.2, 0.8)] = "Ni"
        structures.append(atoms)
    spec = {
        "form": "lepton",
        "expression": {"Cu-Cu": MORSE_TEXT, "Ni-Cu": "A*exp(-r/rho) - C/r^6", "Ni-Ni": "4*eps*((sig/r)^12-(sig/r)^6)"},
        "parameters": {
            "Cu-Cu": MORSE,
            "Cu-Ni": {"A": 900.0, "rho": 0.29, "C": 12.0},
            "eps:Ni-Ni": 0.4,
            "sig:Ni-Ni": 2.3,
        },
        "cutoff": CUTOFF,
        "species": ["Cu", "Ni"],
    }
    model = build_model(spec)
    assert {name for name, _ in model.named_parameters()} == {
        f"coefficients.{n}"
        for n in ("D:Cu-Cu", "a:Cu-Cu", "r0:Cu-Cu", "A:Cu-Ni", "rho:Cu-Ni", "C:Cu-Ni", "eps:Ni-Ni", "sig:Ni-Ni")
    }
    ref = lammps_reference(structures, model.lammps_commands(["Cu", "Ni"]), tmp_path, ["Cu", "Ni"])
    assert_close(evaluate(model, structures), ref, rtol=1e-8)
    # the species order is free: Ni first gives the same numbers
    flipped = build_model({**spec, "species": ["Ni", "Cu"]})
    assert_close(evaluate(flipped, structures), evaluate(model, structures), rtol=1e-12)


# -- derivatives ---------------------------------------------------------------------------------
def test_forces_and_stress_are_derivatives_of_the_energy(structures):
    """The symbolic dE/dr against central differences of the energy (LAMMPS aside)."""
    model = lepton_model("functions")
    atoms = structures[1]
    check_forces_against_energy_differences(model, atoms, [(0, 0), (3, 1), (7, 2)])


def _quantities(model, state) -> list[torch.Tensor]:
    out = model(state)
    return [out["energy"].sum(), out["forces"][5, 1], out["stress"][0, 0, 1]]


@pytest.mark.parametrize("name", ["morse", "buckingham", "functions"])
def test_parameter_gradients_match_finite_differences(structures, name):
    model = lepton_model(name, shift=True)
    state = atoms_to_state(sorted(structures[:20], key=len)[:2])  # periodic: a stress
    names = list(model.coefficients)
    tensors = [model.coefficients[n] for n in names]
    # a parameter may reach a quantity only through a step (d force / d m of min(r, m)): zero, unused
    all_grads = [
        torch.autograd.grad(q, tensors, retain_graph=True, allow_unused=True, materialize_grads=True)
        for q in _quantities(model, state)
    ]
    for k, (param, tensor) in enumerate(zip(names, tensors)):
        h = 1e-5 * max(abs(float(tensor.detach())), 0.1)
        values = []
        with torch.no_grad():
            for sign in (1, -1):
                tensor.add_(sign * h)
                values.append([q.item() for q in _quantities(model, state)])
                tensor.sub_(sign * h)
        for q_index, grads in enumerate(all_grads):
            numeric = (values[0][q_index] - values[1][q_index]) / (2 * h)
            assert grads[k].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9), (param, q_index)


# -- the form: fits --------------------------------------------------------------------------------
def _labelled(form, params, n: int = 6) -> list:
    from chemfit_core.science.targets import label, rattled_cells

    return label(rattled_cells("Cu", n_structures=n, seed=3), form.model(params))


def test_the_form_is_the_fit_path_to_the_model():
    form = potential_form({"form": "lepton", "element": "Cu", "expression": MORSE_TEXT, "cutoff_A": CUTOFF})
    assert isinstance(form, LeptonForm) and form.parameter_names == ("D", "a", "r0")
    assert potential_form(form.spec()).parameter_names == form.parameter_names  # params.json round trip
    assert form.spec() == {
        "form": "lepton",
        "element": "Cu",
        "expression": MORSE_TEXT,
        "cutoff_A": CUTOFF,
        "shift": False,
    }
    assert form.nearest_neighbour_A(MORSE) == pytest.approx(MORSE["r0"], abs=1e-6)
    assert form.lammps_commands(MORSE) == lepton_model("morse").lammps_commands(["Cu"])
    with pytest.raises(ValueError, match=r"missing \['r0'\]"):
        form.model({"D": 0.3, "a": 1.3})


def test_the_structure_target_jacobian_equals_finite_differences():
    from chemfit_core import EvaluateContext
    from chemfit_core.science.targets import StructureTarget

    text, truth = EXPRESSIONS["buckingham"]
    form = potential_form({"form": "lepton", "element": "Cu", "expression": text, "cutoff_A": CUTOFF})
    target = StructureTarget(form, _labelled(form, truth, n=3), stress_denominator=1e-3)
    theta = {k: v * 1.03 for k, v in truth.items()}
    ctx = EvaluateContext()
    target(theta, ctx)
    for name in theta:
        h = 1e-6 * abs(theta[name])
        up, down = EvaluateContext(), EvaluateContext()
        target({**theta, name: theta[name] + h}, up)
        target({**theta, name: theta[name] - h}, down)
        fd = (np.array(up.result.residuals) - np.array(down.result.residuals)) / (2 * h)
        np.testing.assert_allclose(ctx.result.jacobian[name], fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max(), err_msg=name)


def test_known_parameters_are_recovered_from_noise_free_data():
    from chemfit_core.science.targets import StructureTarget

    form = potential_form({"form": "lepton", "element": "Cu", "expression": MORSE_TEXT, "cutoff_A": CUTOFF})
    target = StructureTarget(form, _labelled(form, MORSE), stress_denominator=1e-3)
    start = {"D": 0.3429 * 0.93, "a": 1.3588 * 1.08, "r0": 2.866 * 0.97}
    fitter = Fitter(target, start, progress=False)
    params = fitter.fit_least_squares(jac="analytic", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    for name, value in MORSE.items():
        assert params[name] == pytest.approx(value, rel=1e-6), name
    assert fitter.result.n_evaluations < 60


# -- bad input, named before any job ---------------------------------------------------------------
BAD = [
    ("D*(exp(-2*a*(r-r0))-2*exp(-a*(r-r0))", "does not parse"),
    ("D*(exp(-2*a*(r-r0)) -* 2)", "does not parse"),
    ("D*pow(r, -6)", r"uses pow\(\), which lepton lacks"),
    ("D*gamma(r)", r"uses gamma\(\), which lepton lacks"),
    ("D*floor(r)", r"lepton's floor\(\) is not supported"),
    ("D*r**2", r"write \^ for powers"),
    ("D*a", "does not depend on r"),
    ("D*r + 1/0", "not a real formula"),
    ("D*exp(-r)$", r"lepton syntax has no \$"),
]


@pytest.mark.parametrize(("text", "problem"), BAD)
def test_bad_expressions_are_errors_naming_the_expression(text, problem):
    with pytest.raises(ValueError, match=problem) as info:
        parse_expression(text)
    assert repr(text) in str(info.value)
    with pytest.raises(ValueError, match=problem):  # the form checks when it is made
        LeptonForm("Cu", {"expression": text, "cutoff_A": CUTOFF})


def test_a_symbol_that_is_neither_r_nor_a_parameter_is_named_with_its_expression():
    with pytest.raises(ValueError, match=r"'D\*\(exp\(-2\*a\*\(r-r0\)\).*: a is neither r nor a parameter"):
        build_model(
            {
                "form": "lepton",
                "expression": MORSE_TEXT,
                "parameters": {"D": 0.3, "r0": 2.9},
                "cutoff": 6.0,
                "species": ["Cu"],
            }
        )
    with pytest.raises(ValueError, match=r"\['b'\] appear in no expression"):
        build_model(
            {
                "form": "lepton",
                "expression": MORSE_TEXT,
                "parameters": {**MORSE, "b": 1.0},
                "cutoff": 6.0,
                "species": ["Cu"],
            }
        )
    with pytest.raises(ValueError, match="no formula for the pair"):
        build_model(
            {
                "form": "lepton",
                "expression": {"Cu-Cu": MORSE_TEXT},
                "parameters": {},
                "cutoff": 6.0,
                "species": ["Cu", "Ni"],
            }
        )


def _config(expression: str) -> dict:
    config = yaml.safe_load((EXAMPLES / "copper_lepton.yaml").read_text())
    config["fits"]["copper_lepton"]["potential"]["expression"] = expression
    return config


def test_the_example_config_is_the_morse_fit_as_an_expression():
    from chemfit_core.stages.config import validate_config

    lepton = yaml.safe_load((EXAMPLES / "copper_lepton.yaml").read_text())["fits"]["copper_lepton"]
    morse = yaml.safe_load((EXAMPLES / "copper_morse.yaml").read_text())["fits"]["copper_morse"]
    assert lepton["potential"] == {
        "form": "lepton",
        "expression": MORSE_TEXT,
        "cutoff_A": morse["potential"]["cutoff_A"],
    }
    names = dict(zip(["D_eV", "alpha_invA", "r0_A"], ["D", "a", "r0"]))
    assert {names[k]: v for k, v in morse["parameters"].items()} == lepton["parameters"]
    assert {k: v for k, v in lepton.items() if k not in ("potential", "parameters", "description")} == {
        k: v for k, v in morse.items() if k not in ("potential", "parameters", "description")
    }
    validate_config(_config(MORSE_TEXT))


@pytest.mark.parametrize(("text", "problem"), [BAD[0], BAD[2], BAD[5]])
def test_check_config_reports_a_bad_expression_against_the_potential(text, problem):
    from chemfit_core.stages.config import validate_config

    with pytest.raises(ConfigError) as info:
        validate_config(copy.deepcopy(_config(text)), "c.yaml")
    message = str(info.value)
    assert f"c.yaml: fits.copper_lepton.potential: expression {text!r}" in message
    assert len([line for line in message.splitlines() if "copper_lepton" in line]) == 1, message


def test_check_config_names_a_symbol_the_parameters_do_not_list():
    from chemfit_core.stages.config import validate_config

    with pytest.raises(ConfigError, match=r"fits.copper_lepton.parameters: expected exactly \['D', 'a', 'b', 'r0'\]"):
        validate_config(_config("D*(exp(-2*a*(r-r0))-2*exp(-b*(r-r0)))"))
