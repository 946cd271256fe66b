"""Lennard-Jones and Morse models against the real LAMMPS binary, finite differences and themselves.

Reference numbers come from LAMMPS (``lj/cut``, ``morse``) run on the same structures
through :func:`lammps_reference.lammps_reference`: one LAMMPS process per batch of
structures. Nothing is mocked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.cluster import Icosahedron
from ase.neighborlist import neighbor_list
from lammps_reference import lammps_reference

from chemfit_core.engine.state import atoms_to_state
from chemfit_core.models.pair import LennardJones, Morse

LJ = {"epsilon": 0.0104, "sigma": 3.40, "cutoff": 8.5}  # argon
MORSE = {"D": 0.3429, "alpha": 1.3588, "r0": 2.866, "cutoff": 9.0}  # copper
KINDS = ("orthorhombic", "lower-triangular", "general")


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A random proper rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def distort(atoms: Atoms, rng: np.random.Generator, kind: str, rattle_A: tuple[float, float]) -> Atoms:
    """Strain ``atoms`` by up to 3 %, then shear it (``lower-triangular``: LAMMPS's own frame;
    ``general``: sheared and rotated; ``orthorhombic``: neither) and rattle its atoms by a random
    width in ``rattle_A`` (Å), in place. The one random-cell recipe of the LAMMPS comparisons."""
    deform = (1 + rng.uniform(-0.03, 0.03)) * np.eye(3)
    if kind != "orthorhombic":
        shear = rng.uniform(-0.12, 0.12, (3, 3))
        np.fill_diagonal(shear, 0)
        deform = deform @ (np.eye(3) + (np.tril(shear) if kind == "lower-triangular" else shear))
    atoms.set_cell(atoms.cell.array @ deform, scale_atoms=True)
    if kind == "general":
        atoms.set_cell(atoms.cell.array @ random_rotation(rng).T, scale_atoms=True)
    atoms.positions += rng.normal(0.0, rng.uniform(*rattle_A), atoms.positions.shape)
    return atoms


def random_crystal(symbol: str, a: float, rng: np.random.Generator, kind: str) -> Atoms:
    """A rattled, strained fcc supercell (32-108 atoms).

    ``kind``: ``orthorhombic`` (isotropic strain only), ``lower-triangular`` (plus a
    shear that keeps the cell in LAMMPS's own frame) or ``general`` (a full shear and
    a random rotation: LAMMPS must rotate the box into its frame).
    """
    reps = [(2, 2, 2), (3, 2, 2), (3, 3, 2), (3, 3, 3)][rng.integers(4)]
    atoms = bulk(symbol, "fcc", a=a, cubic=True).repeat(reps)
    distort(atoms, rng, kind, rattle_A=(0.1, 0.2))
    return atoms


def crystals(symbol: str, a: float, n: int, seed: int) -> list[Atoms]:
    """``n`` random crystals, cycling through :data:`KINDS`; in every fourth one some atoms
    are moved out of the cell by whole lattice vectors (positions need not be wrapped)."""
    rng = np.random.default_rng(seed)
    structures = [random_crystal(symbol, a, rng, KINDS[k % 3]) for k in range(n)]
    for atoms in structures[3::4]:
        atoms.positions[::3] += np.array([2, 1, -3]) @ atoms.cell.array
        atoms.positions[1::3] -= atoms.cell.array[1]
    return structures


def far_from_cutoff(structures: list[Atoms], cutoff: float, margin: float = 2e-4) -> Atoms:
    """The smallest triclinic structure with no pair distance within ``margin`` of the cutoff,
    so that finite differences (which move distances by 1e-4 Å at most) do not step across
    the jump of an unshifted energy there."""
    for atoms in sorted(structures, key=len):
        d = neighbor_list("d", atoms, cutoff + margin)
        if np.abs(atoms.cell.array[0, 1:]).max() > 0.1 and not (d > cutoff - margin).any():
            return atoms
    raise AssertionError("no structure is clear of the cutoff")


def lj_lines(shift: bool) -> list[str]:
    return [
        f"pair_style lj/cut {LJ['cutoff']}",
        f"pair_coeff 1 1 {LJ['epsilon']} {LJ['sigma']}",
        f"pair_modify shift {'yes' if shift else 'no'}",
    ]


def morse_lines(shift: bool) -> list[str]:
    return [
        f"pair_style morse {MORSE['cutoff']}",
        f"pair_coeff 1 1 {MORSE['D']} {MORSE['alpha']} {MORSE['r0']}",
        f"pair_modify shift {'yes' if shift else 'no'}",
    ]


CASES = {
    "lj": (lambda shift: LennardJones(**LJ, shift=shift), lj_lines, "Ar", 5.26),
    "morse": (lambda shift: Morse(**MORSE, shift=shift), morse_lines, "Cu", 3.615),
}


def evaluate(model, structures: list[Atoms], dtype=torch.float64) -> list[dict]:
    """The model on all structures as one batch, split into one numpy dict per system."""
    state = atoms_to_state(structures, dtype=dtype)
    out = model(state)
    bounds = np.cumsum([0] + [len(s) for s in structures])
    return [
        {
            "energy": out["energy"][k].item(),
            "forces": out["forces"][bounds[k] : bounds[k + 1]].detach().double().numpy(),
            "stress": out["stress"][k].detach().double().numpy(),
        }
        for k in range(len(structures))
    ]


def relative_differences(got: list[dict], ref: list[dict]) -> dict[str, float]:
    """Largest |Δ| over the structures, relative to each structure's energy, to its largest
    force component and to its largest stress component (a structure LAMMPS gives no stress,
    not periodic in every direction, must have none from the model either)."""
    worst = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    for g, r in zip(got, ref):
        worst["energy"] = max(worst["energy"], abs(g["energy"] - r["energy"]) / abs(r["energy"]))
        worst["forces"] = max(worst["forces"], np.abs(g["forces"] - r["forces"]).max() / np.abs(r["forces"]).max())
        if r["stress"] is not None:
            scale = np.abs(r["stress"]).max()
            worst["stress"] = max(worst["stress"], np.abs(g["stress"] - r["stress"]).max() / scale)
        else:
            assert not g["stress"].any()
    return worst


def assert_matches(got: list[dict], ref: list[dict], rtol: float = 1e-6, atol_forces: float = 1e-8) -> None:
    for k, (g, r) in enumerate(zip(got, ref)):
        assert g["energy"] == pytest.approx(r["energy"], rel=rtol), f"energy of structure {k}"
        np.testing.assert_allclose(
            g["forces"], r["forces"], rtol=rtol, atol=atol_forces, err_msg=f"forces of structure {k}"
        )
        if r["stress"] is not None:
            scale = np.abs(r["stress"]).max()
            np.testing.assert_allclose(
                g["stress"], r["stress"], rtol=rtol, atol=rtol * scale, err_msg=f"stress of structure {k}"
            )


@pytest.fixture(scope="module")
def crystal_sets():
    return {"lj": crystals("Ar", 5.26, 24, seed=1), "morse": crystals("Cu", 3.615, 24, seed=2)}


# -- against LAMMPS -------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
@pytest.mark.parametrize("name", ["lj", "morse"])
def test_energies_forces_stresses_equal_lammps(tmp_path, crystal_sets, name, shift):
    make, lines, symbol, _ = CASES[name]
    structures = crystal_sets[name]
    cells = np.stack([s.cell.array for s in structures])
    assert sum(np.abs(np.triu(c, 1)).max() > 0.1 for c in cells) >= len(structures) // 3  # frame rotation used
    assert all(32 <= len(s) <= 108 for s in structures)
    ref = lammps_reference(structures, lines(shift), tmp_path, [symbol])
    assert_matches(evaluate(make(shift), structures), ref)


def test_shift_changes_lammps_energy_as_the_model_does(tmp_path, crystal_sets):
    """Guard that the shifted/unshifted comparison is sensitive: the shift moves energies a lot."""
    structures = crystal_sets["morse"][:3]
    plain = lammps_reference(structures, morse_lines(False), tmp_path / "plain", ["Cu"])
    shifted = lammps_reference(structures, morse_lines(True), tmp_path / "shifted", ["Cu"])
    model_gap = [
        a["energy"] - b["energy"]
        for a, b in zip(evaluate(Morse(**MORSE), structures), evaluate(Morse(**MORSE, shift=True), structures))
    ]
    lammps_gap = [a["energy"] - b["energy"] for a, b in zip(plain, shifted)]
    assert min(abs(g) for g in lammps_gap) > 1e-3
    np.testing.assert_allclose(model_gap, lammps_gap, rtol=1e-9)


def test_reference_helper_is_frame_independent(tmp_path):
    """LAMMPS on a rotated copy gives the same energy and co-rotated forces and stress."""
    rng = np.random.default_rng(7)
    atoms = random_crystal("Ar", 5.26, rng, "lower-triangular")
    rot = random_rotation(rng)
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
    base, other = lammps_reference([atoms, turned], lj_lines(False), tmp_path, ["Ar"])
    assert other["energy"] == pytest.approx(base["energy"], rel=1e-12)
    np.testing.assert_allclose(other["forces"], base["forces"] @ rot.T, atol=1e-12)
    np.testing.assert_allclose(other["stress"], rot @ base["stress"] @ rot.T, atol=1e-12)


EPS_ARKR = [[0.0104, 0.0123], [0.0123, 0.0140]]
SIG_ARKR = [[3.40, 3.52], [3.52, 3.65]]


@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
def test_two_species_lj_equals_lammps(tmp_path, shift):
    rng = np.random.default_rng(11)
    structures = []
    for k in range(9):
        atoms = random_crystal("Ar", 5.5, rng, KINDS[k % 3])
        atoms.symbols[rng.random(len(atoms)) < rng.uniform(0.2, 0.8)] = "Kr"
        structures.append(atoms)
    lines = ["pair_style lj/cut 9.0"]
    lines += [f"pair_coeff {i + 1} {j + 1} {EPS_ARKR[i][j]} {SIG_ARKR[i][j]}" for i in range(2) for j in range(i, 2)]
    lines += [f"pair_modify shift {'yes' if shift else 'no'}"]
    ref = lammps_reference(structures, lines, tmp_path, ["Ar", "Kr"])
    model = LennardJones(EPS_ARKR, SIG_ARKR, 9.0, species=(18, 36), shift=shift)
    got = evaluate(model, structures)
    assert_matches(got, ref)
    # the species order of the model's tables is free: Kr first gives the same numbers
    flipped = LennardJones(np.flip(EPS_ARKR).copy(), np.flip(SIG_ARKR).copy(), 9.0, species=(36, 18), shift=shift)
    assert_matches(evaluate(flipped, structures), got, rtol=1e-12, atol_forces=1e-13)


# -- mixed periodicity -------------------------------------------------------------------------
def mixed_structures() -> list[Atoms]:
    """A periodic crystal; a slab periodic along a and b only, whose third cell vector is
    shorter than the slab is thick (treating it as periodic would overlap atoms); a
    rotated slab periodic along b and c only with a zero first cell vector; a cluster in
    a cell smaller than itself plus the cutoff; a small cluster with a zero cell."""
    rng = np.random.default_rng(5)
    crystal = random_crystal("Ar", 5.26, rng, "general")
    slab = fcc111("Ar", size=(3, 3, 4), a=5.26, vacuum=None, periodic=False)  # cell c is zero
    slab.rattle(0.1, seed=1)
    side = slab.copy()
    side.set_cell(side.cell.array[[2, 0, 1]], scale_atoms=False)
    side.pbc = (False, True, True)
    side.set_cell(side.cell.array @ random_rotation(rng).T, scale_atoms=True)
    slab.cell[2] = [0.0, 0.0, 6.0]
    slab.pbc = (True, True, False)
    cluster = random_crystal("Ar", 5.26, rng, "general")
    cluster.pbc = False
    molecule = Icosahedron("Ar", 2, latticeconstant=5.26)
    molecule.rattle(0.1, seed=2)
    assert not molecule.cell.array.any() and not molecule.pbc.any()
    return [crystal, slab, side, cluster, molecule]


@pytest.mark.parametrize("name", ["lj", "morse"])
def test_mixed_periodicity_batch_equals_single_systems_and_lammps(tmp_path, name):
    make, lines, symbol, _ = CASES[name]
    structures = mixed_structures()
    if symbol != "Ar":  # same geometry scaled to copper
        for atoms in structures:
            atoms.set_cell(atoms.cell.array * 3.615 / 5.26, scale_atoms=True)
            atoms.symbols[:] = symbol
    model = make(False)
    batch = evaluate(model, structures)
    alone = [evaluate(model, [s])[0] for s in structures]
    for b, a in zip(batch, alone):
        assert b["energy"] == pytest.approx(a["energy"], rel=1e-13)
        np.testing.assert_allclose(b["forces"], a["forces"], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(b["stress"], a["stress"])
    for got in batch[1:]:
        assert not got["stress"].any()  # not periodic in all directions: no stress
    # periodicity matters: the slab and the cluster differ from their all-periodic selves
    for k in (1, 3):
        periodic = structures[k].copy()
        periodic.pbc = True
        assert abs(evaluate(model, [periodic])[0]["energy"] - batch[k]["energy"]) > 0.1
    assert_matches(batch, lammps_reference(structures, lines(False), tmp_path, [symbol]))


# -- precision ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lj", "morse"])
def test_float32_energies_agree_with_float64(crystal_sets, name):
    make, *_ = CASES[name]
    structures = crystal_sets[name][:9]
    model = make(True)
    state32 = atoms_to_state(structures, dtype=torch.float32)
    out32 = model(state32)
    assert all(v.dtype == torch.float32 for v in out32.values())
    e64 = np.array([r["energy"] for r in evaluate(model, structures)])
    e32 = out32["energy"].detach().double().numpy()
    np.testing.assert_allclose(e32, e64, rtol=1e-5)
    f64 = np.concatenate([r["forces"] for r in evaluate(model, structures)])
    np.testing.assert_allclose(out32["forces"].detach().double().numpy(), f64, rtol=1e-3, atol=1e-4 * np.abs(f64).max())


# -- finite differences -------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
@pytest.mark.parametrize("name", ["lj", "morse"])
def test_forces_are_minus_energy_gradient(crystal_sets, name, shift):
    make, *_ = CASES[name]
    atoms = far_from_cutoff(crystal_sets[name], make(shift).cutoff)
    model = make(shift)
    from form_checks import check_forces_against_energy_differences  # here: form_checks imports this module

    rng = np.random.default_rng(3)
    picks = [(int(rng.integers(len(atoms))), int(rng.integers(3))) for _ in range(8)]
    check_forces_against_energy_differences(model, atoms, picks, h=1e-4)


@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
@pytest.mark.parametrize("name", ["lj", "morse"])
def test_stress_is_strain_derivative_of_energy(crystal_sets, name, shift):
    make, *_ = CASES[name]
    atoms = far_from_cutoff(crystal_sets[name], make(shift).cutoff)
    model = make(shift)
    h = 1e-5
    components = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    strained = []
    for a, b in components:
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] += sign * h / 2
            eps[b, a] += sign * h / 2
            moved = atoms.copy()
            moved.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            strained.append(moved)
    energies = np.array([r["energy"] for r in evaluate(model, strained)])
    numeric = (energies[0::2] - energies[1::2]) / (2 * h) / atoms.get_volume()
    stress = evaluate(model, [atoms])[0]["stress"]
    analytic = np.array([stress[a, b] for a, b in components])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6 * np.abs(analytic).max())
    np.testing.assert_allclose(stress, stress.T, atol=1e-15)


# -- parameter gradients -------------------------------------------------------------------------
def _quantities(model, state, atom: int, comp: int) -> list[torch.Tensor]:
    out = model(state)
    return [out["energy"].sum(), out["forces"][atom, comp], out["stress"][0, 0, 1]]


@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
@pytest.mark.parametrize("name,params", [("lj", ["epsilon", "sigma"]), ("morse", ["D", "alpha", "r0"])])
def test_parameter_gradients_match_finite_differences(crystal_sets, name, params, shift):
    make, *_ = CASES[name]
    structures = crystal_sets[name][:3]
    model = make(shift)
    state = atoms_to_state(structures)
    atom, comp = 5, 1
    tensors = [getattr(model, p) for p in params]
    quantities = _quantities(model, state, atom, comp)
    all_grads = [torch.autograd.grad(q, tensors, retain_graph=True) for q in quantities]
    for q_index, grads in enumerate(all_grads):
        for param, tensor, grad in zip(params, tensors, grads):
            h = 1e-5 * float(tensor.detach()[0, 0])
            values = []
            with torch.no_grad():
                for sign in (1, -1):
                    tensor.add_(sign * h)
                    values.append(_quantities(model, state, atom, comp)[q_index].item())
                    tensor.sub_(sign * h)
            numeric = (values[0] - values[1]) / (2 * h)
            assert grad[0, 0].item() == pytest.approx(numeric, rel=1e-6, abs=1e-10), (param, q_index)


def test_two_species_table_gradient_matches_symmetric_finite_difference():
    """d E / d table[0,1] + d E / d table[1,0] is the derivative along a symmetric change."""
    rng = np.random.default_rng(13)
    atoms = random_crystal("Ar", 5.5, rng, "general")
    atoms.symbols[::3] = "Kr"
    state = atoms_to_state([atoms])
    model = LennardJones(EPS_ARKR, SIG_ARKR, 9.0, species=(18, 36))
    for name in ("epsilon", "sigma"):
        table = getattr(model, name)
        grad = torch.autograd.grad(model(state)["energy"].sum(), table)[0]
        for i, j in [(0, 0), (0, 1), (1, 1)]:
            h = 1e-5 * float(table.detach()[i, j])
            values = []
            with torch.no_grad():
                for sign in (1, -1):
                    table[i, j] += sign * h
                    if i != j:
                        table[j, i] += sign * h
                    values.append(model(state)["energy"].sum().item())
                    table[i, j] -= sign * h
                    if i != j:
                        table[j, i] -= sign * h
            numeric = (values[0] - values[1]) / (2 * h)
            analytic = grad[i, j] + (grad[j, i] if i != j else 0)
            assert analytic.item() == pytest.approx(numeric, rel=1e-6), (name, i, j)


def test_lj_tail_correction_equals_lammps_pair_modify_tail(tmp_path):
    structures = crystals("Ar", 5.26, 6, seed=21)
    model = LennardJones(**LJ, tail_correction=True)
    ref = lammps_reference(structures, model.lammps_commands(["Ar"]), tmp_path, ["Ar"])
    assert_matches(evaluate(model, structures), ref)
    plain = evaluate(LennardJones(**LJ), structures)
    # the correction is a real, negative energy (attractive tail) that LAMMPS also counts
    assert all(t["energy"] < p["energy"] for t, p in zip(evaluate(model, structures), plain))
