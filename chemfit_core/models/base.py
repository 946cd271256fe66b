"""The model contract and the machinery shared by pair potentials."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from chemfit_core.engine.neighbors import NeighborList, PairBlock, Pairs
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
        self.block_size: int | None = None  # pairs per block without a graph; None: pair_block_size()
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
        """Sum pair terms into per-system energies, per-atom forces and stresses.

        Without an autograd graph to keep (no gradient wanted, see :func:`tracks_graph`)
        the pairs are evaluated block by block (:meth:`Pairs.blocks`) and summed in
        place, so memory beyond the list stays that of one block; with one, all pairs
        are evaluated at once, out of place, and every result stays differentiable.
        """
        graph = tracks_graph(self, state)
        single_species = len(self.species) == 1
        types = self.types(state)  # also rejects unknown elements
        sums = Sums(state, state.dtype, compute_stress, graph)
        for block in pairs.blocks(state, 0 if graph else self.block_size):
            block = block.inside(self.cutoff, compact=graph)  # masked beyond the cutoff without a graph
            ti, tj = (None, None) if single_species else (types[block.i], types[block.j])
            energy_pair, dedr_over_r = self.pair_terms(block.r2, ti, tj)
            sums.add_energy(block, block.masked(energy_pair))
            sums.add_pair_gradient(block, block.masked(dedr_over_r) * block.vectors)  # dE/d(r_j - r_i)
        return sums.result()


def tracks_graph(model: torch.nn.Module, state: SimState) -> bool:
    """Whether a forward pass must keep its autograd graph: grad mode is on and a parameter,
    the positions or the cell require gradients (fits, Jacobians). Otherwise (relaxations)
    models evaluate in blocks and accumulate in place."""
    if not torch.is_grad_enabled():
        return False
    return state.positions.requires_grad or state.cell.requires_grad or any(p.requires_grad for p in model.parameters())


class Sums:
    """Per-system energies, per-atom forces and the virial, summed over blocks of pairs.

    Forces are kept component-major (``[3, n_atoms]``, fast scatters); with ``graph``
    every sum is out of place (differentiable), otherwise in place.
    """

    def __init__(self, state: SimState, dtype: torch.dtype, compute_stress: bool, graph: bool):
        self.state, self.graph, self.compute_stress = state, graph, compute_stress
        device = state.device
        self.energy = torch.zeros(state.n_systems, dtype=dtype, device=device)
        self.forces = torch.zeros((3, state.n_atoms), dtype=dtype, device=device)
        self.virial = torch.zeros((state.n_systems, 3, 3), dtype=dtype, device=device) if compute_stress else None

    def add_energy(self, block: PairBlock, energy: torch.Tensor) -> None:
        """Add per-pair energies ``[n]`` (eV) of ``block`` to their systems."""
        if block.system is None:
            self.energy = self.energy + energy.sum() if self.graph else self.energy.add_(energy.sum())
        elif self.graph:
            self.energy = self.energy.index_add(0, block.system, energy)
        else:
            self.energy.index_add_(0, block.system, energy)

    def add_atom_energy(self, energy: torch.Tensor) -> None:
        """Add per-atom energies ``[n_atoms]`` (eV) to their systems."""
        if self.graph:
            self.energy = self.energy.index_add(0, self.state.system_idx, energy)
        else:
            self.energy.index_add_(0, self.state.system_idx, energy)

    def add_pair_gradient(self, block: PairBlock, grad: torch.Tensor) -> None:
        """Add dE/d(r_j − r_i) ``[3, n]`` (eV/Å) of ``block``: +grad on atom i, −grad on atom j, and the virial."""
        if self.virial is not None:
            # one pair at a time into its system's row (index_add), the same order alone and in a batch
            system = block.system if block.system is not None else self._zeros(block.i.numel())
            term = torch.einsum("ap,bp->pab", block.vectors, grad)
            if self.graph:
                self.virial = self.virial.index_add(0, system, term)
            else:
                self.virial.index_add_(0, system, term)
        if self.graph:
            self.forces = self.forces.index_add(1, block.i, grad).index_add(1, block.j, -grad)
        else:
            self.forces.index_add_(1, block.i, grad)
            self.forces.index_add_(1, block.j, grad.neg_())  # grad is this block's own temporary

    def _zeros(self, n: int) -> torch.Tensor:
        if getattr(self, "_zero_index", None) is None or self._zero_index.numel() < n:
            self._zero_index = torch.zeros(n, dtype=torch.long, device=self.state.device)
        return self._zero_index[:n]

    def result(self) -> dict[str, torch.Tensor]:
        """``energy`` [n_systems] eV, ``forces`` [n_atoms, 3] eV/Å and, if asked, ``stress`` [n_systems, 3, 3] eV/Å³."""
        out = {"energy": self.energy, "forces": self.forces.T}
        if self.virial is not None:
            state = self.state
            volume = torch.linalg.det(state.cell).abs().clamp_min(1e-30)
            stress = self.virial / volume.view(-1, 1, 1)
            out["stress"] = torch.where(state.system_pbc.all(dim=1).view(-1, 1, 1), stress, torch.zeros_like(stress))
        return out
