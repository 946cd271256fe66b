"""CombinedObjectiveFunction: weighted sums, terms with and without context, failure policies."""

from __future__ import annotations

import math

import pytest

from chemfit_core import (
    ChemFitError,
    CombinedObjectiveFunction,
    EvaluateContext,
    QuantityComputer,
    QuantityComputerObjectiveFunction,
    TermEvaluationError,
)


def quadratic(center):
    return lambda p: (p["x"] - center) ** 2


def test_weighted_sum_of_terms():
    cob = CombinedObjectiveFunction([quadratic(1.0), quadratic(2.0)], weights=[1.0, 0.5])
    assert cob({"x": 0.0}) == pytest.approx(1.0 + 0.5 * 4.0)


def test_default_weights_are_one():
    cob = CombinedObjectiveFunction([quadratic(1.0), quadratic(3.0)])
    assert cob.weights == [1.0, 1.0]
    assert cob({"x": 0.0}) == pytest.approx(10.0)


def test_add_single_term_sequence_and_whole_combined_objective():
    inner = CombinedObjectiveFunction([quadratic(1.0), quadratic(2.0)])
    cob = CombinedObjectiveFunction([quadratic(0.0)])
    cob.add(quadratic(5.0), weights=2.0).add([quadratic(1.0), quadratic(1.0)], weights=[1.0, 3.0]).add(inner, 0.1)
    assert cob.n_terms() == 5
    expected = 0.0 + 2 * 25 + 1 + 3 * 1 + 0.1 * (1 + 4)
    assert cob({"x": 0.0}) == pytest.approx(expected)


def test_add_flat_scales_weights_of_each_input():
    a = CombinedObjectiveFunction([quadratic(1.0)], weights=[2.0])
    b = CombinedObjectiveFunction([quadratic(2.0), quadratic(3.0)])
    merged = CombinedObjectiveFunction.add_flat([a, b], weights=[0.5, 2.0])
    assert merged.weights == [1.0, 2.0, 2.0]
    assert merged({"x": 0.0}) == pytest.approx(1.0 + 2 * 4 + 2 * 9)


def test_evaluate_term_returns_weighted_value():
    cob = CombinedObjectiveFunction([quadratic(1.0), quadratic(2.0)], weights=[3.0, 1.0])
    assert cob.evaluate_term({"x": 0.0}, 0) == pytest.approx(3.0)
    assert cob.evaluate_term({"x": 0.0}, 1) == pytest.approx(4.0)


def test_last_contributions_and_context_record_each_term():
    cob = CombinedObjectiveFunction([quadratic(1.0), quadratic(2.0)], weights=[1.0, 2.0], names=["a", "b"])
    ctx = EvaluateContext()
    cob({"x": 0.0}, ctx)
    assert cob.last_contributions == [1.0, 8.0]
    assert cob.contributions() == {"a": 1.0, "b": 8.0}
    assert ctx.meta["terms"] == [1.0, 8.0]
    assert ctx.meta["term_names"] == ["a", "b"]


def test_terms_taking_a_context_receive_one():
    seen = []

    def term(params, ctx):
        seen.append(ctx)
        ctx.meta["note"] = "hello"
        return params["x"]

    def term_optional_ctx(params, ctx=None):
        seen.append(ctx)
        return 1.0

    cob = CombinedObjectiveFunction([term, term_optional_ctx])
    parent = EvaluateContext()
    assert cob({"x": 2.0}, parent) == 3.0
    assert all(isinstance(c, EvaluateContext) for c in seen)
    assert parent.meta["children"][0]["meta"]["note"] == "hello"


def test_type_error_inside_a_term_is_not_mistaken_for_a_signature_mismatch():
    def term(params):
        raise TypeError("bug inside the term")

    cob = CombinedObjectiveFunction([term])
    with pytest.raises(TermEvaluationError, match="bug inside the term"):
        cob({"x": 1.0})


def test_raise_policy_names_the_failing_term():
    def broken(params):
        raise RuntimeError("LAMMPS crashed")

    cob = CombinedObjectiveFunction([quadratic(0.0), broken], names=["ok", "density@90K"])
    with pytest.raises(RuntimeError, match="LAMMPS crashed") as info:  # the term's own type (ChemFit)
        cob({"x": 1.0})
    assert isinstance(info.value, TermEvaluationError)  # and ours, naming the term
    assert info.value.index == 1 and info.value.name == "density@90K"
    assert str(info.value) == "objective term 1 ('density@90K') failed: RuntimeError: LAMMPS crashed"
    assert isinstance(info.value.cause, RuntimeError) and str(info.value.cause) == "LAMMPS crashed"


def test_nan_policy_makes_the_sum_nan():
    cob = CombinedObjectiveFunction([quadratic(0.0), lambda p: 1 / 0], on_error="nan")
    assert math.isnan(cob({"x": 1.0}))
    assert math.isnan(cob.last_contributions[1])


def test_skip_policy_leaves_the_term_out_and_records_it():
    ctx = EvaluateContext()
    cob = CombinedObjectiveFunction([quadratic(0.0), lambda p: 1 / 0], on_error="skip")
    assert cob({"x": 2.0}, ctx) == pytest.approx(4.0)
    assert ctx.meta["skipped_indices"] == [1]
    assert cob.last_contributions == [4.0, None]


def test_skip_policy_with_every_term_failing_is_an_error_not_zero():
    cob = CombinedObjectiveFunction([lambda p: 1 / 0, lambda p: 1 / 0], on_error="skip")
    with pytest.raises(ChemFitError, match="all 2 objective terms failed"):
        cob({"x": 1.0})


def test_term_returning_a_non_number_is_reported():
    cob = CombinedObjectiveFunction([lambda p: "1.0"], names=["stringy"])
    with pytest.raises(TypeError, match="stringy.*expected a float") as info:
        cob({})
    assert isinstance(info.value, TermEvaluationError)


@pytest.mark.parametrize("weights", [[-1.0], [float("nan")], [float("inf")]])
def test_invalid_weights_are_rejected(weights):
    with pytest.raises(ValueError, match="weight of term 0"):
        CombinedObjectiveFunction([quadratic(0.0)], weights=weights)


def test_weight_count_must_match_term_count():
    with pytest.raises(ValueError, match="2 weights for 1 objective functions"):
        CombinedObjectiveFunction([quadratic(0.0)], weights=[1.0, 2.0])


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="on_error"):
        CombinedObjectiveFunction([quadratic(0.0)], on_error="ignore")


class SquareComputer(QuantityComputer):
    def _compute(self, parameters, ctx):
        return {"square": parameters["x"] ** 2}


def test_quantity_computer_objective_function_applies_the_loss():
    objective = QuantityComputerObjectiveFunction(lambda q: q["square"] - 1.0, SquareComputer())
    ctx = EvaluateContext()
    assert objective({"x": 3.0}, ctx) == 8.0
    assert ctx.quantities == {"square": 9.0} and ctx.loss == 8.0


def test_loss_may_take_parameters_but_a_defaulted_second_argument_is_not_them():
    with_params = QuantityComputerObjectiveFunction(
        lambda q, parameters: q["square"] + parameters["x"], SquareComputer()
    )
    assert with_params({"x": 2.0}) == 6.0

    def scaled(q, scale=10.0):
        return scale * q["square"]

    assert QuantityComputerObjectiveFunction(scaled, SquareComputer())({"x": 2.0}) == 40.0


def test_with_loss_binds_keyword_arguments():
    objective = SquareComputer().with_loss(lambda q, target: (q["square"] - target) ** 2, target=4.0)
    assert objective({"x": 3.0}) == 25.0
