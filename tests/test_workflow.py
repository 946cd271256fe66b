"""The Snakemake workflow end to end, for real, on a small version of the default config."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ase.io import read
from test_report_browser import _browser, _why_no_browser

from chemfit_core.stages.config import TEMPLATE_DIR

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


TEST_CONFIG = REPO / ".test" / "config"


def small_config(path: Path) -> Path:
    """The test config (.test/config/config.yaml: the default argon config with runs of seconds
    instead of minutes) at ``path``, with the user's structure set it names (vacancy.extxyz) beside it."""
    shutil.copy(TEST_CONFIG / "config.yaml", path)
    shutil.copy(TEST_CONFIG / "vacancy.extxyz", path.parent / "vacancy.extxyz")
    return path


def snakemake(workdir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    command = [SNAKEMAKE, *args, "-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "config.yaml"]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    import os

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    workdir = tmp_path_factory.mktemp("workflow")
    small_config(workdir / "config.yaml")
    done = snakemake(workdir, env)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, env


@pytest.mark.slow
def test_run_writes_parameters_with_units(finished_run):
    workdir, _ = finished_run
    params = json.loads((workdir / "results" / "params.json").read_text())["argon"]
    assert params["parameters"]["epsilon_K"]["unit"] == "K"
    assert params["parameters"]["sigma_A"]["unit"] == "Å"
    assert params["n_evaluations"] == 3 and params["method"] == "COBYQA"
    assert 80 <= params["parameters"]["epsilon_K"]["value"] <= 180


@pytest.mark.slow
def test_run_writes_the_properties_table(finished_run):
    workdir, _ = finished_run
    table = pd.read_csv(workdir / "results" / "properties.csv")
    for column in ("property", "target", "initial", "fitted", "error", "statistical_uncertainty"):
        assert column in table.columns
    assert set(table["property"]) == {"density_kg_m3", "hvap_kJ_mol"}
    assert (table["statistical_uncertainty"] > 0).all()
    assert table.loc[table["property"] == "density_kg_m3", "target"].item() == 1395.40


@pytest.mark.slow
def test_run_records_seeds_history_and_config_hash(finished_run):
    workdir, _ = finished_run
    record = json.loads((workdir / "results" / "argon" / "fit.json").read_text())
    assert record["seed"] == 20261123 and len(record["config_sha256"]) == 64
    assert [t["seed"] for t in record["terms"]] and len({t["seed"] for t in record["terms"]}) == 2
    assert len(record["history"]) == 3 and record["history"][0]["term_results"][0]["properties"]["n_atoms"] == 108
    history = pd.read_csv(workdir / "results" / "argon" / "fit_history.csv")
    assert list(history["evaluation"]) == [0, 1, 2]


@pytest.mark.slow
def test_report_holds_tables_and_the_convergence_plot(finished_run):
    workdir, _ = finished_run
    html = (workdir / "results" / "report.html").read_text()
    assert "Fitted parameters" in html and "epsilon_K" in html and "hvap_kJ_mol" in html
    assert "data:image/png;base64," in html
    assert (workdir / "results" / "argon" / "convergence.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_validation_runs_are_separate_lammps_jobs_with_logs(finished_run):
    workdir, _ = finished_run
    for replica in (0, 1):
        run = workdir / "results" / "argon" / "validation" / "normal_boiling_point" / f"r{replica}"
        assert "run             500" in (run / "in.lammps").read_text()
        assert "Loop time" in (run / "log.lammps").read_text()
    assert (workdir / "benchmarks" / "argon" / "fit.tsv").is_file()


@pytest.mark.slow
def test_fitted_model_relaxes_crystals_in_the_batched_engine(finished_run):
    workdir, _ = finished_run
    solid = pd.read_csv(workdir / "results" / "argon" / "solid_properties.csv")
    # the crystal target's names and implementation (chemfit_core.science.crystal.structure_energies)
    assert set(solid["property"]) >= {"a0_A", "Ec_eV", "E_hcp_eV", "E_bcc_eV", "E_fcc-rattled_eV", "E_vacancy_eV"}
    assert solid["converged"].all()
    lattice = solid.loc[solid["property"] == "a0_A"].iloc[0]
    assert lattice["target"] == 5.31 and 4.5 < lattice["fitted"] < 6.5
    assert 0.05 < solid.loc[solid["property"] == "Ec_eV", "fitted"].item() < 0.12  # eV/atom, against the free atom
    # three sets, three relax jobs: the prototypes, the rattled cells and the user's vacancy cell
    kinds = {"prototypes": ["fcc", "hcp", "bcc"], "perturbed": ["fcc-rattled"] * 2, "vacancy": ["vacancy"]}
    for name, expected in kinds.items():
        relaxed = read(workdir / "results" / "argon" / "solid" / name / "relaxed.extxyz", ":")
        assert [a.info["kind"] for a in relaxed] == expected
        log = (workdir / "logs" / "argon" / "solid" / name / "relax.log").read_text()
        assert f"relaxed {len(expected)} structures ({len(expected)} converged)" in log
    vacancy = solid.loc[solid["property"] == "E_vacancy_eV", "fitted"].iloc[0]
    assert 0 < vacancy < 0.08 / 31 * 12  # fewer bonds than fcc, less than 12 of the 31 atoms' bonds broken
    assert "Solid-state validation" in (workdir / "results" / "report.html").read_text()
    # the user's file passed its checks once and is remembered by content for later Snakemake starts
    (checked,) = (workdir / ".snakemake" / "chemfit" / "checked").iterdir()
    assert json.loads(checked.read_text())["file"] == str((workdir / "vacancy.extxyz").resolve())


@pytest.mark.slow
def test_second_run_has_nothing_to_do(finished_run):
    workdir, env = finished_run
    again = snakemake(workdir, env, "-n")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_same_seed_gives_the_same_fit_in_a_fresh_directory(finished_run, tmp_path):
    """Reproducibility: LAMMPS on one core with fixed seeds is deterministic, so is the fit."""
    workdir, env = finished_run
    small_config(tmp_path / "config.yaml")
    done = snakemake(tmp_path, env, "results/argon/params.json")
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads((workdir / "results" / "argon" / "params.json").read_text())
    second = json.loads((tmp_path / "results" / "argon" / "params.json").read_text())
    assert first == second


def test_dry_run_of_the_default_config_plans_every_stage(venv_env):
    done = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall"], cwd=REPO, env=venv_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    for rule in ("fit", "render_validation_input", "simulate", "validate", "collect", "report"):
        assert rule in output


def test_workflow_entry_point_in_workflow_folder_has_the_default_target(venv_env):
    done = subprocess.run(
        [SNAKEMAKE, "-n", "-s", "workflow/Snakefile"],
        cwd=REPO,
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "results/report.html" in done.stdout + done.stderr


@pytest.mark.parametrize("example", sorted((REPO / "config" / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_plans_alone_with_configfile(example, venv_env):
    """`snakemake --configfile config/examples/X.yaml` runs X's fits only (not merged with the default)."""
    done = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", "--configfile", str(example)],
        cwd=REPO,
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    fits = set(yaml.safe_load(example.read_text())["fits"])
    planned = {
        line.split("fit=")[1].split(",")[0].strip()
        for line in (done.stdout + done.stderr).splitlines()
        if "wildcards: fit=" in line
    }
    assert planned == fits


@pytest.mark.slow
def test_least_squares_fit_with_fluctuation_gradients_runs_in_the_workflow(tmp_path, venv_env):
    """The reduced argon_fluctuation example: least squares steps on gradients from each MD run."""
    config = yaml.safe_load((REPO / "config" / "examples" / "argon_fluctuation.yaml").read_text())
    fit = config["fits"]["argon_fluctuation"]
    fit["liquid"]["md"].update(
        n_cells=4, melt_steps=200, equilibration_steps=400, production_steps=2000, thermo_every=10, dump_every=20
    )
    fit["liquid"]["validation"].update(replicas=2, production_steps=500)
    fit["solid"]["perturbed_cells"] = 1
    fit["optimizer"]["max_evaluations"] = 3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(tmp_path, venv_env)
    assert done.returncode == 0, done.stderr[-3000:]
    # the covariance, propagated with the fluctuation gradients to the liquid properties
    table = pd.read_csv(tmp_path / "results" / "argon_fluctuation" / "properties.csv").set_index("property")
    assert (table.loc[["density_kg_m3", "hvap_kJ_mol"], "parameter_uncertainty"] > 0).all()
    record = json.loads((tmp_path / "results" / "argon_fluctuation" / "fit.json").read_text())
    assert record["method"] == "trf" and record["n_evaluations"] <= 4
    history = pd.read_csv(tmp_path / "results" / "argon_fluctuation" / "fit_history.csv")
    # gradient steps from (130 K, 3.55 Å) reduce the objective (short noisy runs: not to the optimum)
    assert history["objective"].min() < 0.5 * history["objective"].iloc[0]
    assert set(record["standard_errors"]) == {"epsilon_K", "sigma_A"}
    assert all(v > 0 for v in record["standard_errors"].values())


def run_example(name: str, tmp_path: Path, env: dict, edit=None) -> Path:
    """Run config/examples/<name>.yaml (optionally edited) in ``tmp_path``; return its results folder."""
    config = yaml.safe_load((REPO / "config" / "examples" / f"{name}.yaml").read_text())
    if edit:
        edit(config)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(tmp_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "results"


@pytest.mark.slow
def test_recovery_example_recovers_the_parameters_through_the_workflow(tmp_path, venv_env):
    results = run_example("recovery", tmp_path, venv_env)
    params = json.loads((results / "params.json").read_text())["recovery"]["parameters"]
    for name, entry in params.items():
        assert abs(entry["deviation_from_reference_percent"]) < 1e-4, name  # 1e-6 relative
        assert entry["standard_error"] > 0
    table = pd.read_csv(results / "properties.csv").set_index("property")
    assert table.loc["force_rmse_eV_A", "fitted"] < 1e-9
    # parity of every structure's energy and every force component: on the diagonal once fitted
    parity = pd.read_csv(results / "recovery" / "structures_parity.csv")
    assert (parity["quantity"] == "energy_per_atom").sum() == 8  # the example's 8 cells
    assert (parity["fitted"] - parity["reference"]).abs().max() < 1e-9
    assert (parity["initial"] - parity["reference"]).abs().max() > 0.1  # the start was far off
    assert "alt='structures_parity of recovery'" in (results / "report.html").read_text()
    # the fitted analytic EAM, written as a setfl file, gives LAMMPS the same numbers
    for key in ("energy", "forces", "stress"):
        assert table.loc[f"max_relative_difference_{key}", "fitted"] < 1e-6


@pytest.mark.slow
def test_copper_morse_example_flags_what_a_pair_potential_cannot_do(tmp_path, venv_env):
    def reduce(config):
        crystal = config["fits"]["copper_morse"]["crystal"]
        crystal.update(fmax=1e-5, validate=["C44_GPa"])
        config["fits"]["copper_morse"]["potential"]["cutoff_A"] = 8.0

    results = run_example("copper_morse", tmp_path, venv_env, reduce)
    table = pd.read_csv(results / "properties.csv").set_index("property")
    for name in ("a0_A", "Ec_eV", "B_GPa"):
        assert table.loc[name, "fitted_to"] and abs(table.loc[name, "error_percent"]) < 0.5
        assert table.loc[name, "parameter_uncertainty"] > 0  # covariance propagated to properties
    assert not table.loc["C44_GPa", "fitted_to"] and table.loc["C44_GPa", "error_percent"] > 40
    report = (results / "report.html").read_text()
    assert "Unfitted-property errors" in report and "C44_GPa" in report


@pytest.mark.slow
def test_copper_eam_example_runs_and_round_trips_through_lammps(tmp_path, venv_env):
    def reduce(config):
        fit = config["fits"]["copper_eam"]
        fit["crystal"].update(fmax=1e-4, validate=["B_GPa"], vacancy_cells=2)
        fit["optimizer"]["max_evaluations"] = 2

    results = run_example("copper_eam", tmp_path, venv_env, reduce)
    table = pd.read_csv(results / "properties.csv").set_index("property")
    # the matched start is already within a few per cent of experiment
    for name in ("a0_A", "Ec_eV", "C11_GPa", "C12_GPa", "C44_GPa", "vacancy_eV"):
        assert abs(table.loc[name, "error_percent"]) < 10, name
    for key in ("energy", "forces", "stress"):
        assert table.loc[f"max_relative_difference_{key}", "fitted"] < 1e-5
    assert (tmp_path / "work" / "copper_eam" / "round_trip" / "fitted.eam.alloy").is_file()


@pytest.mark.slow
def test_provenance_records_versions_revision_seeds_and_input_hashes(finished_run):
    import hashlib

    workdir, _ = finished_run
    record = json.loads((workdir / "results" / "provenance.json").read_text())
    assert record["versions"]["lammps"] and record["versions"]["torch"] and record["versions"]["snakemake"]
    assert len(record["chemfit_workflow"]["commit"] or "") == 40
    assert record["seeds"]["master"] == record["config"]["seed"]
    fit = json.loads((workdir / "results" / "argon" / "fit.json").read_text())
    assert record["seeds"]["argon"] == {t["name"]: t["seed"] for t in fit["terms"]}
    template = TEMPLATE_DIR / "lj_liquid_npt.lammps.j2"
    assert record["inputs_sha256"][str(template)] == hashlib.sha256(template.read_bytes()).hexdigest()
    assert "config sha256" in (workdir / "results" / "report.html").read_text()


@pytest.mark.slow
def test_a_consumer_workflow_reuses_ours_as_a_module(tmp_path, venv_env):
    """`module` + `use rule * from chemfit as chemfit_*` from another directory runs our stages."""
    small_config(tmp_path / "config.yaml")
    (tmp_path / "Snakefile").write_text(f"""
configfile: "config.yaml"


module chemfit:
    snakefile:
        "{REPO / "workflow" / "Snakefile"}"
    config:
        config


use rule * from chemfit as chemfit_*


rule paper:
    input:
        "results/params.json",
        "results/report.html",
    output:
        "paper/fitted_parameters.json",
    shell:
        "mkdir -p paper && cp {{input[0]}} {{output}}"
""")
    done = subprocess.run(
        [SNAKEMAKE, "--cores", "2", "paper/fitted_parameters.json"],
        cwd=tmp_path,
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    params = json.loads((tmp_path / "paper" / "fitted_parameters.json").read_text())
    assert params["argon"]["parameters"]["epsilon_K"]["unit"] == "K"
    assert (tmp_path / "results" / "report.html").is_file()
    assert "chemfit_fit" in done.stderr + done.stdout  # the renamed rules ran


def _can_run_slurm() -> str | None:
    """Why the real SLURM test cannot run here, or None."""
    import os
    import shutil

    if os.geteuid() != 0:
        return "starting slurmctld/slurmd and installing their Debian packages needs root"
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        return "no SLURM installed and no apt-get to install it from Debian packages"
    return None


def start_slurm_cluster() -> None:
    """The one-node cluster of tests/slurm/start_cluster.sh, up and taking jobs."""
    started = subprocess.run(
        ["bash", str(REPO / "tests" / "slurm" / "start_cluster.sh")], capture_output=True, text=True, timeout=600
    )
    assert started.returncode == 0 and "ready" in started.stdout, started.stderr[-2000:]


def scontrol_show(kind: str, name: str) -> str:
    """``scontrol show job|node NAME``: what the cluster holds for it."""
    return subprocess.run(["scontrol", "show", kind, name], capture_output=True, text=True, timeout=30).stdout


def slurm_snakemake(profile: str, *targets_and_options: str, jobs: int) -> list[str]:
    """The command running the workflow through ``profiles/<profile>`` on that cluster: the
    profile's default resources give way to the cluster's (partition debug, no account, 1 GB,
    30 min); its per-rule resources stay; job status from squeue."""
    return [
        SNAKEMAKE,
        *targets_and_options,
        "-s",
        str(REPO / "Snakefile"),
        "--configfile",
        "config.yaml",
        "--profile",
        str(REPO / "profiles" / profile),
        "--jobs",
        str(jobs),
        "--slurm-no-account",
        "--default-resources",
        "slurm_partition=debug",
        "mem_mb=1000",
        "runtime=30",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "5",
    ]


@pytest.mark.slow
@pytest.mark.skipif(_can_run_slurm() is not None, reason=str(_can_run_slurm()))
def test_slurm_profile_on_a_real_cluster_gives_the_local_results(finished_run, tmp_path, venv_env):
    """The test config through profiles/slurm (--executor slurm, real slurmctld and slurmd on this
    machine, started by tests/slurm/start_cluster.sh): every job is an sbatch job, and the
    fitted parameters and properties equal the local run's exactly (same seeds)."""
    start_slurm_cluster()
    local_dir, _ = finished_run
    small_config(tmp_path / "config.yaml")
    command = slurm_snakemake("slurm", jobs=4)
    done = subprocess.run(command, cwd=tmp_path, env=venv_env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Job " in output and "has been submitted with SLURM jobid" in output
    params = (tmp_path / "results" / "params.json").read_text()
    assert params == (local_dir / "results" / "params.json").read_text()
    history = [
        pd.read_csv(d / "results" / "argon" / "fit_history.csv").drop(columns="wall_time_s")
        for d in (tmp_path, local_dir)
    ]
    pd.testing.assert_frame_equal(*history)
    local_props = pd.read_csv(local_dir / "results" / "properties.csv")
    slurm_props = pd.read_csv(tmp_path / "results" / "properties.csv")
    pd.testing.assert_frame_equal(slurm_props, local_props)


@pytest.mark.slow
@pytest.mark.skipif(_can_run_slurm() is not None, reason=str(_can_run_slurm()))
def test_gpu_profile_puts_relax_jobs_on_the_gpu_partition_holding_one_gpu(finished_run, tmp_path, venv_env):
    """profiles/slurm-gpu on the real cluster, whose node declares one GPU (device file /dev/null:
    this machine has none): every relax job is an sbatch job on partition gpu holding
    gres/gpu=1 (scontrol), the other jobs stay on the CPU partition; `solid.device: auto`
    finds no CUDA device in the job and relaxes on the CPU, giving the local run's properties."""
    import shutil

    start_slurm_cluster()
    asked = yaml.safe_load((REPO / "profiles" / "slurm-gpu" / "config.yaml").read_text())["set-resources"]["relax"]
    declared = int(re.search(r"RealMemory=(\d+)", scontrol_show("node", socket.gethostname())).group(1))
    if declared < asked["mem_mb"]:
        pytest.skip(f"profiles/slurm-gpu asks {asked['mem_mb']} MB per relax job; this machine's node has {declared}")
    local_dir, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(local_dir, run)  # a finished run: only the relax jobs and what reads them run again
    command = slurm_snakemake("slurm-gpu", "results/argon/solid_properties.csv", "--forcerun", "relax", jobs=4)
    done = subprocess.run(command, cwd=run, env=venv_env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)", output)
    relax = [job for job, log in submitted if "rule_relax" in log]
    others = [job for job, log in submitted if "rule_relax" not in log]
    assert len(relax) == 3 and others, output[-3000:]  # prototypes, perturbed, vacancy; then solid_properties
    for job in relax:
        shown = scontrol_show("job", job)
        assert "Partition=gpu" in shown and re.search(r"gres[/:]gpu[:=]1", shown), shown
    for job in others:
        shown = scontrol_show("job", job)
        assert "Partition=debug" in shown and not re.search(r"gres[/:]gpu", shown), shown
    for name in ("prototypes", "perturbed", "vacancy"):
        assert "on cpu (torch engine)" in (run / "logs" / "argon" / "solid" / name / "relax.log").read_text()
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "results" / "argon" / "solid_properties.csv"),
        pd.read_csv(local_dir / "results" / "argon" / "solid_properties.csv"),
    )


def mpi_config(path: Path, ranks: int = 2) -> Path:
    """The test config, fitted on ``ranks`` MPI ranks."""
    config = yaml.safe_load(small_config(path).read_text())
    config["fits"]["argon"]["mpi"] = {"ranks": ranks}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_an_mpi_fit_gives_the_threaded_fit_exactly(finished_run, tmp_path):
    """Locally: the fit rule starts `mpiexec -n 2`; LAMMPS (an MPI program itself) runs as a
    singleton on each rank, and the parameters equal the threaded run's."""
    local_dir, env = finished_run
    mpi_config(tmp_path / "config.yaml")
    done = snakemake(tmp_path, env, "results/argon/params.json")
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "logs" / "argon" / "fit.log").read_text()
    assert "MPI rank 0 of 2" in log and "MPI rank 1 of 2" in log
    assert json.loads((tmp_path / "results" / "argon" / "fit.json").read_text())["evaluator"] == "mpi"
    assert (tmp_path / "results" / "argon" / "params.json").read_text() == (
        local_dir / "results" / "argon" / "params.json"
    ).read_text()


@pytest.mark.slow
@pytest.mark.skipif(_can_run_slurm() is not None, reason=str(_can_run_slurm()))
def test_an_mpi_fit_is_one_slurm_job_with_several_tasks(finished_run, tmp_path, venv_env):
    """fits.argon.mpi.ranks = 2 through profiles/slurm: the fit is one sbatch job of 2 tasks
    (scontrol), run by `mpiexec -n 2` with MPIWrapperCOB inside it, and its parameters equal
    the local threaded run's exactly (same seeds, terms spread over ranks instead of threads)."""
    start_slurm_cluster()
    local_dir, _ = finished_run
    mpi_config(tmp_path / "config.yaml")
    command = slurm_snakemake("slurm", "results/argon/params.json", jobs=2)
    done = subprocess.run(command, cwd=tmp_path, env=venv_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    log = (tmp_path / "logs" / "argon" / "fit.log").read_text()
    assert "mpiexec -n 2" in log and "MPI rank 0 of 2" in log and "MPI rank 1 of 2" in log
    job = re.search(r"inside SLURM job (\d+)", log).group(1)
    shown = scontrol_show("job", job)
    assert "NumTasks=2" in shown and "CPUs/Task=1" in shown, shown
    record = json.loads((tmp_path / "results" / "argon" / "fit.json").read_text())
    assert record["evaluator"] == "mpi" and record["n_workers"] == 2
    assert (tmp_path / "results" / "argon" / "params.json").read_text() == (
        local_dir / "results" / "argon" / "params.json"
    ).read_text()


@pytest.mark.slow
def test_a_config_edit_reruns_only_the_affected_jobs(finished_run, tmp_path):
    """Editing the solid validation reruns the solid stage, not the fit; editing the validation
    run length reruns the validation simulations, not the fit; a fitted setting reruns the fit."""
    import shutil

    workdir, env = finished_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy, symlinks=True)

    def planned(edit) -> set[str]:
        config = yaml.safe_load((workdir / "config.yaml").read_text())
        edit(config["fits"]["argon"])
        (copy / "config.yaml").write_text(yaml.safe_dump(config))
        done = snakemake(copy, env, "-n")
        assert done.returncode == 0, done.stderr[-2000:]
        return {
            line.split()[1].rstrip(":")
            for line in (done.stdout + done.stderr).splitlines()
            if line.startswith(("rule ", "localrule "))
        }

    assert planned(lambda fit: None) == set()
    solid = planned(lambda fit: fit["solid"].update(fmax=0.002))
    assert "relax" in solid and "fit" not in solid and "simulate" not in solid
    validation = planned(lambda fit: fit["liquid"]["validation"].update(production_steps=600))
    assert "simulate" in validation and "fit" not in validation and "relax" not in validation
    assert "fit" in planned(lambda fit: fit["parameters"]["sigma_A"].update(initial=3.5))


@pytest.mark.slow
def test_snakemake_report_holds_every_plot_with_its_caption(finished_run, tmp_path):
    workdir, env = finished_run
    assert (workdir / "results" / "argon" / "properties.png").stat().st_size > 10_000
    done = snakemake(workdir, env, "--report", str(tmp_path / "report.zip"))
    assert done.returncode == 0, done.stderr[-2000:]
    import zipfile

    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    for plot in ("convergence.png", "properties.png", "report.html"):
        assert any(n.endswith(plot) for n in names), plot
    html = (workdir / "results" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # convergence and properties, embedded


def _painted_fraction(png: Path) -> float:
    """Share of a screenshot's pixels that are not background white."""
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    return float((pixels.min(axis=-1) < 0.9).mean())


@pytest.mark.slow
@pytest.mark.skipif(_why_no_browser() is not None, reason=str(_why_no_browser()))
def test_reports_open_in_a_headless_browser_and_show_the_plots(finished_run, tmp_path):
    """results/report.html and `snakemake --report` in a real Chromium: every plot decoded and
    laid out, screenshots written (tmp_path/*.png)."""
    workdir, env = finished_run
    done = snakemake(workdir, env, "--report", str(tmp_path / "snakemake_report.html"))
    assert done.returncode == 0, done.stderr[-2000:]
    browser = _browser(1280, 1600)
    try:
        browser.get((workdir / "results" / "report.html").as_uri())
        assert browser.title == "chemfit-workflow report"
        images = browser.execute_script(
            "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
            "width: i.naturalWidth, shown: i.getBoundingClientRect().width}))"
        )
        assert {i["alt"] for i in images} == {"convergence of argon", "terms and properties of argon"}
        for image in images:  # decoded (naturalWidth) and laid out on the page (shown width)
            assert image["complete"] and image["width"] > 500 and image["shown"] > 300, image
        text = browser.execute_script("return document.body.innerText")
        assert "Solid-state validation" in text and "Provenance" in text
        # wide tables scroll in their own box: the page itself fits the window's width
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, height)
        assert browser.save_screenshot(str(tmp_path / "report.png"))
        assert _painted_fraction(tmp_path / "report.png") > 0.05  # tables and plots, not a blank page

        browser.get((tmp_path / "snakemake_report.html").as_uri())  # a JavaScript application
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_elements(By.XPATH, "//span[text()='Fits']"))[0].click()
        for plot in ("convergence.png", "properties.png"):
            row = wait.until(
                lambda b, plot=plot: b.find_elements(By.XPATH, f"//td[contains(text(), '{plot}')]/ancestor::tr")
            )[0]
            row.find_element(By.XPATH, ".//a[@iconname='eye']").click()  # show the result
            shown = wait.until(
                lambda b, plot=plot: b.execute_script(
                    "return Array.from(document.images).filter(i => i.src.includes('filename=' + arguments[0]) "
                    "&& i.complete && i.naturalWidth > 500 && i.getBoundingClientRect().width > 300).length",
                    plot,
                )
            )
            assert shown == 1, plot
            assert browser.save_screenshot(str(tmp_path / f"snakemake_report_{plot}"))
            assert _painted_fraction(tmp_path / f"snakemake_report_{plot}") > 0.05
    finally:
        browser.quit()


@pytest.mark.slow
def test_an_edited_weight_refits_but_reads_every_lammps_run_from_the_run_cache(finished_run, tmp_path):
    """A new weight changes the objective, so the evaluation cache (keyed by the config) misses;
    COBYQA's first evaluations do not depend on the objective's values, so the LAMMPS runs
    they ask for — same rendered inputs, seeds, engine — are all read from work/argon/cache/runs."""
    import shutil

    local_dir, env = finished_run
    for name in ("config.yaml", "vacancy.extxyz", "work", "results"):
        copy = shutil.copytree if (local_dir / name).is_dir() else shutil.copy
        copy(local_dir / name, tmp_path / name)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["fits"]["argon"]["liquid"]["state_points"][0]["weight"] = 2.0
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(tmp_path, env, "results/argon/params.json", "--forcerun", "fit")
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "logs" / "argon" / "fit.log").read_text()
    assert "0 evaluations replayed from the cache, 3 computed" in log
    assert re.search(r"LAMMPS runs: 6 read from \S+, 0 run", log), log[-2000:]
    before = json.loads((local_dir / "results" / "argon" / "fit.json").read_text())["history"]
    after = json.loads((tmp_path / "results" / "argon" / "fit.json").read_text())["history"]
    assert [e["term_results"] for e in after] == [e["term_results"] for e in before]  # the same runs
