"""Parameter derivatives of ensemble averages from one simulation (fluctuation formula).

For an average ⟨A⟩ in the (NPT) ensemble of a potential U(θ),

    d⟨A⟩/dθ = ⟨∂A/∂θ⟩ − β (⟨A ∂U/∂θ⟩ − ⟨A⟩⟨∂U/∂θ⟩),     β = 1/(k_B T),

as ForceBalance uses it: one run gives the averages and their gradients. ∂U/∂θ
of every saved frame comes from the torch model's autograd (:class:`ModelDerivatives`) where
the model equals the template, its energy of each frame checked against LAMMPS's so the two
cannot silently disagree, or from LAMMPS itself for any template (molecules, constraints,
any pair style): central differences of ``rerun`` energies of the same frames
(:class:`chemfit_core.science.rerun.RerunDerivatives`).

In NPT, A and U are functions of the frame (positions and box) only, and the ensemble's
weight is exp(−β(U + p V)) with p the set point: ∂(U + pV)/∂θ = ∂U/∂θ, so no volume
derivative enters; V per frame (for density and p⟨V⟩) comes from the thermo rows.

Derivatives are taken at a fixed cutoff, also where the cutoff scales with a parameter
(``lj/cut`` with ``cutoff_sigma``): moving the cutoff moves pairs between the explicit
sum and the tail correction, and with g(r_c) ≈ 1 the two changes cancel on average.
A one-run NPT check (tests/test_fluctuation.py) recovers corresponding-states
scaling of LJ argon this way: d ln ρ/d ln σ = −3.2 (exact: −3), d ln ΔHvap/d ln σ ≈ 0.1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chemfit_core.engine.state import atoms_to_state
from chemfit_core.errors import ChemFitError

logger = logging.getLogger(__name__)


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


class ModelDerivatives:
    """∂U/∂θ of saved frames from the torch model of a potential form (autograd, exact).

    Only where the model is the template's potential (atomic systems of the form's pair style);
    the caller checks the returned energies against LAMMPS's.
    """

    method = "model"

    def __init__(self, form: Any):
        self.form = form

    def __call__(
        self, parameters: Mapping[str, float], dump: Path, workdir: Path | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(timesteps ``[n]``, U in eV ``[n]``, ∂U/∂θ in eV per parameter unit ``[n, p]``) of the
        frames in ``dump``."""
        frames = read_frames(dump, self.form.species)  # LAMMPS type k + 1 is species[k]
        steps = np.array([int(f.info["timestep"]) for f in frames])
        energy, d_energy = energy_derivatives(frames, self.form.model(parameters), self.form.model_tensors, parameters)
        return steps, energy, d_energy


class FrameDerivatives:
    """∂U/∂θ of a run's frames from the torch model where it reproduces LAMMPS's energies, from
    LAMMPS reruns otherwise (``auto``: both given, the model tried first; a mismatch switches to
    reruns for good, with a warning). Logs once which one is used.

    Args:
        label: the term's name (logs and errors).
        model: a :class:`ModelDerivatives`, or None.
        rerun: a :class:`~chemfit_core.science.rerun.RerunDerivatives`, or None.
    """

    MODEL_RTOL = 1e-7
    """Largest relative difference of the model's frame energies from LAMMPS's."""

    def __init__(self, label: str, model: ModelDerivatives | None, rerun: Any | None):
        self.label = label
        self.model = model
        self.rerun = rerun
        self.source = "model" if model is not None else "rerun" if rerun is not None else None
        self._announced = False

    def __call__(
        self, parameters: Mapping[str, float], thermo: Mapping[str, np.ndarray], dump: Path
    ) -> tuple[np.ndarray, np.ndarray]:
        """(thermo rows of the frames, ∂U/∂θ ``[n, p]`` in eV per parameter unit); the frames' energies
        are checked against the run's ``PotEng`` column (``Step`` matches them to rows)."""
        from chemfit_core.science.rerun import check_rerun_energies

        if self.source == "model":
            steps, energy, d_energy = self.model(parameters, dump)
            rows = thermo_rows(f"{self.label}: {dump}", steps, thermo["Step"])
            lammps_energy = thermo["PotEng"][rows]
            worst = float(np.max(np.abs(energy - lammps_energy) / np.abs(lammps_energy)))
            if worst <= self.MODEL_RTOL:
                self._announce(f"the torch model of {self.model.form.name} (autograd)")
                return rows, d_energy
            if self.rerun is None:
                raise ChemFitError(
                    f"{self.label}: the torch model's frame energies differ from LAMMPS's by up to {worst:.1e} "
                    "(relative): the model and the template disagree (for a template that is not exactly "
                    "the form, take the gradients from LAMMPS reruns: liquid.gradients.method rerun)"
                )
            logger.warning(
                "%s: the torch model's frame energies differ from LAMMPS's by up to %.1e (relative): the "
                "template is not exactly the form %s; gradients from LAMMPS reruns from now on",
                self.label,
                worst,
                self.model.form.name,
            )
            self.source = "rerun"
        if self.rerun is None:
            raise ChemFitError(f"{self.label}: no source of frame energy derivatives")
        steps, energy, d_energy = self.rerun(parameters, dump, dump.parent)
        rows = check_rerun_energies(self.label, steps, energy, thermo["Step"], thermo["PotEng"])
        self._announce(
            f"LAMMPS reruns ({1 + 2 * len(parameters)} of {len(steps)} frames, central differences "
            f"h = {self.rerun.relative_step:g}·|θ|)"
        )
        return rows, d_energy

    def _announce(self, source: str) -> None:
        if not self._announced:
            logger.info("%s: fluctuation gradients with ∂U/∂θ of the frames from %s", self.label, source)
            self._announced = True


def thermo_rows(label: str, steps: np.ndarray, thermo_steps: np.ndarray) -> np.ndarray:
    """Indices of the thermo rows at the frames' ``steps`` (a frame without its row is an error)."""
    row = {int(s): k for k, s in enumerate(thermo_steps)}
    missing = [int(s) for s in steps if int(s) not in row]
    if missing:
        raise ChemFitError(
            f"{label}: frames at steps {missing[:3]} have no thermo row; dump_every must be a multiple of thermo_every"
        )
    return np.array([row[int(s)] for s in steps], dtype=int)


def property_gradients(
    samples: Mapping[str, np.ndarray],
    direct: Mapping[str, np.ndarray | None],
    energy_gradient: np.ndarray,
    beta: float,
    names: Sequence[str],
    n_blocks: int = 5,
) -> dict[str, dict[str, float]]:
    """``{property: {parameter: d⟨A⟩/dθ}, property_sem: {...}}`` of every per-frame observable in
    ``samples`` (with its direct derivative ∂A/∂θ ``[n, p]`` in ``direct``, or None), in the
    observable's unit per parameter unit, with block standard errors."""
    out: dict[str, dict[str, float]] = {}
    for key, values in samples.items():
        grad = fluctuation_gradient(values, energy_gradient, beta, direct.get(key))
        sem = fluctuation_gradient_sem(values, energy_gradient, beta, direct.get(key), n_blocks)
        out[key] = dict(zip(names, map(float, grad)))
        out[f"{key}_sem"] = dict(zip(names, map(float, sem)))
    return out


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
