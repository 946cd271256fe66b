"""Helpers shared by the rules, and validation of the configuration."""

import json
import sys
from pathlib import Path

from chemfit_core.stages.config import read_config_file, template_path, validate_config
from chemfit_core.stages.cutoff_checks import cutoff_warnings
from chemfit_core.stages.solid import solid_sets
from chemfit_core.stages.template_contract import config_warnings

PYTHON = sys.executable

# Config files read again strictly first: duplicate keys, YAML aliases (a "billion laughs"
# expands without bound when validated), non-UTF-8 text and YTE templates stop here, named.
for _path in workflow.configfiles:
    read_config_file(_path)
# The rules read the validated copy, defaults filled in; Snakemake's own `config` is left as given.
CONFIG = validate_config(
    config,
    source=", ".join(str(f) for f in workflow.configfiles) or "the module's config",
    # structure files that passed are remembered by content: every Snakemake start validates
    checked_dir=Path(".snakemake") / "chemfit" / "checked",
    # the user's files are relative to the config file (a module's config: the working directory)
    base_dir=Path(workflow.configfiles[0]).parent if workflow.configfiles else None,
)

_SOURCE = ", ".join(map(str, workflow.configfiles)) or "the module's config"
# what check-config warns about, at every start: keys the templates ignore, unsuitable cutoffs
for warning in [
    *config_warnings(CONFIG, _SOURCE, given=config),
    *cutoff_warnings(CONFIG, _SOURCE),
]:
    print(f"chemfit: warning: {warning}", file=sys.stderr)

FITS = list(CONFIG["fits"])


wildcard_constraints:
    fit="|".join(FITS),
    replica=r"\d+",
    set=r"[A-Za-z][A-Za-z0-9_-]*",


def fit_config(wildcards):
    return CONFIG["fits"][wildcards.fit]


# Keys of a fit that do not change the fit itself: editing them must not rerun it.
NOT_FITTED = ("solid", "description")
# How the fit's terms are spread over cores or ranks: never its result.
EXECUTION = ("workers", "mpi")


def canonical(section):
    """``section`` with its keys sorted at every level: Snakemake compares params in order, and
    reordering keys in the config file must not rerun a job."""
    return json.loads(json.dumps(section, sort_keys=True))


def solid_config(wildcards):
    fit = CONFIG["fits"][wildcards.fit]
    return canonical({"element": fit["element"], "solid": fit["solid"]})


def _fitted_crystal(section):
    """A crystal section without what only the validation reads."""
    return {
        k: v
        for k, v in section.items()
        if k not in ("validate", "validation_references")
    }


def fit_core_config(wildcards):
    """What the fit itself depends on: editing anything else must not rerun it."""
    fit = {
        k: v for k, v in fit_validation_config(wildcards).items() if k not in EXECUTION
    }
    if "liquid" in fit:
        fit["liquid"] = {k: v for k, v in fit["liquid"].items() if k != "validation"}
    if "crystal" in fit:
        fit["crystal"] = _fitted_crystal(fit["crystal"])
    if "crystals" in fit:
        fit["crystals"] = {
            name: _fitted_crystal(c) for name, c in fit["crystals"].items()
        }
    return canonical(fit)


def fit_validation_config(wildcards):
    """What the validation of a fit depends on (everything but the solid stage)."""
    fit = CONFIG["fits"][wildcards.fit]
    return canonical(
        {key: value for key, value in fit.items() if key not in NOT_FITTED}
    )


def liquid_template(wildcards):
    fit = CONFIG["fits"][wildcards.fit]
    if "liquid" not in fit:
        return []
    return str(template_path(fit["liquid"]["template"]))


def liquid_files(wildcards):
    """Files the liquid template reads (molecule, data, potential...): copied into every run."""
    fit = CONFIG["fits"][wildcards.fit]
    return fit["liquid"]["files"] if "liquid" in fit else []


def _reference_files(fit):
    """Reference data files of a fit's liquid targets (each state point's ``rdf.file``)."""
    points = fit["liquid"]["state_points"] if "liquid" in fit else []
    return [point["rdf"]["file"] for point in points if "rdf" in point]


def reference_files(wildcards):
    """Reference data the objective reads (an RDF curve): a changed file reruns the fit."""
    return _reference_files(CONFIG["fits"][wildcards.fit])


def _crystal_files(fit):
    """Structure files of a fit's crystals (``crystal``, ``crystals.<name>``, ``lattice: file``)."""
    sections = [fit.get("crystal", {}), *fit.get("crystals", {}).values()]
    return [c["structure_file"] for c in sections if c.get("structure_file")]


def crystal_files(wildcards):
    """Structure files the crystal targets start from: a changed file reruns the fit."""
    return _crystal_files(CONFIG["fits"][wildcards.fit])


def structure_files(wildcards):
    spec = CONFIG["fits"][wildcards.fit].get("structures", {})
    return [spec["file"]] if "file" in spec else []


def fit_ranks(wildcards):
    """MPI ranks of a fit; 0: one process with a thread pool."""
    ranks = CONFIG["fits"][wildcards.fit]["mpi"]["ranks"]
    return ranks if ranks >= 2 else 0


def fit_threads(wildcards):
    if fit_ranks(wildcards):
        return fit_ranks(wildcards)  # one core per rank, each runs its terms one by one
    workers = CONFIG["fits"][wildcards.fit]["workers"]
    return workers if workers > 0 else workflow.cores


def fit_mpi(wildcards):
    """The MPI launcher of a fit run under MPI, else empty (the SLURM executor then
    submits a plain job with --cpus-per-task = threads)."""
    return (
        CONFIG["fits"][wildcards.fit]["mpi"]["launcher"] if fit_ranks(wildcards) else ""
    )


def validation_logs(wildcards):
    fit = CONFIG["fits"][wildcards.fit]
    if "liquid" not in fit:
        return []
    replicas = fit["liquid"]["validation"]["replicas"]
    return [
        f"results/{wildcards.fit}/validation/{sp['name']}/r{replica}/log.lammps"
        for sp in fit["liquid"]["state_points"]
        for replica in range(replicas)
    ]


def solid_set_file(wildcards):
    """A user's structure file of a solid set (none for the built-in sets)."""
    sets = CONFIG["fits"][wildcards.fit]["solid"]["sets"]
    return [sets[wildcards.set]["file"]] if wildcards.set in sets else []


def relaxed_sets(wildcards):
    return [
        f"results/{wildcards.fit}/solid/{name}/relaxed.extxyz"
        for name in solid_sets(CONFIG["fits"][wildcards.fit])
    ]


def solid_tables(wildcards=None):
    return [
        f"results/{name}/solid_properties.csv"
        for name, fit in CONFIG["fits"].items()
        if fit["solid"]["enabled"]
    ]


def parity_plots(wildcards=None):
    """Parity plots of the fits with reference structures."""
    return [
        f"results/{name}/structures_parity.png"
        for name, fit in CONFIG["fits"].items()
        if "structures" in fit
    ]


def fit_solid_table(wildcards):
    """The solid-stage table of a fit, where its solid stage runs (its properties plot shows it)."""
    return (
        [f"results/{wildcards.fit}/solid_properties.csv"]
        if CONFIG["fits"][wildcards.fit]["solid"]["enabled"]
        else []
    )


def fit_figure_flags(wildcards):
    """What a fit's properties figure shows (its caption depends on it)."""
    from chemfit_core.stages.report_tables import figure_flags

    return figure_flags(CONFIG["fits"][wildcards.fit])


def report_flags(wildcards=None):
    """fit → :func:`fit_figure_flags`, for the captions of the one-file report."""
    from chemfit_core.stages.report_tables import figure_flags

    return {name: figure_flags(fit) for name, fit in CONFIG["fits"].items()}


def all_inputs(wildcards=None):
    """Every input file of every fit (templates and their files, structures), for provenance hashes."""
    files = []
    for fit in CONFIG["fits"].values():
        if "liquid" in fit:
            files.append(str(template_path(fit["liquid"]["template"])))
            files += fit["liquid"]["files"]
            files += _reference_files(fit)
        if "file" in fit.get("structures", {}):
            files.append(fit["structures"]["file"])
        files += _crystal_files(fit)
        if fit["solid"]["enabled"]:
            files += [spec["file"] for spec in fit["solid"]["sets"].values()]
    return sorted(set(files))
