"""InFlightAutoBatcher and BinningAutoBatcher: torch-sim's documented behaviour, and what we fix."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk

from chemfit_core.engine.autobatching import (
    BinningAutoBatcher,
    InFlightAutoBatcher,
    calculate_memory_scaler,
    determine_max_batch_size,
    to_constant_volume_bins,
)
from chemfit_core.engine.state import atoms_to_state, concatenate_states
from chemfit_core.models import LennardJones

lj_model = LennardJones(0.0104, 3.40, 8.5)


def argon(repeat, index):
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(repeat)
    atoms.info["index"] = index
    return atoms_to_state(atoms)


def make_states(sizes):
    """States whose atom counts are 4 * n for n in sizes (n = 1, 2, 4, 8 ... via repeats)."""
    repeats = {1: (1, 1, 1), 2: (2, 1, 1), 4: (2, 2, 1), 8: (2, 2, 2), 16: (4, 2, 2), 64: (4, 4, 4)}
    return [argon(repeats[n], k) for k, n in enumerate(sizes)]


class CountdownProcessor:
    """Stands in for a simulation step: a state converges after as many steps as its atom count / 4."""

    def __init__(self):
        self.steps = {}

    def process_batch(self, batch):
        for info in batch.info:
            self.steps[info["index"]] = self.steps.get(info["index"], 0) + 1
        return batch

    def check_convergence(self, batch):
        counts = batch.n_atoms_per_system.tolist()
        return torch.tensor([self.steps[i["index"]] >= n // 4 for i, n in zip(batch.info, counts)])


def test_seed_example_runs_with_the_import_renamed():
    """The InFlightAutoBatcher example of torch-sim's reference page (seed 003), verbatim."""
    states = make_states([1, 2, 4, 8, 2, 1, 16, 4])
    processor = CountdownProcessor()
    process_batch, check_convergence = processor.process_batch, processor.check_convergence
    # --- seed example, with `torch_sim` renamed to `chemfit_core` in the import ---
    from chemfit_core.engine.autobatching import InFlightAutoBatcher

    # Create a hot-swapping batcher
    batcher = InFlightAutoBatcher(
        model=lj_model, memory_scales_with="n_atoms", max_memory_scaler=1000.0
    )

    # Load states and process them with convergence checking
    batcher.load_states(states)
    batch, completed_states = batcher.next_batch(None, None)

    while batch is not None:
        # Process the batch
        batch = process_batch(batch)

        # Check convergence
        convergence = check_convergence(batch)

        # Get next batch, with converged states swapped out
        batch, new_completed = batcher.next_batch(batch, convergence)
        completed_states.extend(new_completed)

    # Restore original order
    ordered_results = batcher.restore_original_order(completed_states)
    # --- end of the example ---
    assert [s.info[0]["index"] for s in ordered_results] == list(range(8))
    assert [s.n_atoms for s in ordered_results] == [4 * n for n in [1, 2, 4, 8, 2, 1, 16, 4]]


@pytest.mark.parametrize("form", ["list", "iterator", "batched"])
def test_load_states_from_a_list_an_iterator_or_a_batched_state(form):
    states = make_states([1, 2, 4, 8])
    source = {"list": states, "iterator": iter(states), "batched": concatenate_states(states)}[form]
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=40)
    batcher.load_states(source)
    results, processor = run_to_completion(batcher)
    assert [s.info[0]["index"] for s in batcher.restore_original_order(results)] == [0, 1, 2, 3]


def run_to_completion(batcher, processor=None, max_loops=10_000):
    processor = processor or CountdownProcessor()
    batch, completed = batcher.next_batch(None, None)
    loops = 0
    while batch is not None:
        loops += 1
        assert loops < max_loops
        batch = processor.process_batch(batch)
        batch, done = batcher.next_batch(batch, processor.check_convergence(batch))
        completed.extend(done)
    return completed, processor


def test_a_state_over_the_limit_is_rejected_even_when_it_is_the_first():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=10)
    batcher.load_states(make_states([4, 1]))
    with pytest.raises(ValueError, match="state 0 has a memory metric of 16"):
        batcher.next_batch(None, None)


def test_empty_input_gives_an_empty_result_not_stop_iteration():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=10)
    batcher.load_states([])
    assert batcher.next_batch(None, None) == (None, [])
    assert batcher.restore_original_order([]) == []


def test_max_iterations_forces_completion():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=100, max_iterations=3)
    batcher.load_states(make_states([1, 2]))
    batch, completed = batcher.next_batch(None, None)
    calls = 0
    while batch is not None:
        calls += 1
        batch, done = batcher.next_batch(batch, torch.zeros(batch.n_systems, dtype=torch.bool))  # never converges
        completed.extend(done)
    assert calls == 3 and len(completed) == 2
    assert batcher.iteration_count == {0: 3, 1: 3} and batcher.swap_attempts is batcher.iteration_count


def test_return_indices_gives_the_batchs_input_indices():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=12, return_indices=True)
    batcher.load_states(make_states([1, 2, 1, 1]))
    batch, completed, indices = batcher.next_batch(None, None)
    assert indices == batcher.current_idx and [i["index"] for i in batch.info] == indices
    assert sum(4 * [1, 2, 1, 1][k] for k in indices) <= 12


def test_unchanged_batch_is_returned_as_is_not_rebuilt():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=100)
    batcher.load_states(make_states([1, 2]))
    batch, _ = batcher.next_batch(None, None)
    same, done = batcher.next_batch(batch, torch.tensor([False, False]))
    assert same is batch and done == []


def test_freed_room_goes_to_the_largest_waiting_state_that_fits():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=36, return_indices=True)
    batcher.load_states(make_states([8, 1, 2, 4, 1]))  # 32, 4, 8, 16, 4 atoms
    batch, _, indices = batcher.next_batch(None, None)
    assert indices == [0, 1]  # 32 atoms, then the first 4-atom state fills the room
    converged = torch.tensor([i["index"] == 0 for i in batch.info])
    batch, done, indices = batcher.next_batch(batch, converged)
    assert [d.info[0]["index"] for d in done] == [0]
    assert indices == [1, 3, 2, 4]  # 16, then 8, then 4 atoms: largest first, not arrival order


def test_one_huge_structure_does_not_stall_the_queue():
    # 15 small states, one huge one (256 atoms) in the middle; room for the huge one only alone
    sizes = [1] * 7 + [64] + [1] * 8
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=260, max_passes=50)
    batcher.load_states(make_states(sizes))
    order = []
    processor = CountdownProcessor()
    batch, completed = batcher.next_batch(None, None)
    while batch is not None:
        batch = processor.process_batch(batch)
        batch, done = batcher.next_batch(batch, processor.check_convergence(batch))
        order += [d.info[0]["index"] for d in done]
        completed += done
    huge_done = order.index(7)
    assert set(order[:huge_done]) >= set(range(8, 16)), "small states behind the huge one must not wait for it"
    assert sorted(order) == list(range(16))


def test_a_passed_over_state_gets_priority_instead_of_starving():
    sizes = [1] * 40 + [16] + [1] * 40
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=64, max_passes=3)
    batcher.load_states(make_states(sizes))
    completed, processor = run_to_completion(batcher)
    order = batcher.completed_idx_og_order
    assert order.index(40) < len(order) - 20, "the large state must not wait for every small one"


def test_thousand_structures_come_back_in_input_order():
    states = [argon((1, 1, 1), k) for k in range(1000)]
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=200)
    batcher.load_states(iter(states))
    processor = CountdownProcessor()
    # vary convergence times: state k converges after (k % 7) + 1 steps
    processor.check_convergence = lambda batch: torch.tensor(
        [processor.steps[i["index"]] >= i["index"] % 7 + 1 for i in batch.info])
    completed, _ = run_to_completion(batcher, processor)
    ordered = batcher.restore_original_order(completed)
    assert [s.info[0]["index"] for s in ordered] == list(range(1000))
    assert batcher.completed_idx_og_order != list(range(1000))  # they did finish out of order


def test_wrong_convergence_tensor_is_rejected():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=100)
    batcher.load_states(make_states([1, 2]))
    batch, _ = batcher.next_batch(None, None)
    with pytest.raises(ValueError, match="shape"):
        batcher.next_batch(batch, torch.tensor([True]))
    with pytest.raises(ValueError, match="convergence tensor"):
        batcher.next_batch(batch, None)


def test_cpu_gets_a_default_budget_instead_of_failing():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms_x_density")
    batcher.load_states(make_states([8, 8]))
    batch, _ = batcher.next_batch(None, None)
    assert batcher.max_memory_scaler > 0 and batch.n_systems == 2


def test_memory_metrics():
    state = argon((2, 2, 2), 0)
    assert calculate_memory_scaler(state, "n_atoms") == 32
    density = 32 / (10.52**3 / 1000)  # atoms per nm3
    assert calculate_memory_scaler(state, "n_atoms_x_density") == pytest.approx(32 * density)


def test_out_of_memory_probe_backs_off_two_sizes():
    """No GPU here: a model that raises CUDA's out-of-memory message above 1000 atoms stands in."""

    def model(state):
        if state.n_atoms > 1000:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {}

    size = determine_max_batch_size(argon((2, 2, 2), 0), model, max_atoms=10_000, scale_factor=2.0)
    assert size == 8  # 1, 2, 4, 8, 16, 32 (fails at 32 x 32 = 1024 atoms) -> two below
    with pytest.raises(RuntimeError, match="something else"):
        determine_max_batch_size(argon((1, 1, 1), 0), lambda s: (_ for _ in ()).throw(RuntimeError("something else")))


def test_binning_batcher_packs_and_restores_order():
    states = make_states([8, 1, 2, 4, 16, 1, 2])
    batcher = BinningAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=64)
    batcher.load_states(states)
    results = []
    for batch, indices in batcher:
        assert int(batch.n_atoms) <= 64
        assert [i["index"] for i in batch.info] == indices
        results.append(batch)
    ordered = batcher.restore_original_order(results)
    assert [s.info[0]["index"] for s in ordered] == list(range(7))
    assert batcher.next_batch() == (None, [])


def test_bins_never_exceed_the_volume_and_are_few():
    weights = {k: w for k, w in enumerate([5, 9, 3, 7, 1, 8, 2, 6, 4])}
    bins = to_constant_volume_bins(weights, 10)
    assert all(sum(b.values()) <= 10 for b in bins)
    assert sorted(k for b in bins for k in b) == list(range(9))
    assert len(bins) == 5  # total 45 -> at least 5 bins of 10
