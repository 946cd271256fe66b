"""Interatomic potentials in torch with one contract.

Every model maps a batched :class:`~chemfit_core.state.SimState` to::

    {"energy": [n_systems] eV, "forces": [n_atoms, 3] eV/Å, "stress": [n_systems, 3, 3] eV/Å³}

in the precision and on the device of the state. Parameters are torch tensors
(``nn.Parameter``), so gradients of energies, forces and stresses with respect
to them come from autograd. Stress follows ASE's sign (positive under tension):
σ = (1/V) ∂E/∂ε.
"""

from chemfit_core.models.base import Model, PairModel
from chemfit_core.models.pair import LennardJones, Morse

__all__ = ["LennardJones", "Model", "Morse", "PairModel"]


def __getattr__(name: str):
    if name in ("EAM", "AnalyticEAM"):
        from chemfit_core.models import eam

        return getattr(eam, name)
    raise AttributeError(name)
