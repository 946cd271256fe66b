"""FIRE 2.0 takes LAMMPS's steps: ``fire_flavor="fire2"`` against ``min_style fire`` on the same cells."""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest
import torch
from ase.build import bulk

from chemfit_core.engine.fire import Fire2Parameters, fire_init, fire_step
from chemfit_core.engine.relax import relax_structures
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.external.lammps import lammps_command, lammps_env, potentials_dir
from chemfit_core.models import LennardJones
from chemfit_core.models.eam import EAM

FMAX = 1e-3
MIN_MODIFY = (
    "min_modify norm max integrator eulerimplicit tmax 10.0 tmin 0.02 delaystep 20 dtgrow 1.1 "
    "dtshrink 0.5 alpha0 0.25 alphashrink 0.99 halfstepback yes abcfire no dmax 0.1"
)


def argon(seed: int):
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((3, 3, 2))
    atoms.rattle(stdev=0.08, seed=seed)
    return atoms, LennardJones(0.0104, 3.40, cutoff=8.5), ["pair_style lj/cut 8.5", "pair_coeff 1 1 0.0104 3.40"]


def copper(seed: int):
    atoms = bulk("Cu", "fcc", a=3.615, cubic=True).repeat((3, 3, 3))
    atoms.rattle(stdev=0.1, seed=seed)
    file = potentials_dir() / "Cu_mishin1.eam.alloy"
    # LAMMPS's eam/alloy takes the mass from the file (63.55, ASE has 63.546): FIRE 2.0 moves by f/m
    atoms.set_masses([float(file.read_text().splitlines()[5].split()[1])] * len(atoms))
    return atoms, EAM.from_setfl(file), ["pair_style eam/alloy", f"pair_coeff * * {file} Cu"]


def lammps_fire(atoms, pair_lines, workdir) -> tuple[int, float]:
    """LAMMPS ``min_style fire`` with its defaults spelled out: (iterations, final energy eV)."""
    from ase.io import write

    write(workdir / "s.data", atoms, format="lammps-data", atom_style="atomic", masses=True)
    lines = ["units metal", "atom_style atomic", "read_data s.data", *pair_lines, "timestep 0.001", "thermo 0"]
    lines += ["thermo_modify format float %20.15g", "min_style fire", MIN_MODIFY, f"minimize 0 {FMAX} 10000 100000"]
    (workdir / "in.fire").write_text("\n".join(lines) + "\n")
    subprocess.run(lammps_command("in.fire", "log.fire"), cwd=workdir, env={**os.environ, **lammps_env()}, check=True)
    log = (workdir / "log.fire").read_text()
    assert "Stopping criterion = force tolerance" in log
    iterations = int(re.search(r"Iterations, force evaluations = (\d+)", log).group(1))
    final = float(re.search(r"Energy initial, next-to-last, final =\s*\n\s*\S+\s+\S+\s+(\S+)", log).group(1))
    return iterations, final


@pytest.mark.parametrize("make", [argon, copper], ids=["argon-lj", "copper-eam"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fire2_takes_the_steps_of_lammps_min_style_fire(tmp_path, make, seed):
    atoms, model, pair_lines = make(seed)
    steps, energy = lammps_fire(atoms, pair_lines, tmp_path)
    ours = relax_structures([atoms], model, fmax=FMAX, engine="torch", fire_flavor="fire2", progress_every_s=None)
    assert bool(ours.converged[0])
    assert int(ours.n_steps[0]) == steps
    assert float(ours.energies[0]) == pytest.approx(energy, rel=1e-9)
    # ASE's flavour reaches the same minimum on another path
    ase = relax_structures([atoms], model, fmax=FMAX, engine="torch", progress_every_s=None)
    assert int(ase.n_steps[0]) != steps
    assert abs(float(ase.energies[0]) - energy) / len(atoms) < 1e-5


def test_fire2_in_a_batch_takes_each_systems_own_steps():
    structures = [argon(seed)[0] for seed in range(3)]
    model = argon(0)[1]
    alone = [
        int(
            relax_structures([a], model, fmax=FMAX, engine="torch", fire_flavor="fire2", progress_every_s=None).n_steps[
                0
            ]
        )
        for a in structures
    ]
    batch = relax_structures(structures, model, fmax=FMAX, engine="torch", fire_flavor="fire2", progress_every_s=None)
    assert batch.n_steps.tolist() == alone and len(set(alone)) > 1


def test_fire2_bad_combinations_are_named():
    atoms, model, _ = argon(0)
    with pytest.raises(ValueError, match="fixed cells"):
        relax_structures([atoms], model, relax_cell=True, engine="torch", fire_flavor="fire2")
    with pytest.raises(ValueError, match="fire_flavor must be one of"):
        relax_structures([atoms], model, engine="torch", fire_flavor="vv_fire")
    state = fire_init(atoms_to_state([atoms]), model, fire_flavor="fire2")
    with pytest.raises(TypeError, match="unknown parameters"):
        fire_step(state, model, Fire2Parameters(), dt_max=1.0)
    fire_step(state, model, Fire2Parameters(), dmax=0.05)
    moved = (state.positions - torch.tensor(atoms.positions)).abs().max()
    assert 0 < float(moved) <= 0.05 + 1e-12
    assert np.isfinite(state.energy.numpy()).all()
