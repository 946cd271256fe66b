"""Snakemake script of rule `provenance`: results/provenance.json."""

from chemfit_core.cli import log_to
from chemfit_core.stages.provenance import write_provenance

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to(sm.log[0])
write_provenance(sm.output[0], sm.params.config, sm.input.inputs, sm.input.fits, sm.params.workflow_dir)
