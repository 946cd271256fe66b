"""Run under `mpiexec -n N`: fit a 4-term objective with MPIWrapperCOB; rank 0 prints JSON.

With the argument `fail`, term 3 (evaluated on rank 1 when N = 2) raises after the
second evaluation; rank 0 must report it and every rank must exit.
"""

import json
import os
import sys

from mpi4py import MPI

from chemfit_core import CombinedObjectiveFunction, Fitter, MPIWrapperCOB
from chemfit_core.term_result import TermResult

FAIL = "fail" in sys.argv
calls = {"n": 0}


def make_term(center):
    def term(params, ctx):
        ctx.result = TermResult(properties={"rank": MPI.COMM_WORLD.Get_rank(), "pid": os.getpid()})
        if FAIL and center == 3.0:
            calls["n"] += 1
            if calls["n"] > 2:
                raise RuntimeError(f"term at {center} blew up on rank {MPI.COMM_WORLD.Get_rank()}")
        return (params["x"] - center) ** 2

    return term


cob = CombinedObjectiveFunction(
    [make_term(c) for c in (0.0, 1.0, 2.0, 3.0)], weights=[1, 2, 3, 4], names=["t0", "t1", "t2", "t3"]
)
with MPIWrapperCOB(cob) as wrapper:
    if wrapper.rank == 0:
        fitter = Fitter(wrapper, {"x": 0.0}, progress=False)
        try:
            params = fitter.fit_scipy(method="L-BFGS-B")
        except Exception as exc:  # reported, then the with-block releases the workers
            print(json.dumps({"error": str(exc)}), flush=True)
            raise SystemExit(3) from None
        ranks = sorted({p["rank"] for p in fitter.history[0].properties})
        print(
            json.dumps(
                {
                    "x": params["x"],
                    "serial": cob(params),
                    "mpi": wrapper(params),
                    "ranks": ranks,
                    "terms": fitter.history[-1].terms,
                }
            ),
            flush=True,
        )
    else:
        wrapper.worker_loop()
