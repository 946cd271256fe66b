rule prepare_solid:
    """One structure set for the fitted model: prototypes (fcc, hcp, bcc), rattled cells, or a user's file (checked)."""
    input:
        params="results/{fit}/params.json",
        structures=solid_set_file,
    output:
        "results/{fit}/solid/{set}/initial.extxyz",
    log:
        "logs/{fit}/solid/{set}/prepare.log",
    benchmark:
        "benchmarks/{fit}/solid/{set}/prepare.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        fit=solid_config,
        seed=CONFIG["seed"],
    script:
        "../scripts/prepare_solid.py"


rule relax:
    """Batched relaxation (cell included) of one structure set with the fitted model."""
    input:
        structures="results/{fit}/solid/{set}/initial.extxyz",
        params="results/{fit}/params.json",
    output:
        "results/{fit}/solid/{set}/relaxed.extxyz",
    log:
        "logs/{fit}/solid/{set}/relax.log",
    benchmark:
        "benchmarks/{fit}/solid/{set}/relax.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    # torch's batched kernels use every core given (one thread would halve the rate)
    threads: workflow.cores
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=lambda wildcards: (
            1 if CONFIG["fits"][wildcards.fit]["solid"]["device"] == "cuda" else 0
        ),
    params:
        python=PYTHON,
        fmax=lambda wildcards: CONFIG["fits"][wildcards.fit]["solid"]["fmax"],
        device=lambda wildcards: CONFIG["fits"][wildcards.fit]["solid"]["device"],
    shell:
        "{params.python:q} -m chemfit_core relax {input.structures:q} {output:q}"
        " --fit-params {input.params:q} --fit {wildcards.fit} --relax-cell"
        " --fmax {params.fmax} --device {params.device} > {log:q} 2>&1"


rule solid_properties:
    """Lattice constant, cohesive energy, structure energies of every relaxed set next to experiment."""
    input:
        relaxed=relaxed_sets,
        params="results/{fit}/params.json",
    output:
        "results/{fit}/solid_properties.csv",
    log:
        "logs/{fit}/solid/properties.log",
    benchmark:
        "benchmarks/{fit}/solid/properties.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        fit=solid_config,
    script:
        "../scripts/solid_properties.py"
