"""The compiled CPU loops (tabulated EAM, Lennard-Jones) against the torch blocks.

The two are independent implementations of LAMMPS's interpolation: the compiled loops
(the default on a CPU without a graph) and the torch blocks (the GPU path, ``compiled =
False``). They must agree to rounding on batches that mix periodicities, small cells and
species, in float64 and float32, on one thread and split over several; LAMMPS itself is
compared in tests/test_eam.py through the default path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_scaling import batch

from chemfit_core.engine import compiled
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.models.eam import EAM
from chemfit_core.models.pair import LennardJones
from chemfit_core.models.registry import potential_file

FILES = {"Cu": ("Cu_mishin1.eam.alloy", None), "CuNi": ("CuNi.eam.alloy", "Ni")}


def evaluate(model: EAM, structures, compiled: bool, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    model.compiled = compiled
    with torch.no_grad():
        return model(atoms_to_state(structures, dtype=dtype), compute_stress=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(FILES))
def test_compiled_loops_equal_torch_blocks(name, dtype):
    file, second = FILES[name]
    model = EAM.from_setfl(potential_file(file)).to(dtype)
    structures = batch("Cu", 3.615, second)
    torch_blocks = evaluate(model, structures, False, dtype)
    compiled = evaluate(model, structures, True, dtype)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for key in ("energy", "forces", "stress"):
        ours, ref = compiled[key], torch_blocks[key]
        assert ours.dtype == dtype and ours.shape == ref.shape
        scale = float(ref.abs().max())
        np.testing.assert_allclose(ours.double(), ref.double(), rtol=0, atol=tol * scale, err_msg=key)
    assert float(torch_blocks["forces"].abs().max()) > 0.1  # rattled: the comparison has forces to compare


def test_threads_split_the_list_and_give_the_same_sums(monkeypatch):
    model = EAM.from_setfl(potential_file("CuNi.eam.alloy"))
    structures = batch("Cu", 3.615, "Ni")
    one = evaluate(model, structures, True, torch.float64)
    monkeypatch.setattr(compiled, "MIN_PAIRS_PER_THREAD", 100)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert len(compiled.thread_ranges(10_000)) == 3
        split = evaluate(model, structures, True, torch.float64)
    finally:
        torch.set_num_threads(threads)
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(split[key], one[key], rtol=1e-12, atol=1e-12 * float(one[key].abs().max()))


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("second", [None, "Kr"])
def test_compiled_lennard_jones_equals_torch_blocks(second, dtype, shift):
    if second:
        model = LennardJones(
            epsilon=[[0.0104, 0.0124], [0.0124, 0.0140]],
            sigma=[[3.40, 3.52], [3.52, 3.65]],
            cutoff=8.5,
            species=(18, 36),
            shift=shift,
        )
    else:
        model = LennardJones(0.0104, 3.40, cutoff=8.5, shift=shift)
    model = model.to(dtype)
    structures = batch("Ar", 5.26, second)
    results = []
    for use_loop in (False, True):
        model.compiled = use_loop
        with torch.no_grad():
            results.append(model(atoms_to_state(structures, dtype=dtype), compute_stress=True))
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for key in ("energy", "forces", "stress"):
        ref, ours = results[0][key], results[1][key]
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours.double(), ref.double(), rtol=0, atol=tol * float(ref.abs().max()), err_msg=key)


@pytest.mark.parametrize("name", ["lj", "eam"])
def test_coincident_atoms_give_non_finite_results_not_an_exception(name):
    from ase import Atoms

    model = EAM.from_setfl(potential_file("Cu_mishin1.eam.alloy")) if name == "eam" else LennardJones(0.0104, 3.40, 8.5)
    symbol = "Cu" if name == "eam" else "Ar"
    atoms = Atoms(symbol * 3, positions=[[0, 0, 0], [0, 0, 0], [2.5, 0, 0]], cell=[12, 12, 12], pbc=True)
    state = atoms_to_state([atoms], dtype=torch.float64)
    assert compiled.runs_compiled(model, state, graph=False)
    with torch.no_grad():
        out = model(state)
    assert not bool(torch.isfinite(out["energy"]).all()) or not bool(torch.isfinite(out["forces"]).all())


def test_a_non_finite_position_takes_the_torch_path():
    model = LennardJones(0.0104, 3.40, 8.5)
    structures = batch("Ar", 5.26, None)
    state = atoms_to_state(structures, dtype=torch.float64)
    assert compiled.runs_compiled(model, state, graph=False)
    state.positions[1, 0] = float("nan")
    assert not compiled.runs_compiled(model, state, graph=False)
    model.compiled = False
    assert not compiled.runs_compiled(model, atoms_to_state(structures, dtype=torch.float64), graph=False)
