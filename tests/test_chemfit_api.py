"""ChemFit 3.1.1's interfaces in chemfit_core: our own tests of each behaviour we added for them."""

from __future__ import annotations

import logging
import math
import pickle
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT

from chemfit_core import (
    AsyncWrapperCOB,
    CombinedObjectiveFunction,
    EvaluateContext,
    ExecutorLike,
    Fitter,
    FitterEvaluateContext,
    QuantityComputerObjectiveFunction,
    TermEvaluationError,
    WrappedReducer,
    check_params_near_bounds,
    mean_reducer,
    nan_exception_handler,
    root_mean_reducer,
    skip_exception_handler,
)
from chemfit_core.ase_objective_function import MinimizationASEComputer, SinglePointASEComputer
from chemfit_core.debug_utils import log_all_methods
from chemfit_core.executor_wrapper_cob import ExecutorWrapperCOB
from chemfit_core.kabsch import apply_transform, kabsch, rmsd


def offset_term(offset):
    return lambda p: (p["x"] - offset) ** 2


def broken(params):
    raise RuntimeError("Whoops")


# module level, so that a process pool can pickle them
def cube(params, ctx):
    ctx.quantities = {"cube": params["x"] ** 3}
    ctx.meta["pid_marker"] = "set in the worker"
    return params["x"] ** 3


def square(params):
    return params["x"] ** 2


# -- failures keep their type --------------------------------------------------------------
def test_the_raise_policy_raises_the_terms_own_type_naming_the_term():
    cob = CombinedObjectiveFunction([offset_term(0.0), broken], names=["fine", "broken one"])
    with pytest.raises(RuntimeError, match="Whoops") as info:
        cob({"x": 1.0})
    error = info.value
    assert isinstance(error, TermEvaluationError) and error.index == 1 and error.name == "broken one"
    assert str(error) == "objective term 1 ('broken one') failed: RuntimeError: Whoops"
    assert type(error.cause) is RuntimeError
    restored = pickle.loads(pickle.dumps(error))  # a process pool sends it back
    assert isinstance(restored, RuntimeError) and isinstance(restored, TermEvaluationError)
    assert restored.name == "broken one" and str(restored) == str(error)


def test_exception_handlers_may_be_assigned_after_construction():
    cob = CombinedObjectiveFunction([lambda p: 1.0, broken])
    cob.exception_handler = nan_exception_handler
    assert math.isnan(cob({}))
    cob.exception_handler = skip_exception_handler
    ctx = EvaluateContext()
    assert cob({}, ctx) == 1.0 and ctx.meta["skipped_indices"] == [1]


# -- contexts and reductions -----------------------------------------------------------------
def test_plain_function_terms_leave_their_value_and_parameters_in_their_context():
    cob = CombinedObjectiveFunction([lambda p: 2.0, lambda p: 3.0], weights=[10.0, 1.0])
    ctx = EvaluateContext()
    assert cob({"x": 1.0}, ctx) == 23.0
    assert [c["loss"] for c in ctx.meta["children"]] == [2.0, 3.0]  # unweighted, as ChemFit
    assert all(c["parameters"] == {"x": 1.0} for c in ctx.meta["children"])


def test_children_get_independent_copies_of_the_config():
    ctx = EvaluateContext()
    ctx.config.settings = {"n": 1}
    first, second = ctx.spawn_children(2)
    first.config.settings["n"] = 2
    assert second.config.settings == {"n": 1} and ctx.config.settings == {"n": 1}


def test_reducers_and_aggregators_are_told_apart_by_their_signature():
    computer = QuantityComputerObjectiveFunction(lambda q: q["v"], lambda p: {"v": p["x"]})
    cob = CombinedObjectiveFunction([computer, lambda p: 3.0])
    seen = {}

    def aggregate(terms, quantities, ctx):
        seen.update(terms=terms, quantities=quantities, ctx=ctx)
        return max(terms)

    ctx = EvaluateContext()
    cob.reduction = aggregate  # assigned after construction, as ChemFit users do
    assert cob({"x": 5.0}, ctx) == 5.0
    assert seen["terms"] == [5.0, 3.0] and seen["quantities"] == [{"v": 5.0}, None] and seen["ctx"] is ctx
    cob.reduction = lambda terms: float(np.std(terms))
    assert cob({"x": 5.0}) == pytest.approx(1.0)
    cob.reduction = np.std  # many defaulted parameters, still a reducer
    assert cob({"x": 5.0}) == pytest.approx(1.0)
    cob.reduction = WrappedReducer(root_mean_reducer)
    assert cob({"x": 5.0}) == pytest.approx(math.sqrt(4.0))
    assert cob.reduction.to_reducer() is root_mean_reducer


# -- executors -------------------------------------------------------------------------------
class CountingPool(ThreadPoolExecutor):
    def __init__(self, *args, **kwargs):
        self.n_submit = 0
        super().__init__(*args, **kwargs)

    def submit(self, fn, /, *args, **kwargs):
        self.n_submit += 1
        return super().submit(fn, *args, **kwargs)


def test_the_context_executor_is_used_before_the_wrappers_own(no_leaked_threads):
    cob = CombinedObjectiveFunction([offset_term(i) for i in range(4)])
    with CountingPool(2) as given, CountingPool(2) as in_ctx:
        assert isinstance(in_ctx, ExecutorLike)
        with ExecutorWrapperCOB(cob, executor=given) as wrapper:
            assert wrapper({"x": 0.0}, EvaluateContext(executor=in_ctx)) == cob({"x": 0.0})
            assert in_ctx.n_submit > 0 and given.n_submit == 0
            wrapper({"x": 0.0})
            assert given.n_submit > 0


def test_a_process_pool_runs_the_terms_and_their_context_state_comes_back():
    cob = CombinedObjectiveFunction([cube, square], weights=[1.0, 2.0])
    with ProcessPoolExecutor(2) as pool, AsyncWrapperCOB(cob) as wrapper:
        ctx = EvaluateContext(executor=pool)
        assert wrapper({"x": 2.0}, ctx) == 8.0 + 8.0
    first = ctx.meta["children"][0]
    assert first["quantities"] == {"cube": 8.0} and first["meta"]["pid_marker"] == "set in the worker"
    assert [c["loss"] for c in ctx.meta["children"]] == [8.0, 4.0]
    with ProcessPoolExecutor(1) as pool, AsyncWrapperCOB(CombinedObjectiveFunction([square, broken])) as wrapper:
        with pytest.raises(RuntimeError, match="Whoops"):
            wrapper({"x": 1.0}, EvaluateContext(executor=pool))


def test_the_mpi_wrapper_keeps_the_error_type_and_can_log_the_communicator(caplog):
    from chemfit_core.mpi_wrapper_cob import MPIWrapperCOB

    cob = CombinedObjectiveFunction([lambda p: 2.0, lambda p: 3.0])
    with caplog.at_level(logging.DEBUG, logger="chemfit_core.mpi_wrapper_cob"):
        with MPIWrapperCOB(cob, mpi_debug_log=True) as mpi:
            ctx = EvaluateContext()
            assert mpi({}, ctx) == 5.0
    assert [c["loss"] for c in ctx.meta["children"]] == [2.0, 3.0]
    assert any("Get_rank" in r.getMessage() for r in caplog.records)
    with MPIWrapperCOB(CombinedObjectiveFunction([lambda p: 1.0, broken])) as mpi:
        with pytest.raises(RuntimeError, match="Whoops") as info:
            mpi({})
    assert info.value.index == 1


# -- the fitter: ask/tell, step callbacks, nevergrad -------------------------------------------
def test_ask_tell_finish_with_one_candidate_at_a_time():
    fitter = Fitter(lambda p: (p["x"] - 2.0) ** 2, {"x": 0.0}, progress=False)
    with pytest.raises(RuntimeError, match="init"):
        fitter.ask({"x": 1.0})
    steps = []
    fitter.register_callback(lambda step, ctxs: steps.append((step, ctxs[0].n_evals)), n_steps=2)
    fitter.init()
    for x in (0.0, 2.0, 4.0):
        assert fitter.ask({"x": x}) == (x - 2.0) ** 2
        fitter.tell()
    assert fitter.finish() == {"x": 2.0}
    assert steps == [(0, 1), (2, 3)]
    ctx = fitter.contexts[0]
    assert ctx.n_evals == 3 and ctx.opt_loss == 0.0 and ctx.opt_params == {"x": 2.0}
    assert fitter.result.n_evaluations == 3 and fitter.result.objective == 0.0


def test_batches_run_in_the_given_executor_one_context_each():
    fitter = Fitter(lambda p: p["x"] ** 2, {"x": 0.0}, progress=False)
    contexts = [FitterEvaluateContext(), FitterEvaluateContext()]
    with ThreadPoolExecutor(2) as pool:
        fitter.init(num_workers=2, contexts=contexts, executor=pool)
        assert fitter.ask([{"x": 1.0}, {"x": 3.0}]) == [1.0, 9.0]
        with pytest.raises(ValueError, match="at most num_workers=2"):
            fitter.ask([{"x": 1.0}] * 3)
        assert fitter.finish({"x": 0.5}) == {"x": 0.5}
    assert contexts[0].opt_params == {"x": 1.0} and contexts[1].opt_params == {"x": 3.0}
    assert len(fitter.history) == 2
    with pytest.raises(ValueError, match="one context per worker"):
        fitter.init(num_workers=3, contexts=contexts)


def test_fit_scipy_calls_step_callbacks_with_the_fitter_contexts():
    seen = []
    fitter = Fitter(lambda p: (p["x"] - 1) ** 2 + (p["y"] + 2) ** 2, {"x": 0.0, "y": 0.0}, progress=False)
    fitter.register_callback(lambda step, ctxs: seen.append((step, ctxs[0].opt_loss)), n_steps=1)
    ctx = FitterEvaluateContext()
    params = fitter.fit_scipy(ctx=ctx)
    assert params["x"] == pytest.approx(1.0, abs=1e-4) and seen and seen[0][0] >= 1
    assert ctx.n_evals == len(fitter.history) and ctx.opt_loss == pytest.approx(0.0, abs=1e-8)


def test_fit_nevergrad_finds_the_bounded_optimum_and_leaves_no_threads(no_leaked_threads):
    calls = []

    def objective(p):
        calls.append(p)
        return 2 * (p["a"]["x"] - 2) ** 2 + 3 * (p["y"] + 1) ** 2

    fitter = Fitter(objective, {"a": {"x": 0.0}, "y": 0.0}, bounds={"a": {"x": (0.0, 1.5)}}, progress=False)
    steps = []
    fitter.register_callback(lambda step, ctxs: steps.append(step), n_steps=10)
    # seeded: unseeded, one run in many ended at y = -1.106 (the search is random)
    params = fitter.fit_nevergrad(budget=300, optimizer_str="NgIohTuned", num_workers=3, seed=0)
    assert params["a"]["x"] == pytest.approx(1.5, abs=0.1) and params["y"] == pytest.approx(-1.0, abs=0.1)
    assert len(calls) == 300 and calls[0] == {"a": {"x": 0.0}, "y": 0.0}  # the initial guess first
    assert all(0.0 <= c["a"]["x"] <= 1.5 for c in calls)
    assert steps == list(range(0, 100, 10))
    assert fitter.result.n_evaluations == 300 and fitter.result.optimizer_result is not None
    again = Fitter(objective, {"a": {"x": 0.0}, "y": 0.0}, bounds={"a": {"x": (0.0, 1.5)}}, progress=False)
    assert again.fit_nevergrad(budget=300, optimizer_str="NgIohTuned", num_workers=3, seed=0) == params  # reproducible


def test_fit_nevergrad_takes_earlier_observations_without_evaluating_them():
    calls = []
    fitter = Fitter(lambda p: calls.append(p) or (p["x"] - 3.0) ** 2, {"x": 0.0}, bounds={"x": (0, 5)}, progress=False)
    contexts = [FitterEvaluateContext()]
    fitter.fit_nevergrad(budget=3, contexts=contexts, initial_observations=[({"x": 3.0}, 0.0), ({"x": 9.0}, -1.0)])
    assert len(calls) == 3
    assert contexts[0].opt_loss == 0.0 and contexts[0].opt_params == {"x": 3.0}  # the outside one left out
    with pytest.raises(KeyError, match="unknown nevergrad optimizer"):
        fitter.fit_nevergrad(budget=3, optimizer_str="NoSuchOptimizer")


def test_a_seed_makes_fit_nevergrad_reproducible():
    def run():
        fitter = Fitter(lambda p: (p["x"] - 1.0) ** 2, {"x": 0.0}, bounds={"x": (-5, 5)}, progress=False)
        fitter.fit_nevergrad(budget=30, optimizer_str="CMA", seed=3)
        return [e.parameters["x"] for e in fitter.history]

    assert run() == run()


def test_an_optimiser_proposing_infinite_parameters_gets_the_penalty_not_a_stop():
    fitter = Fitter(lambda p: p["x"] ** 2, {"x": 1.0}, progress=False)
    fitter.init()
    assert fitter.ask({"x": math.inf}) == fitter.value_bad_params
    assert fitter.history[-1].error == "non-finite objective"


def test_check_params_near_bounds_flags_near_and_outside_values_by_flat_name():
    params = {"a": {"b": 0.999, "c": 0.5}, "d": -1.0, "free": 3.0}
    bounds = {"a": {"b": (0.0, 1.0), "c": (0.0, 1.0)}, "d": (0.0, 2.0)}
    assert check_params_near_bounds(params, bounds, 0.01) == [("a.b", 0.999, 0.0, 1.0), ("d", -1.0, 0.0, 2.0)]
    assert check_params_near_bounds(params, bounds, -0.01) == [("d", -1.0, 0.0, 2.0)]


def test_fitter_records_parameters_near_their_bounds():
    fitter = Fitter(
        lambda p: (p["x"] - 5) ** 2, {"x": 0.0}, bounds={"x": (0.0, 1.5)}, near_bound_tol=0.01, progress=False
    )
    fitter.fit_scipy()
    assert [name for name, *_ in fitter.problematic_params] == ["x"]


# -- ASE quantity computers --------------------------------------------------------------------
class CopperPairFactory:
    def __init__(self):
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.calls += 1
        time.sleep(0.02)
        return Atoms("Cu2", positions=[[0, 0, 0], [2.4, 0.1, 0]])


def copper_pair():
    return Atoms("Cu2", positions=[[0, 0, 0], [2.4, 0.1, 0]])


def attach_emt(atoms):
    atoms.calc = EMT()


def no_parameters(atoms, params):
    atoms.info["params"] = dict(params)


def test_single_point_computer_with_an_ase_calculator():
    factory = CopperPairFactory()
    computer = SinglePointASEComputer(attach_emt, no_parameters, factory, tag="Cu2")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(computer, [{"s": 1.0}] * 4))
    assert factory.calls == 1  # the base structure is built once
    reference = Atoms("Cu2", positions=[[0, 0, 0], [2.4, 0.1, 0]])
    reference.calc = EMT()
    assert all(r["energy"] == pytest.approx(reference.get_potential_energy()) for r in results)
    assert results[0]["n_atoms"] == 2 and results[0]["forces"].shape == (2, 3)
    ctx = EvaluateContext()
    objective = computer.with_loss(lambda q, e_ref: (q["energy"] - e_ref) ** 2, e_ref=0.0)
    objective({"s": 2.0}, ctx)
    assert ctx.meta["tag"] == "Cu2" and ctx.temp.atoms.info["params"] == {"s": 2.0}
    restored = pickle.loads(pickle.dumps(SinglePointASEComputer(attach_emt, no_parameters, copper_pair)))
    assert "energy" in restored({})
    with pytest.raises(TypeError, match="calc_factory"):
        SinglePointASEComputer(None, no_parameters, factory)  # type: ignore[arg-type]


def test_minimization_computer_relaxes_before_reading_quantities():
    computer = MinimizationASEComputer(
        fmax=1e-3, calc_factory=attach_emt, param_applier=no_parameters, atoms_factory=CopperPairFactory()
    )
    quantities = computer({})
    assert np.abs(quantities["forces"]).max() < 1e-3


# -- small helpers at ChemFit's module paths -----------------------------------------------------
def test_kabsch_recovers_a_rotation_and_translation():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(20, 3))
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    moved = points @ rotation + [1.0, 2.0, 3.0]
    r, t = kabsch(points, moved)
    assert np.allclose(r, rotation) and np.allclose(t, [1, 2, 3])
    assert rmsd(apply_transform(points, r, t), moved) < 1e-12
    with pytest.raises(ValueError, match="same shape"):
        kabsch(points, moved[:5])


def test_log_all_methods_reports_calls_and_forwards_attributes():
    messages = []
    target = threading.Event()
    logged = log_all_methods(target, messages.append)
    logged.set()
    assert target.is_set() and logged.is_set() is True
    assert any("set" in m for m in messages)


def test_a_plain_reducer_is_stored_wrapped_and_given_back():
    cob = CombinedObjectiveFunction([lambda p: p["x"], lambda p: 2 * p["x"]], reduction=mean_reducer)
    assert isinstance(cob.reduction, WrappedReducer) and cob.reduction.to_reducer() is mean_reducer
    assert cob({"x": 2.0}) == pytest.approx(3.0)
