rule render_validation_input:
    """LAMMPS input of one validation replica at the fitted parameters."""
    input:
        params="results/{fit}/params.json",
        template=liquid_template,
        files=liquid_files,
    output:
        "results/{fit}/validation/{state}/r{replica}/in.lammps",
    log:
        "logs/{fit}/validation/{state}/r{replica}/render.log",
    benchmark:
        "benchmarks/{fit}/validation/{state}/r{replica}/render.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        fit=fit_validation_config,
        seed=CONFIG["seed"],
    script:
        "../scripts/render_validation_input.py"


rule simulate:
    """One LAMMPS run: an independent job."""
    input:
        "results/{fit}/validation/{state}/r{replica}/in.lammps",
    output:
        "results/{fit}/validation/{state}/r{replica}/log.lammps",
    log:
        "logs/{fit}/validation/{state}/r{replica}/lammps.log",
    benchmark:
        "benchmarks/{fit}/validation/{state}/r{replica}/lammps.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        python=PYTHON,
        timeout=lambda wildcards: CONFIG["fits"][wildcards.fit]["liquid"]["md"][
            "timeout_s"
        ],
    shell:
        "{params.python:q} -m chemfit_core lammps {input:q} --timeout {params.timeout} > {log:q} 2>&1"


rule validate:
    """Properties at the fitted parameters next to the targets and initial values."""
    input:
        fit="results/{fit}/fit.json",
        logs=validation_logs,
    output:
        "results/{fit}/properties.csv",
    log:
        "logs/{fit}/validate.log",
    benchmark:
        "benchmarks/{fit}/validate.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        fit=fit_validation_config,
        workdir=lambda wildcards: f"work/{wildcards.fit}/round_trip",
    script:
        "../scripts/validate.py"
