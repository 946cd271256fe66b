"""A fit that can be killed and restarted: python resumable_fit.py CACHE_DIR OUT_JSON.

A deterministic objective (Rosenbrock in 3 dimensions, 10 ms per evaluation, like an
expensive term) fitted with Nelder-Mead and an evaluation cache in CACHE_DIR; the result
and the number of evaluations replayed from the cache go to OUT_JSON.
"""

import json
import sys
import time

from chemfit_core import Fitter
from chemfit_core.cache import EvaluationCache


def rosenbrock(p):
    time.sleep(0.01)
    return sum(100 * (p[f"x{k + 1}"] - p[f"x{k}"] ** 2) ** 2 + (1 - p[f"x{k}"]) ** 2 for k in range(2))


cache = EvaluationCache(sys.argv[1], namespace="rosenbrock-3d")
fitter = Fitter(rosenbrock, {"x0": -1.2, "x1": 1.0, "x2": 0.5}, progress=False, cache=cache)
params = fitter.fit_scipy(method="Nelder-Mead", options={"maxfev": 150, "xatol": 1e-12, "fatol": 1e-14})
with open(sys.argv[2], "w") as out:
    json.dump({"params": params, "n_evaluations": len(fitter.history), "replayed": fitter.n_replayed}, out)
