"""An ASE calculator over any torch model with the ``model(state)`` contract.

:class:`TorchCalculator` lets ASE (its optimisers, MD, filters, phonons...) use a
:mod:`chemfit_core.models` model, or any torch-sim-style model: energy (eV), free
energy (the same), forces (eV/Å) and, for fully periodic cells, the stress in ASE's
Voigt order and sign (xx, yy, zz, yz, xz, xy; eV/Å³, positive under tension).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from chemfit_core.engine.cell_filter import call_model
from chemfit_core.engine.placement import place_model
from chemfit_core.engine.state import atoms_to_state

__all__ = ["TorchCalculator"]

_VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])


class TorchCalculator(Calculator):
    """ASE calculator for a torch model; ``device``/``dtype`` as :func:`~chemfit_core.engine.relax.relax_structures`.

    Args:
        model: ``model(state) -> {"energy", "forces", "stress"}`` (eV, eV/Å, eV/Å³).
        device: where to run (default: CUDA when available, or where a fixed model is).
        dtype: float type of the state (default float64, or a fixed model's).
        kwargs: passed to ``ase.calculators.calculator.Calculator``.

    The stress is reported only for cells periodic in all three directions (ASE then
    raises ``PropertyNotImplementedError`` for ``get_stress``).
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: Any,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model, self.device, self.dtype = place_model(model, device, dtype)

    def calculate(
        self,
        atoms: Any = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        """Evaluate the model on ``atoms`` and store energy, forces and (periodic cells) stress."""
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        state = atoms_to_state(self.atoms, device=self.device, dtype=self.dtype)
        periodic = bool(self.atoms.pbc.all())
        out = call_model(self.model, state, compute_stress=periodic)
        energy = float(out["energy"].detach()[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().numpy().astype(np.float64),
        }
        stress = out.get("stress")
        if periodic and stress is not None:
            full = stress.detach()[0].cpu().numpy().astype(np.float64)
            self.results["stress"] = full[_VOIGT[0], _VOIGT[1]]
