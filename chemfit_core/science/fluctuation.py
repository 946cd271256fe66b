"""Parameter derivatives of ensemble averages from one simulation (fluctuation formula).

For an average ⟨A⟩ in the (NPT) ensemble of a potential U(θ),

    d⟨A⟩/dθ = ⟨∂A/∂θ⟩ − β (⟨A ∂U/∂θ⟩ − ⟨A⟩⟨∂U/∂θ⟩),     β = 1/(k_B T),

as ForceBalance uses it: one run gives the averages and their gradients. ∂U/∂θ
of every saved frame comes from the torch model's autograd; the model's energy
of each frame is checked against LAMMPS's, so the two cannot silently disagree.

Derivatives are taken at a fixed cutoff, also where the cutoff scales with a parameter
(``lj/cut`` with ``cutoff_sigma``): moving the cutoff moves pairs between the explicit
sum and the tail correction, and with g(r_c) ≈ 1 the two changes cancel on average.
A one-run NPT check (tests/test_fluctuation.py) recovers corresponding-states
scaling of LJ argon this way: d ln ρ/d ln σ = −3.2 (exact: −3), d ln ΔHvap/d ln σ ≈ 0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chemfit_core.engine.state import atoms_to_state
from chemfit_core.errors import ChemFitError


def read_frames(dump_path: Path | str, species: Sequence[str]) -> list[Any]:
    """Frames of a LAMMPS text dump (``id type x y z``) as ``ase.Atoms`` with ``info['timestep']``.

    ``species[k]`` is the element of LAMMPS type k + 1.
    """
    from ase.io import read

    frames = read(dump_path, index=":", format="lammps-dump-text", specorder=list(species))
    if not frames:
        raise ChemFitError(f"{dump_path}: no frames")
    return frames


def energy_derivatives(
    frames: Sequence[Any],
    model: torch.nn.Module,
    model_tensors: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]],
    theta: Mapping[str, float],
    dtype: torch.dtype = torch.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Energy ``U`` (eV, ``[n_frames]``) and ``∂U/∂θ`` (``[n_frames, n_params]``) of each frame.

    ``model_tensors`` maps the fit's parameters (tensors) onto the model's own
    tensors, so the derivatives are with respect to the fit's parameters and units.
    """
    names = list(theta)
    energies, grads = [], []
    for atoms in frames:
        x = torch.tensor([theta[n] for n in names], dtype=dtype, requires_grad=True)
        state = atoms_to_state(atoms, dtype=dtype)
        params = model_tensors(dict(zip(names, x)))
        energy = torch.func.functional_call(model, params, (state,), {"compute_stress": False})["energy"][0]
        (grad,) = torch.autograd.grad(energy, x)
        energies.append(float(energy.detach()))
        grads.append(grad.numpy())
    return np.asarray(energies), np.asarray(grads)


def fluctuation_gradient(
    observable: np.ndarray, energy_gradient: np.ndarray, beta: float, observable_gradient: np.ndarray | None = None
) -> np.ndarray:
    """d⟨A⟩/dθ from per-frame ``A`` ``[n]``, ``∂U/∂θ`` ``[n, p]`` and optionally ``∂A/∂θ`` ``[n, p]``.

    ``beta`` is 1/(k_B T) in the inverse unit of U.
    """
    a = np.asarray(observable, dtype=float)
    du = np.asarray(energy_gradient, dtype=float)
    covariance = (a[:, None] * du).mean(axis=0) - a.mean() * du.mean(axis=0)
    direct = 0.0 if observable_gradient is None else np.asarray(observable_gradient).mean(axis=0)
    return direct - beta * covariance


def fluctuation_gradient_sem(
    observable: np.ndarray,
    energy_gradient: np.ndarray,
    beta: float,
    observable_gradient: np.ndarray | None = None,
    n_blocks: int = 5,
) -> np.ndarray:
    """Standard error of :func:`fluctuation_gradient` from ``n_blocks`` contiguous blocks."""
    n = len(observable)
    if n < 2 * n_blocks:
        raise ChemFitError(f"{n} frames are too few for {n_blocks} blocks; save frames more often")
    edges = np.linspace(0, n, n_blocks + 1).astype(int)
    blocks = [
        fluctuation_gradient(
            observable[a:b],
            energy_gradient[a:b],
            beta,
            None if observable_gradient is None else observable_gradient[a:b],
        )
        for a, b in zip(edges[:-1], edges[1:])
    ]
    return np.std(blocks, axis=0, ddof=1) / np.sqrt(n_blocks)
