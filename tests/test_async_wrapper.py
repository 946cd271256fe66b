"""AsyncWrapperCOB: same value as the serial sum, real concurrency, clean failures."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chemfit_core import (
    AsyncWrapperCOB,
    CombinedObjectiveFunction,
    EvaluateContext,
    FileBasedQuantityComputer,
    QuantityComputerObjectiveFunction,
    TermEvaluationError,
)


def sleeping_term(seconds, value):
    def term(params):
        time.sleep(seconds)
        return value * params["x"]

    return term


def test_value_equals_the_serial_weighted_sum(no_leaked_threads):
    terms = [lambda p, i=i: (p["x"] - i) ** 2 for i in range(20)]
    weights = [0.1 * (i + 1) for i in range(20)]
    cob = CombinedObjectiveFunction(terms, weights)
    with AsyncWrapperCOB(cob, max_workers=4) as wrapper:
        for x in (0.0, 1.5, -3.0):
            assert wrapper({"x": x}) == pytest.approx(cob({"x": x}), rel=1e-15)
        assert wrapper.last_contributions == pytest.approx(cob.last_contributions)


def test_terms_run_concurrently_in_the_pool(no_leaked_threads):
    cob = CombinedObjectiveFunction([sleeping_term(0.2, 1.0) for _ in range(8)])
    with AsyncWrapperCOB(cob, max_workers=8) as wrapper:
        start = time.perf_counter()
        assert wrapper({"x": 1.0}) == 8.0
        elapsed = time.perf_counter() - start
    assert elapsed < 0.2 * 8 / 2, "8 terms of 0.2 s each should overlap on 8 workers"


def test_max_workers_bounds_concurrency(no_leaked_threads):
    running, peak, lock = [0], [0], threading.Lock()

    def term(params):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return 1.0

    with AsyncWrapperCOB(CombinedObjectiveFunction([term] * 12), max_workers=3) as wrapper:
        wrapper({})
    assert peak[0] == 3


def test_user_executor_is_used_and_left_open():
    pool = ThreadPoolExecutor(2, thread_name_prefix="user-pool")
    names = []

    def term(params):
        names.append(threading.current_thread().name)
        return 1.0

    wrapper = AsyncWrapperCOB(CombinedObjectiveFunction([term] * 4), executor=pool)
    assert wrapper({}) == 4.0
    wrapper.close()
    assert all(n.startswith("user-pool") for n in names)
    assert pool.submit(lambda: 7).result() == 7  # the caller owns and closes it
    pool.shutdown()


def test_failing_term_is_reported_with_its_index_and_name(no_leaked_threads):
    def broken(params):
        raise ValueError("negative density")

    cob = CombinedObjectiveFunction([sleeping_term(0.01, 1.0), broken], names=["fine", "rho@87K"])
    with AsyncWrapperCOB(cob, max_workers=2) as wrapper:
        with pytest.raises(TermEvaluationError) as info:
            wrapper({"x": 1.0})
    assert info.value.index == 1 and info.value.name == "rho@87K"
    assert "negative density" in str(info.value)


def test_nan_and_skip_policies_apply_as_in_the_serial_objective():
    def broken(params):
        raise RuntimeError("boom")

    with AsyncWrapperCOB(CombinedObjectiveFunction([lambda p: 2.0, broken], on_error="skip")) as wrapper:
        assert wrapper({}) == 2.0
    with AsyncWrapperCOB(CombinedObjectiveFunction([lambda p: 2.0, broken], on_error="nan")) as wrapper:
        assert wrapper({}) != wrapper({})  # NaN


def test_failure_stops_sibling_external_commands(tmp_path, no_leaked_threads):
    """A sibling's running subprocess is killed and queued terms never start."""
    marker = tmp_path / "started"
    sleeper = FileBasedQuantityComputer(
        output_files=["out.txt"],
        output_parsers=lambda files: {},
        base_working_directory=tmp_path / "runs",
        executable_cmd=[sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); import time; time.sleep(60)"],
        command_timeout=120,
    )
    slow = QuantityComputerObjectiveFunction(lambda q: 0.0, sleeper)

    def broken(params):
        deadline = time.time() + 20
        while not marker.exists() and time.time() < deadline:  # fail while the sibling runs
            time.sleep(0.01)
        raise RuntimeError("bad parameters")

    cob = CombinedObjectiveFunction([slow, broken, slow, slow])
    with AsyncWrapperCOB(cob, max_workers=2) as wrapper:
        start = time.perf_counter()
        with pytest.raises(TermEvaluationError, match="bad parameters"):
            wrapper({})
        assert time.perf_counter() - start < 30, "the 60 s sibling run must be killed"
    assert marker.read_text() == "x", "the queued sibling terms must not start"
    leftover = [p for p in os.popen("ps -eo args").read().splitlines() if "time.sleep(60)" in p and "ps -eo" not in p]
    assert leftover == []


def test_call_inside_a_running_event_loop_points_to_async_call():
    cob = CombinedObjectiveFunction([lambda p: p["x"]] * 3)

    async def main():
        with AsyncWrapperCOB(cob) as wrapper:
            with pytest.raises(RuntimeError, match=r"await wrapper\.async_call\(params\)"):
                wrapper({"x": 1.0})
            return await wrapper.async_call({"x": 2.0})

    assert asyncio.run(main()) == 6.0


def test_async_call_lets_other_coroutines_run_meanwhile():
    cob = CombinedObjectiveFunction([sleeping_term(0.2, 1.0)] * 2)
    ticks = []

    async def ticker():
        for _ in range(5):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.02)

    async def main():
        with AsyncWrapperCOB(cob, max_workers=2) as wrapper:
            value, _ = await asyncio.gather(wrapper.async_call({"x": 1.0}), ticker())
        return value

    assert asyncio.run(main()) == 2.0
    assert len(ticks) == 5 and ticks[-1] - ticks[0] < 0.18


def test_nested_wrappers_sharing_a_bounded_pool_do_not_deadlock():
    pool = ThreadPoolExecutor(2)
    inner = AsyncWrapperCOB(CombinedObjectiveFunction([sleeping_term(0.01, 1.0)] * 3), executor=pool)
    outer = AsyncWrapperCOB(CombinedObjectiveFunction([inner, inner, inner]), executor=pool)
    result = ThreadPoolExecutor(1).submit(outer, {"x": 1.0}).result(timeout=20)
    assert result == 9.0
    pool.shutdown()


def test_contexts_collect_each_terms_metadata():
    def term(params, ctx):
        ctx.meta["thread"] = threading.current_thread().name
        return 1.0

    ctx = EvaluateContext()
    with AsyncWrapperCOB(CombinedObjectiveFunction([term] * 3), max_workers=3) as wrapper:
        wrapper({}, ctx)
    assert len(ctx.meta["children"]) == 3
    assert all(child["meta"]["thread"].startswith("chemfit-term") for child in ctx.meta["children"])
    assert ctx.meta["terms"] == [1.0, 1.0, 1.0]


def test_wraps_only_combined_objectives():
    with pytest.raises(TypeError, match="CombinedObjectiveFunction"):
        AsyncWrapperCOB(lambda p: 1.0)
