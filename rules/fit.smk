rule fit:
    """Fit one configuration: liquid terms are LAMMPS runs, crystal/structure terms run in-process, all concurrently."""
    input:
        template=liquid_template,
        files=liquid_files,
        references=reference_files,
        structures=structure_files,
        crystals=crystal_files,
    output:
        fit="results/{fit}/fit.json",
        params="results/{fit}/params.json",
        history="results/{fit}/fit_history.csv",
        # the fitted potential: LAMMPS include file, and the form's file (setfl, .sw, .tersoff)
        potential="results/{fit}/potential.lammps",
        potential_files=directory("results/{fit}/potential"),
    log:
        "logs/{fit}/fit.log",
    benchmark:
        "benchmarks/{fit}/fit.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: fit_threads
    resources:
        mem_mb=2000,
        runtime=120,
        # under MPI (fits.<name>.mpi.ranks >= 2): one SLURM job with `tasks` tasks of one core
        mpi=fit_mpi,
        tasks=lambda wildcards: fit_ranks(wildcards) or 1,
        cpus_per_task=lambda wildcards: 1 if fit_ranks(wildcards) else 0,
    params:
        fit=fit_core_config,
        seed=CONFIG["seed"],
        workdir=lambda wildcards: f"work/{wildcards.fit}",
    script:
        "../scripts/fit.py"
