"""The optimisers a fit can name, their options, defaults and evaluation budgets.

``optimizer.method`` is any :func:`scipy.optimize.minimize` method, one of scipy's global
optimisers (:data:`GLOBAL_METHODS`) or ``least_squares``. Each method takes its own options:
:func:`method_options` reads them from scipy itself (``show_options`` for ``minimize``
methods, the function signature otherwise), so check-config rejects an option the method
does not take, naming it, before any job. :data:`METHOD_DEFAULTS` are the options a method
gets when the config gives none of its own (parameters are scaled to [0, 1] within their
bounds, so radii and steps are fractions of the bound interval).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Mapping
from typing import Any

GLOBAL_METHODS = ("differential_evolution", "dual_annealing", "direct")
"""scipy's derivative-free global optimisers (every parameter needs finite bounds)."""

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "COBYQA": {"initial_tr_radius": 0.05, "final_tr_radius": 0.003},
}
"""Options used when the config gives none for the method."""

BUDGET_OPTION = {
    "Nelder-Mead": "maxfev",
    "Powell": "maxfev",
    "COBYQA": "maxfev",
    "COBYLA": "maxiter",
    "L-BFGS-B": "maxfun",
    "TNC": "maxfun",
}
"""The option of a ``minimize`` method that carries ``max_evaluations`` (``maxiter`` otherwise;
least squares and the global methods: see :func:`minimise`)."""

# set by the workflow itself, never by the user's options
_MANAGED = {"fun", "func", "x0", "bounds", "args", "kwargs", "jac", "method", "callback", "seed", "rng"}


@functools.cache
def minimize_methods() -> tuple[str, ...]:
    """Method names :func:`scipy.optimize.minimize` knows."""
    import scipy.optimize

    doc = scipy.optimize.minimize.__doc__ or ""
    return tuple(dict.fromkeys(re.findall(r"- '([A-Za-z-]+)'", doc)))


def known_methods() -> tuple[str, ...]:
    """Every method a fit's ``optimizer.method`` may name."""
    return (*minimize_methods(), *GLOBAL_METHODS, "least_squares")


@functools.cache
def method_options(method: str) -> frozenset[str] | None:
    """Options ``method`` takes, from scipy's own documentation or signature; None where scipy does
    not list them (then nothing is rejected). Raises ValueError for an unknown method."""
    import scipy.optimize

    if method == "least_squares" or method in GLOBAL_METHODS:
        function = getattr(scipy.optimize, method)
        return frozenset(set(inspect.signature(function).parameters) - _MANAGED)
    if method not in minimize_methods():
        raise ValueError(f"unknown optimizer method {method!r}; expected one of {', '.join(known_methods())}")
    text = scipy.optimize.show_options("minimize", method, disp=False) or ""
    start = text.find("Options\n-------")
    if start < 0:
        return None
    section = text[start + len("Options\n-------") :]
    end = re.search(r"\n\S[^\n]*\n-{3,}", section)
    section = section[: end.start()] if end else section
    names = {n.strip() for group in re.findall(r"^([\w][\w, ]*?)\s*:", section, re.M) for n in group.split(",")}
    return frozenset(names - _MANAGED) or None


def option_problems(method: str, options: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``options`` for ``method``, each as ``expected ..., got ...``."""
    try:
        allowed = method_options(method)
    except ValueError as exc:
        return [str(exc)]
    if allowed is None:
        return []
    unknown = sorted(set(options) - allowed)
    if not unknown:
        return []
    return [f"{method} does not take the option(s) {unknown}; expected some of {sorted(allowed)}"]


def method_options_with_defaults(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a method runs with: the config's, or the method's defaults when it gives none."""
    return dict(options) if options else dict(METHOD_DEFAULTS.get(method, {}))


def minimise(fitter: Any, optimizer: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Run the configured optimiser on ``fitter`` (a :class:`~chemfit_core.fitter.Fitter`) within
    ``max_evaluations``; return the best parameters."""
    method, budget = optimizer["method"], optimizer["max_evaluations"]
    fitter.budget = budget  # progress lines: evaluation k of N, time left at most
    options = method_options_with_defaults(method, optimizer["options"])
    if method == "differential_evolution":
        popsize = options.get("popsize", 15)
        options.setdefault("maxiter", max(1, budget // (popsize * len(fitter.names)) - 1))
        return fitter.fit_global(method, seed=seed, **options)
    if method == "least_squares":
        jac = optimizer.get("jacobian", "2-point")
        jac = "analytic" if jac in ("analytic", "fluctuation") else jac
        return fitter.fit_least_squares(jac=jac, **{"max_nfev": budget, **options})
    if method in GLOBAL_METHODS:
        return fitter.fit_global(method, seed=seed, **{"maxfun": budget, **options})
    options.setdefault(BUDGET_OPTION.get(method, "maxiter"), budget)
    return fitter.fit_scipy(method=method, options=options)
