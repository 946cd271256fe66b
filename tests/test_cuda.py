"""CUDA paths: the same models, relaxations and batchers on a GPU equal their CPU results.

These run only where torch sees a CUDA device (the CPU paths are tested everywhere,
against LAMMPS and ASE, in test_pair_models.py, test_eam.py and test_relax.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from chemfit_core.engine.autobatching import InFlightAutoBatcher
from chemfit_core.engine.relax import relax_structures
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.models import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is visible to torch")

SPECS = {
    "lj": ({"form": "lj/cut", "epsilon": 0.0104, "sigma": 3.40, "cutoff": 8.5, "species": ["Ar"]}, "Ar", 5.26),
    "morse": (
        {"form": "morse", "D": 0.3429, "alpha": 1.3588, "r0": 2.866, "cutoff": 9.0, "species": ["Cu"]},
        "Cu",
        3.615,
    ),
    "eam": ({"form": "eam/alloy", "file": "Cu_mishin1.eam.alloy"}, "Cu", 3.615),
}


def cells(symbol: str, a: float, n: int = 6) -> list:
    out = []
    for k in range(n):
        atoms = bulk(symbol, "fcc", a=a, cubic=True).repeat((2 + k % 2, 2, 2))
        atoms.rattle(0.05, seed=k)
        out.append(atoms)
    return out


@pytest.mark.parametrize("name", SPECS)
def test_models_on_cuda_equal_cpu(name):
    spec, symbol, a = SPECS[name]
    structures = cells(symbol, a)
    model = build_model(spec)
    cpu = model(atoms_to_state(structures))
    gpu = model.to("cuda")(atoms_to_state(structures, device="cuda"))
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(gpu[key].cpu().numpy(), cpu[key].detach().numpy(), rtol=1e-10, atol=1e-10)


def test_relaxation_on_cuda_equals_cpu():
    spec, symbol, a = SPECS["lj"]
    structures = cells(symbol, a, 12)
    cpu = relax_structures(structures, build_model(spec), fmax=1e-3, engine="torch", device="cpu")
    gpu = relax_structures(structures, build_model(spec), fmax=1e-3, engine="torch", device="cuda")
    assert gpu.device == "cuda" and cpu.device == "cpu"
    assert gpu.converged.all()
    np.testing.assert_allclose(gpu.energies, cpu.energies, rtol=1e-9)
    np.testing.assert_array_equal(gpu.n_steps, cpu.n_steps)


def test_in_flight_batcher_probes_gpu_memory():
    spec, symbol, a = SPECS["lj"]
    model = build_model(spec).to("cuda")
    states = [atoms_to_state(s, device="cuda") for s in cells(symbol, a, 4)]
    batcher = InFlightAutoBatcher(model, memory_scales_with="n_atoms")
    budget = batcher.load_states(states)
    assert budget is not None and budget >= max(s.n_atoms for s in states)
