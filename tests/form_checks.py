"""Checks every potential form's tests share: forces and parameter gradients against central finite
differences, and parameters recovered from cells labelled at known values."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from test_pair_models import evaluate

from chemfit_core import Fitter
from chemfit_core.engine.state import SimState
from chemfit_core.science.targets import StructureTarget, label


def check_parameter_gradients(
    form, params: Mapping[str, float], state: SimState, rel_step: float, rel: float, atom: int = 5, comp: int = 1
) -> list[float]:
    """Autograd d/dθ of (total energy, one force component, one stress component) through
    ``form.model_tensors`` equals central differences with step ``rel_step``·|θ| to ``rel``;
    returns the energy gradient per parameter (eV per parameter unit)."""
    model = form.model(params)

    def quantities(values: Mapping) -> torch.Tensor:
        out = torch.func.functional_call(model, form.model_tensors(values), (state,))
        return torch.stack([out["energy"].sum(), out["forces"][atom, comp], out["stress"][0, 0, 1]])

    x = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    q = quantities(x)
    grads = [torch.autograd.grad(q[k], list(x.values()), retain_graph=True) for k in range(3)]
    for n, (name, value) in enumerate(params.items()):
        h = rel_step * abs(value)
        with torch.no_grad():
            up, down = (quantities({**params, name: value + sign * h}) for sign in (1, -1))
        numeric = ((up - down) / (2 * h)).numpy()
        for k in range(3):
            assert grads[k][n].item() == pytest.approx(numeric[k], rel=rel, abs=1e-10), (name, k)
    return [g.item() for g in grads[0]]


def recovery_errors(form, truth: Mapping[str, float], cells: list) -> dict[str, float]:
    """Relative error of each parameter fitted (least squares, analytic Jacobian) to energies, forces
    and stresses of ``cells`` labelled by ``form`` at ``truth``, from a start 4-5 % off."""
    target = StructureTarget(form, label(cells, form.model(truth)), stress_denominator=1e-3)
    start = {k: v * (1.05 if i % 2 else 0.96) for i, (k, v) in enumerate(truth.items())}
    fitter = Fitter(target, start, progress=False)
    fitted = fitter.fit_least_squares(jac="analytic", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    errors = {name: abs(fitted[name] / value - 1) for name, value in truth.items()}
    print("recovery: largest relative error", max(errors.values()), "evaluations", fitter.result.n_evaluations)
    return errors


def check_forces_against_energy_differences(model, atoms, picks, h: float = 1e-5, rtol: float = 1e-6, atol=1e-8):
    """The model's force components ``picks`` ((atom, axis), eV/Å) equal −ΔE/Δx by central differences."""
    moved = []
    for i, c in picks:
        for sign in (1, -1):
            m = atoms.copy()
            m.positions[i, c] += sign * h
            moved.append(m)
    energies = np.array([r["energy"] for r in evaluate(model, moved)])
    forces = evaluate(model, [atoms])[0]["forces"]
    numeric = -(energies[0::2] - energies[1::2]) / (2 * h)
    np.testing.assert_allclose([forces[i, c] for i, c in picks], numeric, rtol=rtol, atol=atol)
