"""chemfit-workflow: fit interatomic-potential parameters to reference data.

Stages: fit (LAMMPS terms evaluated concurrently inside chemfit_core), validation
simulations at the fitted parameters (one LAMMPS job each), analysis, report.
Run `snakemake --cores all`; the configuration is config/config.yaml unless
--configfile says otherwise.
"""

from snakemake.utils import min_version

min_version("9.0")


# the embedded default, unless --configfile names the configuration (an example then
# runs alone instead of being merged into the default's fits)
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/fit.smk"
include: "rules/simulate.smk"
include: "rules/relax.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        "results/params.json",
        "results/properties.csv",
        "results/report.html",
        "results/provenance.json",
        rules.tables.output,
