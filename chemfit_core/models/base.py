"""The model contract and the machinery shared by pair potentials."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from chemfit_core.engine.neighbors import NeighborList, Pairs
from chemfit_core.engine.state import SimState


class Model(torch.nn.Module):
    """Base of all models: ``model(state) -> {"energy", "forces", "stress"}``.

    Args:
        cutoff: interaction cutoff, Å.
        species: atomic numbers the model knows, in the order of its parameter tables.
        skin: neighbour-list skin, Å (lists are reused while atoms move less than skin/2).
        compute_stress: whether to return the stress (needed for cell relaxation).
    """

    def __init__(self, cutoff: float, species: Sequence[int], skin: float = 0.5, compute_stress: bool = True):
        super().__init__()
        self.cutoff = float(cutoff)
        self.species = [int(z) for z in species]
        self.compute_stress = compute_stress
        self.neighbor_list = NeighborList(self.cutoff, skin)
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(self.species)] = torch.arange(len(self.species))
        self.register_buffer("_type_of_z", table, persistent=False)

    @property
    def device(self) -> torch.device:
        """Device of the model's tensors."""
        return self._type_of_z.device

    @property
    def dtype(self) -> torch.dtype:
        """Float type of the model's parameters."""
        params = list(self.parameters())
        return params[0].dtype if params else torch.float64

    def types(self, state: SimState) -> torch.Tensor:
        """Type index of each atom; an element the model does not know is an error."""
        types = self._type_of_z.to(state.device)[state.atomic_numbers]
        if bool((types < 0).any()):
            unknown = sorted(set(state.atomic_numbers[types < 0].tolist()))
            raise ValueError(
                f"{type(self).__name__} has no parameters for atomic numbers {unknown}; it knows {self.species}"
            )
        return types

    def forward(self, state: SimState) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class PairModel(Model):
    """A pair potential: subclasses give the pair energy and its radial derivative.

    Forces and stress are assembled analytically from dE/dr (no autograd pass),
    which is what makes pair models fast; the pair energy expression itself stays
    differentiable with respect to the parameters. Only pairs inside the cutoff
    are evaluated (the list also holds the skin).
    """

    def pair_terms(
        self, r2: torch.Tensor, ti: torch.Tensor | None, tj: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair energy E and (dE/dr)/r from squared distances ``r2`` (Å²).

        ``ti``/``tj`` are the pair's type indices, or None when the model has one species.
        """
        raise NotImplementedError

    def parameter(
        self, table: torch.Tensor, ti: torch.Tensor | None, tj: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """A parameter per pair (a scalar tensor when there is one species)."""
        table = table.to(dtype)
        return table[0, 0] if ti is None else table[ti, tj]

    def forward(self, state: SimState, compute_stress: bool | None = None) -> dict[str, torch.Tensor]:
        """Energies, forces and (optionally) stresses of every system of ``state``."""
        pairs = self.neighbor_list.pairs(state)
        stress = self.compute_stress if compute_stress is None else compute_stress
        return self.assemble(state, pairs, stress)

    def assemble(self, state: SimState, pairs: Pairs, compute_stress: bool = True) -> dict[str, torch.Tensor]:
        """Sum pair terms into per-system energies, per-atom forces and stresses."""
        vectors = pairs.vectors(state)  # [3, n_pairs]
        r2 = vectors[0] * vectors[0] + vectors[1] * vectors[1] + vectors[2] * vectors[2]
        inside = torch.nonzero(r2 < self.cutoff**2).squeeze(1)
        vectors, r2 = vectors[:, inside], r2[inside]
        i, j, system = pairs.i[inside], pairs.j[inside], pairs.system[inside]
        if len(self.species) == 1:
            self.types(state)  # still reject unknown elements
            ti = tj = None
        else:
            types = self.types(state)
            ti, tj = types[i], types[j]
        energy_pair, dedr_over_r = self.pair_terms(r2, ti, tj)
        grad = dedr_over_r * vectors  # dE/d(r_j - r_i), [3, n_pairs]
        energy = torch.zeros(state.n_systems, dtype=energy_pair.dtype, device=state.device)
        energy = energy.index_add(0, system, energy_pair)
        forces = torch.zeros((3, state.n_atoms), dtype=grad.dtype, device=state.device)
        forces = forces.index_add(1, i, grad).index_add(1, j, -grad).T
        out = {"energy": energy, "forces": forces}
        if compute_stress:
            virial = torch.zeros(state.n_systems, 3, 3, dtype=grad.dtype, device=state.device)
            virial = virial.index_add(0, system, torch.einsum("ap,bp->pab", vectors, grad))
            volume = torch.linalg.det(state.cell).abs().clamp_min(1e-30)
            stress = virial / volume.view(-1, 1, 1)
            out["stress"] = torch.where(state.pbc.all(dim=1).view(-1, 1, 1), stress, torch.zeros_like(stress))
        return out
