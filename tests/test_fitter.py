"""Fitter: scipy methods by name, bounds, nested parameters, history, NaN stop, global search."""

from __future__ import annotations

import logging
import math

import pytest

from chemfit_core import (
    CombinedObjectiveFunction,
    Fitter,
    NonFiniteObjectiveError,
    TermEvaluationError,
    flatten_dict,
    unflatten_dict,
)
from chemfit_core.term_result import TermResult


def rosenbrock(p):
    return (1 - p["x"]) ** 2 + 100 * (p["y"] - p["x"] ** 2) ** 2


def test_fit_scipy_defaults_to_lbfgsb_and_returns_a_parameter_dict():
    fitter = Fitter(rosenbrock, {"x": -1.0, "y": 2.0}, progress=False)
    params = fitter.fit_scipy()
    assert set(params) == {"x", "y"}
    assert params["x"] == pytest.approx(1.0, abs=1e-3) and params["y"] == pytest.approx(1.0, abs=2e-3)
    assert fitter.result.method == "L-BFGS-B" and fitter.result.success


@pytest.mark.parametrize("method", ["Nelder-Mead", "Powell", "COBYQA", "BFGS"])
def test_other_scipy_methods_by_name_with_keyword_arguments(method):
    fitter = Fitter(lambda p: (p["a"] - 2.0) ** 2 + (p["b"] + 1.0) ** 2, {"a": 0.0, "b": 0.0}, progress=False)
    params = fitter.fit_scipy(method=method, tol=1e-10)
    assert params["a"] == pytest.approx(2.0, abs=1e-3) and params["b"] == pytest.approx(-1.0, abs=1e-3)


def test_bounds_are_respected():
    fitter = Fitter(lambda p: (p["x"] - 5.0) ** 2, {"x": 0.0}, bounds={"x": (-1.0, 2.0)}, progress=False)
    assert fitter.fit_scipy()["x"] == pytest.approx(2.0)
    assert all(-1.0 <= e.parameters["x"] <= 2.0 for e in fitter.history)


def test_nested_parameter_dicts_round_trip():
    seen = []

    def objective(p):
        seen.append(p)
        return (p["lj"]["epsilon"] - 1.0) ** 2 + (p["lj"]["sigma"] - 3.0) ** 2 + (p["mass"] - 2.0) ** 2

    fitter = Fitter(
        objective,
        {"lj": {"epsilon": 0.5, "sigma": 2.0}, "mass": 1.0},
        bounds={"lj": {"sigma": (1.0, 4.0)}},
        progress=False,
    )
    params = fitter.fit_scipy()
    assert set(seen[0]) == {"lj", "mass"} and set(seen[0]["lj"]) == {"epsilon", "sigma"}
    assert params["lj"]["sigma"] == pytest.approx(3.0, abs=1e-4)
    assert fitter.names == ["lj.epsilon", "lj.sigma", "mass"]


def test_flatten_and_unflatten_are_inverse():
    nested = {"a": {"b": 1.0, "c": {"d": 2.0}}, "e": 3.0}
    assert flatten_dict(nested) == {"a.b": 1.0, "a.c.d": 2.0, "e": 3.0}
    assert unflatten_dict(flatten_dict(nested)) == nested


def test_history_records_parameters_objective_terms_and_time():
    cob = CombinedObjectiveFunction(
        [lambda p: (p["x"] - 1) ** 2, lambda p: 2 * (p["x"] + 1) ** 2], names=["left", "right"]
    )
    fitter = Fitter(cob, {"x": 0.0}, progress=False)
    fitter.fit_scipy(method="Nelder-Mead")
    result = fitter.result
    assert result.n_evaluations == len(result.history) == len(fitter.history) > 5
    first = result.history[0]
    assert first.parameters == {"x": 0.0} and first.objective == pytest.approx(3.0)
    assert first.term_names == ["left", "right"] and first.terms == pytest.approx([1.0, 2.0])
    assert all(e.wall_time_s >= 0 for e in result.history)
    assert result.objective == min(e.objective for e in result.history)
    frame = result.history_frame()
    assert list(frame.columns[:3]) == ["evaluation", "objective", "x"]
    assert "term:left" in frame.columns


def test_nan_objective_stops_the_fit_with_the_culprit_term_named():
    cob = CombinedObjectiveFunction(
        [lambda p: p["x"] ** 2, lambda p: math.nan if p["x"] > 0.5 else 0.0], names=["ok", "unstable"]
    )
    fitter = Fitter(cob, {"x": 0.0}, progress=False)
    with pytest.raises(NonFiniteObjectiveError, match=r"unstable=nan"):
        fitter.fit_scipy(method="Nelder-Mead", options={"initial_simplex": [[0.0], [1.0]]})
    assert fitter.history[-1].error == "non-finite objective"


def test_infinite_objective_can_be_a_penalty_instead():
    fitter = Fitter(
        lambda p: math.inf if p["x"] > 1.2 else (p["x"] - 1) ** 2,
        {"x": 0.5},
        on_nonfinite="penalty",
        value_bad_params=1e3,
        progress=False,
    )
    params = fitter.fit_scipy(method="Nelder-Mead", options={"initial_simplex": [[0.5], [1.5]]})
    assert params["x"] == pytest.approx(1.0, abs=1e-3)
    assert fitter.history[1].objective == 1e3 and fitter.history[1].error == "non-finite objective"


def test_exceptions_propagate_by_default_and_can_be_swallowed():
    def objective(p):
        if p["x"] > 2:
            raise RuntimeError("simulation blew up")
        return (p["x"] - 1) ** 2

    with pytest.raises(RuntimeError, match="blew up"):
        Fitter(objective, {"x": 3.0}, progress=False).fit_scipy(method="Nelder-Mead")
    fitter = Fitter(objective, {"x": 1.5}, swallow_exceptions=True, log_exceptions=False, progress=False)
    assert fitter.fit_scipy(method="Nelder-Mead", options={"initial_simplex": [[1.5], [2.5]]})["x"] == pytest.approx(
        1.0, abs=1e-3
    )
    assert any(e.error and "blew up" in e.error for e in fitter.history)


def test_term_errors_from_combined_objectives_reach_the_caller():
    cob = CombinedObjectiveFunction([lambda p: 1 / 0], names=["divide"])
    with pytest.raises(TermEvaluationError, match="divide"):
        Fitter(cob, {"x": 0.0}, progress=False).fit_scipy()


def test_global_differential_evolution_is_seeded_and_needs_bounds():
    def wavy(p):
        return (p["x"] - 2.0) ** 2 + math.sin(5 * p["x"]) ** 2

    with pytest.raises(ValueError, match="finite bounds"):
        Fitter(wavy, {"x": 0.0}, progress=False).fit_global()
    results = [
        Fitter(wavy, {"x": -4.0}, bounds={"x": (-5, 5)}, progress=False).fit_global(seed=7, maxiter=30)
        for _ in range(2)
    ]
    assert results[0] == results[1]
    assert results[0]["x"] == pytest.approx(1.9, abs=0.3)


def test_normalize_makes_optimiser_steps_relative_to_the_bounds():
    seen = []

    def objective(p):
        seen.append(p["big"])
        return (p["big"] - 7000.0) ** 2 / 1e6 + (p["small"] - 0.003) ** 2 * 1e6

    fitter = Fitter(
        objective,
        {"big": 5000.0, "small": 0.001},
        bounds={"big": (0, 10000), "small": (0, 0.01)},
        normalize=True,
        progress=False,
    )
    params = fitter.fit_scipy(method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-12})
    assert params["big"] == pytest.approx(7000.0, rel=1e-4) and params["small"] == pytest.approx(0.003, rel=1e-3)
    assert abs(seen[1] - seen[0]) == pytest.approx(0.05 * 5000 * 10000 / 10000, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bounds": {"x": (2.0, 1.0)}}, "inverted"),
        ({"bounds": {"x": (1.0, 2.0)}}, "outside its bounds"),
        ({"bounds": {"y": (0.0, 1.0)}}, "unknown parameters: y"),
    ],
)
def test_bad_bounds_are_rejected_before_any_evaluation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Fitter(lambda p: 0.0, {"x": 0.0}, **kwargs)


def test_one_progress_line_per_evaluation(caplog):
    with caplog.at_level(logging.INFO, logger="chemfit_core.fitter"):
        fitter = Fitter(lambda p: (p["x"] - 1) ** 2, {"x": 0.0})
        fitter.fit_scipy(method="Nelder-Mead", options={"maxfev": 12})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval ")]
    assert len(lines) == len(fitter.history) == 12
    assert "x=" in lines[0] and "f=" in lines[0]


def test_callbacks_run_every_n_evaluations():
    calls = []
    fitter = Fitter(lambda p: (p["x"] - 1) ** 2, {"x": 0.0}, progress=False)
    fitter.register_evaluation_callback(lambda n, history: calls.append(n), n_evaluations=5)
    fitter.fit_scipy(method="Nelder-Mead", options={"maxfev": 20})
    assert calls == [5, 10, 15, 20]


class LinearDataTerm:
    """Residuals (a x_k + b − y_k)/s of a straight-line fit, with their exact Jacobian."""

    def __init__(self, x, y, s):
        self.x, self.y, self.s = x, y, s

    def __call__(self, p, ctx=None):
        residuals = [(p["a"] * x + p["b"] - y) / self.s for x, y in zip(self.x, self.y)]
        if ctx is not None:
            ctx.result = TermResult(
                residuals=residuals, jacobian={"a": [x / self.s for x in self.x], "b": [1 / self.s] * len(self.x)}
            )
        return math.fsum(r * r for r in residuals)


@pytest.mark.parametrize("jac", ["2-point", "analytic"])
def test_least_squares_gives_the_linear_regression_and_its_standard_errors(jac):
    import numpy as np

    rng = np.random.default_rng(4)
    x = np.linspace(0, 10, 30)
    s = 0.5
    y = 1.7 * x - 2.0 + rng.normal(0, s, x.size)
    half = len(x) // 2  # two terms: the residuals of a combined objective are stacked
    cob = CombinedObjectiveFunction([LinearDataTerm(x[:half], y[:half], s), LinearDataTerm(x[half:], y[half:], s)])
    fitter = Fitter(cob, {"a": 0.0, "b": 0.0}, progress=False)
    params = fitter.fit_least_squares(jac=jac)
    design = np.column_stack([x, np.ones_like(x)])
    exact, *_ = np.linalg.lstsq(design, y, rcond=None)
    assert [params["a"], params["b"]] == pytest.approx(exact, abs=1e-6)
    covariance = np.linalg.inv(design.T @ design) * s**2
    chi2 = float(np.sum((design @ exact - y) ** 2) / s**2 / (len(x) - 2))
    expected = np.sqrt(np.diag(covariance * max(chi2, 1.0)))
    errors = fitter.result.standard_errors()
    assert [errors["a"], errors["b"]] == pytest.approx(expected, rel=1e-4)
    assert fitter.result.reduced_chi2 == pytest.approx(chi2, rel=1e-6)
    assert fitter.result.to_dict()["standard_errors"] == errors


def test_least_squares_needs_residuals():
    fitter = Fitter(lambda p: (p["a"] - 1) ** 2, {"a": 0.0}, progress=False)
    with pytest.raises(ValueError, match="report residuals"):
        fitter.fit_least_squares()


def test_progress_lines_show_the_budget_the_best_so_far_and_the_time(caplog):
    import logging

    fitter = Fitter(lambda p: (p["x"] - 1) ** 2, {"x": 0.0}, bounds={"x": (-5, 5)})
    fitter.budget = 6
    with caplog.at_level(logging.INFO, logger="chemfit_core.fitter"):
        fitter.fit_scipy(method="COBYQA", options={"maxfev": 6})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval")]
    assert len(lines) == 6 and lines[2].startswith("eval    2/6")
    assert all("best=" in line and "s elapsed" in line for line in lines)
    assert "s left at most" in lines[0] and "left" not in lines[-1]
