"""Helpers at ChemFit's module path ``chemfit.utils``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chemfit_core.fit_result import flatten_dict


def check_params_near_bounds(
    params: Mapping[str, Any], bounds: Mapping[str, Any], relative_tol: float
) -> list[tuple[str, float, float, float]]:
    """Parameters within ``relative_tol`` × (upper − lower) of a bound, or outside their bounds.

    ``params`` and ``bounds`` may be nested alike; parameters without both bounds are not
    checked. A negative ``relative_tol`` loosens the test. Returns ``(flat name, value,
    lower, upper)`` for each such parameter, in the order of ``params``.
    """
    flat_bounds = flatten_dict(bounds)
    near = []
    for name, value in flatten_dict(params).items():
        lower, upper = flat_bounds.get(name, (None, None))
        if lower is None or upper is None:
            continue
        margin = relative_tol * abs(upper - lower)
        if value < lower + margin or value > upper - margin:
            near.append((name, value, lower, upper))
    return near
