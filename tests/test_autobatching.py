"""InFlightAutoBatcher and BinningAutoBatcher: torch-sim's documented behaviour, and what we fix."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk

from chemfit_core.engine import autobatching
from chemfit_core.engine.autobatching import (
    BinningAutoBatcher,
    InFlightAutoBatcher,
    calculate_memory_scaler,
    calculate_memory_scalers,
    determine_max_batch_size,
    edge_counts,
    estimate_max_memory_scaler,
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
    batcher = InFlightAutoBatcher(model=lj_model, memory_scales_with="n_atoms", max_memory_scaler=1000.0)

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


def test_a_state_over_the_limit_is_rejected_at_load_even_when_it_is_the_first():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=10)
    with pytest.raises(ValueError, match="state 0 has a memory metric of 16 .*greater than max_metric"):
        batcher.load_states(make_states([4, 1]))
    with pytest.raises(ValueError, match="state 2 has a memory metric of 16"):  # a list is checked whole
        batcher.load_states(make_states([1, 1, 4]))
    with pytest.raises(ValueError, match="state 2 has a memory metric of 16"):  # so is a batched state
        batcher.load_states(concatenate_states(make_states([1, 1, 4])))
    with pytest.raises(ValueError, match="state 0 has a memory metric of 16"):
        BinningAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=10).load_states(make_states([4]))


def test_an_iterator_is_checked_as_far_as_it_is_read_ahead():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=10, lookahead=2)
    with pytest.raises(ValueError, match="state 1 has a memory metric"):
        batcher.load_states(iter(make_states([1, 4])))
    batcher.load_states(iter(make_states([1, 1, 1, 4])))  # state 3 is beyond the lookahead
    with pytest.raises(ValueError, match="state 3 has a memory metric"):
        run_to_completion(batcher)


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
        [processor.steps[i["index"]] >= i["index"] % 7 + 1 for i in batch.info]
    )
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


# -- nothing the caller passes in is modified or handed back -----------------------------------------


def relaxation_like_loop(batcher, source):
    """Step each batch in place (positions and info), converge states after 1-3 steps; return all outputs."""
    batcher.load_states(source)
    batch, completed = batcher.next_batch(None, None)
    returned, steps = [], {}
    while batch is not None:
        returned.append(batch)
        batch.positions += 0.01  # an optimiser step, in place
        for info in batch.info:
            steps[info["index"]] = steps.get(info["index"], 0) + 1
            info["stepped"] = True
        converged = torch.tensor([steps[i["index"]] >= 1 + i["index"] % 3 for i in batch.info])
        batch, done = batcher.next_batch(batch, converged)
        completed += done
    returned += completed
    return batcher.restore_original_order(completed), returned


def assert_untouched(inputs, saved, returned):
    for state, clone in zip(inputs, saved):
        assert state.n_atoms == clone.n_atoms and state.n_systems == clone.n_systems
        assert torch.equal(state.positions, clone.positions)
        assert state.info == clone.info and all("stepped" not in i for i in state.info)
        assert all(state is not r for r in returned)


@pytest.mark.parametrize("form", ["list", "iterator", "batched"])
def test_in_flight_never_modifies_or_returns_a_loaded_state(form):
    # 32-atom states fill the budget alone: each time one converges the batch empties and exactly
    # one waiting state joins (the case that used to hand back, then empty, the caller's own state)
    states = make_states([8, 1, 8, 2, 8, 8])
    source = {"list": states, "iterator": iter(states), "batched": concatenate_states(states)}[form]
    inputs = [source] if form == "batched" else states
    saved = [s.clone() for s in inputs]
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=32)
    ordered, returned = relaxation_like_loop(batcher, source)
    assert_untouched(inputs, saved, returned)
    assert [s.info[0]["index"] for s in ordered] == list(range(6))
    expected = [
        s.positions + 0.01 * (1 + k % 3) for k, s in enumerate(saved[0].split() if form == "batched" else saved)
    ]
    assert all(torch.allclose(s.positions, e) for s, e in zip(ordered, expected))


@pytest.mark.parametrize("form", ["list", "batched"])
def test_binning_never_modifies_or_returns_a_loaded_state(form):
    states = make_states([8, 1, 8, 2])
    source = states if form == "list" else concatenate_states(states)
    inputs = [source] if form == "batched" else states
    saved = [s.clone() for s in inputs]
    batcher = BinningAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=32)
    batcher.load_states(source)
    returned = []
    for batch, _ in batcher:
        batch.positions += 0.01
        for info in batch.info:
            info["stepped"] = True
        returned.append(batch)
    ordered = batcher.restore_original_order(returned)
    assert_untouched(inputs, saved, returned + ordered)
    assert len(returned) == 3 and [s.info[0]["index"] for s in ordered] == [0, 1, 2, 3]


def test_next_batch_leaves_the_updated_state_and_convergence_tensor_alone():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=100, max_iterations=2)
    batcher.load_states(make_states([1, 2, 1]))
    batch, _ = batcher.next_batch(None, None)
    converged = torch.tensor([True, False, False])
    following, done = batcher.next_batch(batch, converged)
    assert batch.n_systems == 3 and converged.tolist() == [True, False, False]
    assert following is not batch and following.n_systems == 2 and len(done) == 1
    last, done = batcher.next_batch(following, torch.zeros(2, dtype=torch.bool))  # max_iterations forces both
    assert last is None and len(done) == 2 and following.n_systems == 2


def test_completed_states_carry_no_autograd_graph():
    batcher = InFlightAutoBatcher(lj_model, memory_scales_with="n_atoms", max_memory_scaler=100)
    batcher.load_states(make_states([1, 2]))
    batch, _ = batcher.next_batch(None, None)
    batch.positions = batch.positions.detach().requires_grad_() * 2  # as a model's graph-carrying output
    _, done = batcher.next_batch(batch, torch.tensor([True, True]))
    assert [d.positions.requires_grad for d in done] == [False, False]
    assert [d.info[0]["index"] for d in done] == [1, 0]  # the batch's order: largest joined first
    assert torch.equal(done[1].positions, batch.positions.detach()[8:])


# -- torch-sim's public API: bins, metrics, the probe ------------------------------------------------


def test_bins_take_weights_records_keys_and_bounds():
    assert to_constant_volume_bins([3, 5, 2, 4], 7) == [[5, 2], [4, 3]]
    assert to_constant_volume_bins([9, 1], 5) == [[9], [1]]  # too heavy alone: a bin of its own
    records = [("w", 6.0), ("x", 3.0), ("y", 4.0), ("z", 1.0)]
    assert to_constant_volume_bins(records, 7, weight_pos=1) == [[("w", 6.0), ("z", 1.0)], [("y", 4.0), ("x", 3.0)]]
    rows = [{"name": "a", "cost": 2}, {"name": "b", "cost": 2}, {"name": "c", "cost": 3}]
    bins = to_constant_volume_bins(rows, 4, key=lambda r: r["cost"])
    assert [[r["name"] for r in b] for b in bins] == [["c"], ["a", "b"]]  # equal weights keep input order
    assert to_constant_volume_bins(records, 7, weight_pos=1, lower_bound=1.0, upper_bound=6.0) == [
        [("y", 4.0), ("x", 3.0)]
    ]  # bounds are exclusive: 1.0 and 6.0 are left out
    assert to_constant_volume_bins({"p": 2.0, "q": 5.0}, 6) == [{"q": 5.0}, {"p": 2.0}]
    assert to_constant_volume_bins([], 1.0) == [] and to_constant_volume_bins({}, 1.0) == []
    with pytest.raises(ValueError, match="weight_pos or key"):
        to_constant_volume_bins(records, 7)
    with pytest.raises(ValueError, match="lower_bound"):
        to_constant_volume_bins([1, 2], 3, lower_bound=2, upper_bound=2)


def test_density_metric_pads_only_the_non_periodic_axes():
    slab = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 1))
    slab.pbc = [True, True, False]
    cluster = bulk("Ar", "fcc", a=5.26, cubic=True)
    cluster.pbc = False
    state = atoms_to_state([bulk("Ar", "fcc", a=5.26, cubic=True), slab, cluster])
    expected = []
    for atoms in state.to_atoms():
        span = atoms.positions.max(0) - atoms.positions.min(0) + 2.0 * ~atoms.pbc
        volume = atoms.get_volume() if atoms.pbc.all() else span.prod()
        expected.append(len(atoms) ** 2 / (volume / 1000))
    assert calculate_memory_scalers(state, "n_atoms_x_density") == pytest.approx(expected)
    assert [calculate_memory_scaler(s) for s in state.split()] == pytest.approx(expected)
    assert calculate_memory_scalers(state, "n_atoms") == [4.0, 16.0, 4.0]
    with pytest.raises(ValueError, match="Invalid metric"):
        calculate_memory_scalers(state, "n_bonds")
    with pytest.raises(ValueError, match="Invalid metric"):
        InFlightAutoBatcher(lj_model, memory_scales_with="n_bonds")


def test_n_edges_counts_directed_pairs_as_ase_does():
    from ase.build import molecule
    from ase.neighborlist import neighbor_list

    crystal = bulk("Si", "diamond", a=5.43, cubic=True)
    benzene = molecule("C6H6")
    state = atoms_to_state([crystal, benzene])
    expected = [float(len(neighbor_list("i", a, 5.0))) for a in (crystal, benzene)]
    assert edge_counts(state, 5.0) == expected and expected[0] > 0
    assert calculate_memory_scalers(state, "n_edges", cutoff=5.0) == expected
    assert autobatching._n_edges_scalers is edge_counts  # torch-sim's name


def test_batchers_budget_in_edges_with_the_given_cutoff():
    states = make_states([1, 2, 1, 2])
    edges = [edge_counts(s, 4.0)[0] for s in states]
    budget = edges[0] + edges[1]
    binning = BinningAutoBatcher(lj_model, memory_scales_with="n_edges", cutoff=4.0, max_memory_scaler=budget)
    binning.load_states(states)
    assert binning.memory_scalers == edges
    assert all(sum(edges[i] for i in b) <= budget for b in binning.index_bins) and len(binning.index_bins) == 2
    flight = InFlightAutoBatcher(lj_model, memory_scales_with="n_edges", cutoff=4.0, max_memory_scaler=budget)
    flight.load_states(states)
    completed, _ = run_to_completion(flight)
    assert flight.memory_scalers == edges and len(completed) == 4


def test_the_probe_goes_through_measure_model_memory_forward(monkeypatch):
    calls = []

    def measure(state, model):
        calls.append(state.n_systems)
        if state.n_systems >= 5:
            raise RuntimeError("Failed to allocate 2556 bytes on device 'cuda:0'")  # Warp's wording
        return 0.1

    monkeypatch.setattr("chemfit_core.autobatching.measure_model_memory_forward", measure)  # the alias
    assert determine_max_batch_size(argon((1, 1, 1), 0), lj_model, max_atoms=1000) == 2
    assert calls == [1, 2, 3, 5]  # 1, 2, 3 (1.6 rounds up), 5 fails -> two sizes below
    monkeypatch.setattr(
        autobatching, "measure_model_memory_forward", lambda *_: (_ for _ in ()).throw(RuntimeError("shape mismatch"))
    )
    with pytest.raises(RuntimeError, match="shape mismatch"):
        determine_max_batch_size(argon((1, 1, 1), 0), lj_model)


def test_estimate_takes_the_smaller_budget_of_the_smallest_and_largest_system(monkeypatch):
    monkeypatch.setattr(autobatching, "determine_max_batch_size", lambda state, model, **_: 1000 // state.n_atoms)
    states = make_states([1, 8, 2])  # 4, 32, 8 atoms
    assert estimate_max_memory_scaler(states, lj_model, [4, 32, 8]) == min(250 * 4, 31 * 32)


def test_cpu_budget_is_raised_to_fit_the_largest_state():
    huge = atoms_to_state(bulk("Ar", "fcc", a=5.26, cubic=True).repeat((15, 15, 15)))  # 13,500 atoms
    batcher = BinningAutoBatcher(lj_model, memory_scales_with="n_atoms")
    assert batcher.load_states([argon((1, 1, 1), 0), huge]) == 13_500
    assert len(batcher.index_bins) == 2
