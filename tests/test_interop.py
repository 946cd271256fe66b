"""Interop both ways: torch-sim-style models in our engine, and our models as ASE calculators.

(a) Any model with torch-sim's ``ModelInterface`` contract (duck typed: ``model(state)``
returning energy/forces/stress, ``device``/``dtype``/``compute_stress`` attributes, no
``compute_stress=`` keyword, maybe no ``.to``) runs in ``relax_structures`` and the
batchers. (b) ``TorchCalculator`` gives ASE our models; checked against ASE's own
LennardJones and EAM calculators on the same structures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.eam import EAM as AseEAM
from ase.calculators.lj import LennardJones as AseLJ
from ase.cluster import Icosahedron
from ase.optimize import BFGS
from ase.units import Bohr, Hartree

from chemfit_core.engine import (
    BinningAutoBatcher,
    InFlightAutoBatcher,
    TorchCalculator,
    bfgs_init,
    bfgs_step,
    lbfgs_init,
    lbfgs_step,
)
from chemfit_core.engine.relax import relax_structures
from chemfit_core.external.lammps import potentials_dir
from chemfit_core.models import EAM, LennardJones
from chemfit_core.units import LAMMPS_HARTREE_BOHR

EPS, SIG, RC = 0.0104, 3.40, 8.5


class WrappedModel:
    """torch-sim's contract and nothing more: ``model(state)`` (no keywords), fixed device/dtype, no ``.to``."""

    def __init__(self, inner, dtype=torch.float64):
        self._inner = inner.to(dtype=dtype)
        self.device, self.dtype = torch.device("cpu"), dtype
        self.compute_stress, self.compute_forces = True, True
        self.memory_scales_with = "n_atoms"
        self.calls = 0

    def __call__(self, state):
        self.calls += 1
        out = self._inner(state)
        return {"energy": out["energy"], "forces": out["forces"], "stress": out["stress"]}


class ClusterLJ(torch.nn.Module):
    """An independent torch-sim-style module: all-pairs LJ by autograd, shifted at ``rc`` like ASE's.

    ``device``/``dtype`` are properties whose setters refuse (as ModelInterface's);
    ``.to`` must never be called. Non-periodic systems only (the stress is zero).
    """

    def __init__(self, rc=20.0):
        super().__init__()
        self.rc = rc
        self._device, self._dtype = torch.device("cpu"), torch.float64
        self._compute_stress, self._compute_forces = True, True

    @property
    def device(self):
        return self._device

    @device.setter
    def device(self, value):
        raise NotImplementedError("fixed")

    @property
    def dtype(self):
        return self._dtype

    @dtype.setter
    def dtype(self, value):
        raise NotImplementedError("fixed")

    compute_stress = property(lambda self: self._compute_stress)

    def to(self, *args, **kwargs):
        raise AssertionError("a model that fixes its device must not be moved")

    def forward(self, state, **kwargs):
        positions = state.positions.detach().requires_grad_(True)
        r = torch.cdist(positions, positions)
        same = state.system_idx.unsqueeze(0) == state.system_idx.unsqueeze(1)
        pair = same & torch.triu(torch.ones_like(same), diagonal=1) & (r < self.rc)
        sr6 = (SIG / r[pair]) ** 6
        shift = 4 * EPS * ((SIG / self.rc) ** 12 - (SIG / self.rc) ** 6)
        pair_energy = 4 * EPS * (sr6 * sr6 - sr6) - shift
        owner = state.system_idx.unsqueeze(1).expand_as(r)[pair]
        energy = torch.zeros(state.n_systems, dtype=r.dtype).index_add(0, owner, pair_energy)
        (grad,) = torch.autograd.grad(energy.sum(), positions)
        stress = torch.zeros(state.n_systems, 3, 3, dtype=r.dtype)
        return {"energy": energy.detach(), "forces": -grad, "stress": stress}


def lj():
    return LennardJones(EPS, SIG, RC, shift=True)


def argon():
    out = []
    for k, repeat in enumerate([(2, 2, 2), (3, 2, 2)]):
        atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(repeat)
        atoms.rattle(0.06, seed=k)
        out.append(atoms)
    tri = bulk("Ar", "fcc", a=5.26).repeat((3, 3, 3))
    tri.rattle(0.05, seed=11)
    return out + [tri]


def clusters():
    out = []
    for seed in (1, 2):
        atoms = Icosahedron("Ar", 2, latticeconstant=5.3)
        atoms.rattle(0.1, seed=seed)
        out.append(atoms)
    return out


# -- (a) torch-sim-style models in our engine ---------------------------------------------------


@pytest.mark.parametrize("optimizer", ["fire", "bfgs", "lbfgs"])
def test_a_duck_typed_model_relaxes_exactly_like_the_model_it_wraps(optimizer):
    duck = WrappedModel(lj())
    common = {"optimizer": optimizer, "progress_every_s": None, "engine": "torch", "fmax": 1e-3}
    ours = relax_structures(argon(), lj(), device="cpu", **common)
    theirs = relax_structures(argon(), duck, **common)
    assert theirs.converged.all() and duck.calls > 0 and theirs.device == "cpu"
    assert list(theirs.n_steps) == list(ours.n_steps)
    np.testing.assert_allclose(theirs.energies, ours.energies, rtol=0, atol=1e-12)
    for a, b in zip(theirs.structures, ours.structures):
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), rtol=0, atol=1e-14)


def test_a_duck_typed_model_relaxes_cells():
    atoms = [bulk("Ar", "fcc", a=5.6, cubic=True).repeat((2, 2, 2))]
    for optimizer in ("fire", "bfgs"):
        common = {"optimizer": optimizer, "relax_cell": True, "fmax": 1e-4, "progress_every_s": None}
        ours = relax_structures(atoms, lj(), device="cpu", **common)
        theirs = relax_structures(atoms, WrappedModel(lj()), **common)
        assert theirs.converged[0] and theirs.n_steps[0] == ours.n_steps[0]
        assert theirs.energies[0] == pytest.approx(ours.energies[0], abs=1e-12)


def test_an_independent_torch_sim_style_module_matches_ases_bfgs():
    model = ClusterLJ()
    result = relax_structures(clusters(), model, optimizer="bfgs", fmax=1e-3, progress_every_s=None)
    assert result.converged.all()
    for k, atoms in enumerate(clusters()):
        atoms.calc = AseLJ(epsilon=EPS, sigma=SIG, rc=model.rc, smooth=False)
        opt = BFGS(atoms, logfile=None)
        opt.run(fmax=1e-3, steps=500)
        assert result.n_steps[k] == opt.nsteps
        assert abs(result.energies[k] - atoms.get_potential_energy()) / len(atoms) <= 1e-6


def test_duck_typed_models_run_in_both_batchers_with_the_quasi_newton_optimizers():
    duck = WrappedModel(lj())
    states = [bfgs_init(s, duck) for s in _singles(argon())]
    batcher = InFlightAutoBatcher(duck, memory_scales_with="n_atoms", max_memory_scaler=160)
    batcher.load_states(states)
    state, completed = batcher.next_batch(None, None)
    while state is not None:
        state = bfgs_step(state, duck)
        state, done = batcher.next_batch(state, state.converged(0.01))
        completed.extend(done)
    assert len(completed) == 3 and all(bool(s.converged(0.01)[0]) for s in completed)
    binning = BinningAutoBatcher(duck, memory_scales_with="n_atoms", max_memory_scaler=160)
    binning.load_states([lbfgs_init(s, duck) for s in _singles(argon())])
    finished = []
    for batch, _ in binning:
        for _ in range(5):
            batch = lbfgs_step(batch, duck)
        finished.extend(batch.split())
    assert [int(s.n_steps[0]) for s in binning.restore_original_order(finished)] == [5, 5, 5]


def _singles(structures):
    from chemfit_core.engine.state import atoms_to_state

    return [atoms_to_state(a) for a in structures]


def test_a_model_that_fixes_its_placement_is_not_moved_and_says_so():
    duck = WrappedModel(lj())
    result = relax_structures(argon()[:1], duck, progress_every_s=None)  # no device/dtype: the model's
    assert result.device == "cpu" and result.converged[0]
    with pytest.raises(ValueError, match="cannot be converted"):
        relax_structures(argon()[:1], duck, dtype=torch.float32, progress_every_s=None)
    with pytest.raises(ValueError, match="cannot be moved"):
        relax_structures(argon()[:1], ClusterLJ(), device="meta", progress_every_s=None)


# -- (b) our models as ASE calculators ------------------------------------------------------------


def assert_close(ours, theirs, rel, what):
    scale = max(np.abs(theirs).max(), 1e-300)
    assert np.abs(np.asarray(ours) - np.asarray(theirs)).max() <= rel * scale, what


def compare(atoms, ours, theirs, rel, stress=True):
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = ours, theirs
    assert_close(a.get_potential_energy(), b.get_potential_energy(), rel, "energy")
    assert_close(a.get_forces(), b.get_forces(), rel, "forces")
    if stress:
        assert_close(a.get_stress(), b.get_stress(), rel, "stress")


def test_lennard_jones_matches_ases_unsmoothed_lennard_jones():
    # ASE's LennardJones(smooth=False) shifts every pair inside rc by E(rc): our shift=True
    slab = fcc111("Ar", size=(3, 3, 4), a=5.26, vacuum=6.0)
    slab.rattle(0.05, seed=3)
    for atoms in [*argon(), slab, *clusters()]:
        periodic = bool(atoms.pbc.all())
        ase_lj = AseLJ(epsilon=EPS, sigma=SIG, rc=RC, smooth=False)
        compare(atoms, TorchCalculator(lj(), device="cpu"), ase_lj, 1e-10, stress=periodic)
    slab.calc = TorchCalculator(lj(), device="cpu")
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()  # only for cells periodic in all three directions
    unshifted = argon()[0]
    unshifted.calc = TorchCalculator(LennardJones(EPS, SIG, RC), device="cpu")
    reference = argon()[0]
    reference.calc = AseLJ(epsilon=EPS, sigma=SIG, rc=RC, smooth=False)
    assert unshifted.get_potential_energy() < reference.get_potential_energy() - 1e-3  # the shift matters


def copper(seed):
    atoms = bulk("Cu", "fcc", a=3.615, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_setfl_eam_matches_ases_eam():
    """Cu_mishin1 tabulates on 10001 points: both interpolants agree to 1e-8 (measured ~3e-10)."""
    path = potentials_dir() / "Cu_mishin1.eam.alloy"
    for seed in (1, 2):
        compare(copper(seed), TorchCalculator(EAM.from_setfl(path), device="cpu"), AseEAM(potential=str(path)), 1e-8)


def test_funcfl_eam_matches_ases_eam_up_to_its_constant_and_grid():
    """Cu_u3 (funcfl) against ASE, with two documented differences.

    1. r·φ = c·Z(r)²: LAMMPS (and our EAM) take c = 27.2·0.529 eV·Å, ASE CODATA's
       Hartree·Bohr (7.5e-4 larger); ASE's table is rescaled to LAMMPS's c here.
    2. The file tabulates on 500 points, dr = 0.01 Å. We interpolate as LAMMPS does
       (per-interval cubics with five-point slopes, through r·φ), ASE with scipy's global
       cubic splines (through φ = r·φ/r): energies agree to 1e-8 relative, but the
       derivatives of two different cubics on a coarse grid differ by O(dr³ f⁗) —
       measured up to 1e-4 of the largest force and 4e-5 of the stress. The bounds
       (3e-4, 3e-4) hold those with margin; the polynomial test below shows the
       assembly agrees to 1e-8 where both interpolants are exact.
    """
    path = potentials_dir() / "Cu_u3.eam"
    for seed in (1, 2):
        atoms = copper(seed)
        raw = atoms.copy()
        raw.calc = AseEAM(potential=str(path))
        ase_eam = AseEAM(potential=str(path))
        ase_eam.rphi_data *= LAMMPS_HARTREE_BOHR / (Bohr * Hartree)
        ase_eam.set_splines()
        ours = atoms.copy()
        ours.calc = TorchCalculator(EAM.from_funcfl(path), device="cpu")
        reference = atoms.copy()
        reference.calc = ase_eam
        assert_close(ours.get_potential_energy(), reference.get_potential_energy(), 1e-8, "energy")
        assert_close(ours.get_forces(), reference.get_forces(), 3e-4, "forces")
        assert_close(ours.get_stress(), reference.get_stress(), 3e-4, "stress")
        # without the rescaling the constant alone shows, far above the interpolation's effect
        assert abs(ours.get_potential_energy() - raw.get_potential_energy()) > 1e-2


def write_polynomial_funcfl(path, nrho=2000, drho=0.01, nr=2400, dr=0.0025, cutoff=4.8):
    """A funcfl file whose F(ρ), ρ(r), r·φ(r) are cubics and φ(r) a quadratic, all smooth at the cutoff.

    Both interpolants reproduce such tables exactly away from the grids' last two
    intervals (the grids here run well past the cutoff and the densities reached).
    """
    rho = np.arange(nrho) * drho
    r = np.arange(nr) * dr
    embedding = -2.0 * rho + 0.12 * rho**2 - 0.003 * rho**3
    density = 0.05 * (cutoff - r) ** 3
    rphi = 0.1 * r * (cutoff - r) ** 2
    charge = np.sqrt(rphi / LAMMPS_HARTREE_BOHR)

    def block(values):
        return "\n".join(" ".join(repr(float(v)) for v in values[k : k + 5]) for k in range(0, len(values), 5))

    header = f"polynomial test EAM\n29 63.55 3.615 FCC\n{nrho} {drho!r} {nr} {dr!r} {cutoff!r}\n"
    path.write_text(header + "\n".join(block(v) for v in (embedding, charge, density)) + "\n")


def test_eam_assembly_matches_ase_where_both_interpolate_exactly(tmp_path):
    path = tmp_path / "poly.eam"
    write_polynomial_funcfl(path)
    for seed in (1, 2):
        ase_eam = AseEAM(potential=str(path))
        ase_eam.rphi_data *= LAMMPS_HARTREE_BOHR / (Bohr * Hartree)  # LAMMPS's funcfl constant, as above
        ase_eam.set_splines()
        compare(copper(seed), TorchCalculator(EAM.from_funcfl(path), device="cpu"), ase_eam, 1e-8)


def test_ase_optimisers_drive_our_models_through_the_calculator():
    atoms = argon()[0]
    reference = atoms.copy()
    atoms.calc = TorchCalculator(lj(), device="cpu")
    reference.calc = AseLJ(epsilon=EPS, sigma=SIG, rc=RC, smooth=False)
    steps = []
    for target in (atoms, reference):
        opt = BFGS(target, logfile=None)
        opt.run(fmax=1e-3)
        steps.append(opt.nsteps)
    assert steps[0] == steps[1]
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-10)
