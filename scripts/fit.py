"""Snakemake script of rule `fit`: fit one configuration (see chemfit_core.pipeline.run_fit)."""

from chemfit_core.cli import log_to
from chemfit_core.pipeline import run_fit

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
run_fit(
    fit_name=sm.wildcards.fit,
    fit=sm.params.fit,
    master_seed=sm.params.seed,
    template=sm.input.template or None,  # no liquid targets: no template
    workdir=sm.params.workdir,
    fit_json=sm.output.fit,
    params_json=sm.output.params,
    history_csv=sm.output.history,
    workers=sm.threads,
)
