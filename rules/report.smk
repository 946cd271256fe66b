rule collect:
    """All fits' parameters and properties in one file each."""
    input:
        params=expand("results/{fit}/params.json", fit=FITS),
        properties=expand("results/{fit}/properties.csv", fit=FITS),
    output:
        params="results/params.json",
        properties="results/properties.csv",
    log:
        "logs/collect.log",
    benchmark:
        "benchmarks/collect.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/collect.py"


rule convergence_plot:
    """Objective and parameters per evaluation of one fit (PNG, and PDF for papers)."""
    input:
        "results/{fit}/fit.json",
    output:
        png=report(
            "results/{fit}/convergence.png",
            caption="../workflow/report/convergence.rst",
            category="Fits",
            subcategory="{fit}",
        ),
        pdf="results/{fit}/convergence.pdf",
    log:
        "logs/{fit}/convergence_plot.log",
    benchmark:
        "benchmarks/{fit}/convergence_plot.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/convergence_plot.py"


rule properties_plot:
    """Objective terms per evaluation, and the properties' errors (fitted and validation; PNG and PDF)."""
    input:
        fit="results/{fit}/fit.json",
        properties="results/{fit}/properties.csv",
        solid=fit_solid_table,
    output:
        png=report(
            "results/{fit}/properties.png",
            caption="../workflow/report/properties.rst",
            category="Fits",
            subcategory="{fit}",
        ),
        pdf="results/{fit}/properties.pdf",
    log:
        "logs/{fit}/properties_plot.log",
    benchmark:
        "benchmarks/{fit}/properties_plot.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        flags=fit_figure_flags,  # what the figure shows: its caption says only that
    script:
        "../scripts/properties_plot.py"


rule structures_parity:
    """Reference vs fitted energies and forces of a fit's reference structures."""
    input:
        fit="results/{fit}/fit.json",
        structures=structure_files,
    output:
        png=report(
            "results/{fit}/structures_parity.png",
            caption="../workflow/report/structures_parity.rst",
            category="Fits",
            subcategory="{fit}",
        ),
        pdf="results/{fit}/structures_parity.pdf",
        csv="results/{fit}/structures_parity.csv",
    log:
        "logs/{fit}/structures_parity.log",
    benchmark:
        "benchmarks/{fit}/structures_parity.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/structures_parity.py"


rule provenance:
    """Versions, code revision, configuration and its hash, seeds and input hashes (results/provenance.json)."""
    input:
        fits=expand("results/{fit}/fit.json", fit=FITS),
        inputs=all_inputs,
        # after the validation (its properties and round trip), so it comes last
        properties=expand("results/{fit}/properties.csv", fit=FITS),
    output:
        "results/provenance.json",
    log:
        "logs/provenance.log",
    benchmark:
        "benchmarks/provenance.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        config=canonical(CONFIG),
        workflow_dir=workflow.basedir,
    script:
        "../scripts/provenance.py"


rule report:
    """The one-file HTML report (results/report.html)."""
    input:
        provenance="results/provenance.json",
        params="results/params.json",
        properties="results/properties.csv",
        fits=expand("results/{fit}/fit.json", fit=FITS),
        plots=expand("results/{fit}/convergence.png", fit=FITS),
        property_plots=expand("results/{fit}/properties.png", fit=FITS),
        solid=solid_tables,
        parity=parity_plots,
    output:
        report(
            "results/report.html",
            caption="../workflow/report/report.rst",
            category="Summary",
        ),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        # the captions Snakemake's report shows beside the figures, rendered in ours too
        # their text, not their (per-run temporary) source paths: params must not change between runs
        captions={
            name: Path(
                workflow.source_path(f"../workflow/report/{name}.rst")
            ).read_text()
            for name in ("convergence", "properties", "structures_parity")
        },
        flags=report_flags,
    script:
        "../scripts/report.py"


rule tables:
    """The fitted parameters and the properties for papers: LaTeX (booktabs), Markdown and CSV."""
    input:
        params="results/params.json",
        properties="results/properties.csv",
        fits=expand("results/{fit}/fit.json", fit=FITS),
        solid=solid_tables,
    output:
        parameters_tex=report(
            "results/tables/parameters.tex",
            caption="../workflow/report/tables.rst",
            category="Tables",
        ),
        parameters_md=report(
            "results/tables/parameters.md",
            caption="../workflow/report/tables.rst",
            category="Tables",
        ),
        parameters_csv=report(
            "results/tables/parameters.csv",
            caption="../workflow/report/tables.rst",
            category="Tables",
        ),
        properties_tex=report(
            "results/tables/properties.tex",
            caption="../workflow/report/tables.rst",
            category="Tables",
        ),
        properties_md=report(
            "results/tables/properties.md",
            caption="../workflow/report/tables.rst",
            category="Tables",
        ),
        properties_csv=report(
            "results/tables/properties.csv",
            caption="../workflow/report/tables.rst",
            category="Tables",
        ),
    log:
        "logs/tables.log",
    benchmark:
        "benchmarks/tables.tsv"
    conda:
        "../workflow/envs/chemfit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/tables.py"
