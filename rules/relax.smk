rule prepare_solid:
    """Crystal structures (fcc, hcp, bcc, rattled cells) for the fitted model."""
    input:
        params="results/{fit}/params.json",
    output:
        "results/{fit}/solid/initial.extxyz",
    log:
        "logs/{fit}/solid/prepare.log",
    benchmark:
        "benchmarks/{fit}/solid/prepare.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        fit=solid_config,
        seed=config["seed"],
    script:
        "../scripts/prepare_solid.py"


rule relax:
    """Batched relaxation (cell included) of a structure set with the fitted model."""
    input:
        structures="results/{fit}/solid/initial.extxyz",
        params="results/{fit}/params.json",
    output:
        "results/{fit}/solid/relaxed.extxyz",
    log:
        "logs/{fit}/solid/relax.log",
    benchmark:
        "benchmarks/{fit}/solid/relax.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    # torch's batched kernels use every core given (one thread would halve the rate)
    threads: workflow.cores
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=lambda wildcards: (
            1 if config["fits"][wildcards.fit]["solid"]["device"] == "cuda" else 0
        ),
    params:
        python=PYTHON,
        fmax=lambda wildcards: config["fits"][wildcards.fit]["solid"]["fmax"],
        device=lambda wildcards: config["fits"][wildcards.fit]["solid"]["device"],
    shell:
        "{params.python:q} -m chemfit_core relax {input.structures:q} {output:q}"
        " --fit-params {input.params:q} --fit {wildcards.fit} --relax-cell"
        " --fmax {params.fmax} --device {params.device} > {log:q} 2>&1"


rule solid_properties:
    """Lattice constant, cohesive energy, structure energies next to experiment."""
    input:
        "results/{fit}/solid/relaxed.extxyz",
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
