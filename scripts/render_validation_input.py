"""Snakemake script of rule `render_validation_input`."""

from chemfit_core.cli import log_to
from chemfit_core.stages.validation import render_validation_input

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
render_validation_input(
    fit_name=sm.wildcards.fit,
    fit=sm.params.fit,
    master_seed=sm.params.seed,
    params_json=sm.input.params,
    template=sm.input.template,
    state=sm.wildcards.state,
    replica=int(sm.wildcards.replica),
    out_path=sm.output[0],
)
