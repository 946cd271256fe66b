"""Liquid observables: thermo columns as targets and the NPT response functions κ_T, α_P, c_P.

The estimators against numpy on synthetic series, their parameter derivatives against exactly
solvable ensembles, and (slow) against finite differences between real LAMMPS state points of LJ
argon: α_P from ρ(T ± ΔT), κ_T from ρ(p ± Δp), c_P from H(T ± ΔT).
"""

from __future__ import annotations

import numpy as np
import pytest
from liquid_runs import ARGON_THETA, argon_md, argon_term

from chemfit_core import ChemFitError, EvaluateContext
from chemfit_core.science.liquid import Reference, liquid_properties
from chemfit_core.science.observables import (
    BAR_A3_TO_EV,
    ThermoObservable,
    compressibility,
    heat_capacity,
    response_gradient,
    response_properties,
    thermal_expansion,
    thermo_header,
)
from chemfit_core.units import EV_A3_TO_GPA, EV_PER_K_TO_J_PER_MOL_K, KB_EV_PER_K

T = 95.0


def synthetic_thermo(n: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    """Correlated V and H series of a 256-atom box (AR(1) noise, V and H positively coupled)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, 2))
    series = np.empty((n, 2))
    series[0] = noise[0]
    for i in range(1, n):
        series[i] = 0.9 * series[i - 1] + noise[i]
    volume = 12000.0 + 60.0 * series[:, 0]
    kinetic = np.full(n, 1.5 * 256 * KB_EV_PER_K * T)
    potential = -15.0 + 0.3 * series[:, 1] + 0.004 * (volume - 12000.0)
    return {
        "Atoms": np.full(n, 256),
        "PotEng": potential,
        "KinEng": kinetic,
        "Volume": volume,
        "Density": 39.948 * 256 / 6.02214076e23 / (volume * 1e-24),
        "Press": np.full(n, 1.0),
        "Temp": np.full(n, T),
        "TotEng": potential + kinetic,
    }


def test_compressibility_is_the_volume_variance_over_kT_V():
    thermo = synthetic_thermo()
    v = thermo["Volume"]
    expected = np.var(v) / (KB_EV_PER_K * T * np.mean(v)) / EV_A3_TO_GPA  # Å³/eV -> 1/GPa
    assert compressibility(v, T) == pytest.approx(expected, rel=1e-12)
    out = response_properties(thermo, T, 256, ["kappa_T_1_GPa"], 1.0, n_blocks=5)
    blocks = [compressibility(b, T) for b in np.array_split(v, 5)]
    assert out["kappa_T_1_GPa"] == pytest.approx(expected)
    assert out["kappa_T_1_GPa_sem"] == pytest.approx(np.std(blocks, ddof=1) / np.sqrt(5))


def test_thermal_expansion_is_the_volume_enthalpy_covariance_over_kT2_V():
    thermo = synthetic_thermo()
    v = thermo["Volume"]
    h = thermo["PotEng"] + thermo["KinEng"] + 1.0 * v * BAR_A3_TO_EV
    expected = np.cov(v, h, ddof=0)[0, 1] / (KB_EV_PER_K * T**2 * np.mean(v))
    assert thermal_expansion(v, h, T) == pytest.approx(expected, rel=1e-10)
    out = response_properties(thermo, T, 256, ["alpha_P_1_K"], 1.0)
    assert out["alpha_P_1_K"] == pytest.approx(expected, rel=1e-10) and out["alpha_P_1_K_sem"] > 0
    assert BAR_A3_TO_EV == pytest.approx(1e5 * 1e-30 / 1.602176634e-19, rel=1e-12)


def test_heat_capacity_is_the_enthalpy_variance_over_kT2_per_atom():
    thermo = synthetic_thermo()
    h = thermo["PotEng"] + thermo["KinEng"] + thermo["Volume"] * BAR_A3_TO_EV
    expected = np.var(h) / (KB_EV_PER_K * T**2) / 256 * 96485.33212  # eV/K per atom -> J/(mol K)
    assert heat_capacity(h, T, 256) == pytest.approx(expected, rel=1e-9)
    assert EV_PER_K_TO_J_PER_MOL_K == pytest.approx(96485.33212, rel=1e-10)
    with pytest.raises(ChemFitError, match="lacks KinEng"):
        response_properties({k: v for k, v in thermo.items() if k != "KinEng"}, T, 256, ["cp_J_mol_K"])


def test_thermo_columns_are_block_averaged_per_box_atom_or_molecule():
    thermo = synthetic_thermo()
    per_atom = ThermoObservable("etotal", per="atom", unit="eV")
    props = liquid_properties(thermo, T, observables={"e_atom": per_atom, "lx": ThermoObservable("vol")}).as_dict()
    assert props["e_atom"] == pytest.approx(np.mean(thermo["TotEng"]) / 256)
    assert props["lx"] == pytest.approx(np.mean(thermo["Volume"])) and props["lx_sem"] > 0
    assert [thermo_header(k) for k in ("ke", "etotal", "vol", "enthalpy", "lx", "v_x", "c_rdf[2]")] == [
        "KinEng",
        "TotEng",
        "Volume",
        "Enthalpy",
        "Lx",
        "v_x",
        "c_rdf[2]",
    ]
    assert (per_atom.direct_derivative, ThermoObservable("vol").direct_derivative) == ("energy", "zero")
    assert ThermoObservable("press").direct_derivative == "unknown"
    with pytest.raises(ChemFitError, match=r"lacks the column Enthalpy \(thermo keyword enthalpy\)"):
        liquid_properties(thermo, T, observables={"h": ThermoObservable("enthalpy")})


def test_response_derivatives_on_exactly_solvable_ensembles():
    """U = θ(V − V0)²/2 at β: ⟨δV²⟩ = 1/(βθ), so dκ_T/dθ = −κ_T/θ; with H = U (no K, p = 0)
    ⟨δH²⟩ = 1/(2β²) whatever θ, so dc_P/dθ = 0 while α_P = 0 by symmetry, as its derivative."""
    rng = np.random.default_rng(1)
    beta, theta, v0 = 1.0 / (KB_EV_PER_K * T), 2.0e-3, 12000.0
    v = v0 + rng.normal(0.0, np.sqrt(1.0 / (beta * theta)), size=1_000_000)
    du = ((v - v0) ** 2 / 2)[:, None]
    h = theta * du[:, 0]
    kappa = compressibility(v, T)
    assert response_gradient("kappa_T_1_GPa", v, h, du, T, 1)[0] == pytest.approx(-kappa / theta, rel=0.02)
    cp = heat_capacity(h, T, 1)
    assert cp == pytest.approx(KB_EV_PER_K / 2 * EV_PER_K_TO_J_PER_MOL_K, rel=0.01)  # k_B/2 per "atom"
    assert abs(response_gradient("cp_J_mol_K", v, h, du, T, 1)[0]) < 0.03 * cp / theta
    alpha_scale = np.std(v) * np.std(h) / (KB_EV_PER_K * T**2 * v0)
    assert abs(response_gradient("alpha_P_1_K", v, h, du, T, 1)[0]) < 0.01 * alpha_scale / theta


def test_a_short_run_prints_the_columns_its_targets_read(tmp_path):
    """The shipped template prints the ``thermo_columns``; the parsed per-atom total energy is the
    potential plus kinetic energy LAMMPS prints beside it, and the response functions come back."""
    references = {
        "kappa_T_1_GPa": Reference(2.0, 0.5),
        "cp_J_mol_K": Reference(40.0, 5.0),
        "e_atom": Reference(-0.06, 0.01),
    }
    variables = argon_md(n_cells=3, melt_steps=200, equilibration_steps=400, production_steps=1000, thermo_every=10)
    term = argon_term(
        tmp_path,
        references=references,
        variables={**variables, "thermo_columns": ["ke", "etotal"]},
        observables={"e_atom": ThermoObservable("etotal", per="atom", unit="eV")},
        temperature_K=T,
    )
    ctx = EvaluateContext()
    term(ARGON_THETA, ctx)
    props, errors = ctx.result.properties, ctx.result.standard_errors
    assert set(references) <= set(props) and all(errors[k] > 0 for k in references)
    assert -0.08 < props["e_atom"] < -0.03 and props["n_atoms"] == 108
    assert 0.5 < props["kappa_T_1_GPa"] < 10 and 20 < props["cp_J_mol_K"] < 80
    assert len(ctx.result.residuals) == 3


def run_argon(tmp_path, temperature_K: float, pressure_bar: float, seed: int) -> dict[str, float]:
    """A 256-atom NPT run of argon with the response functions and H per atom (E/N and V/N) measured."""
    references = {
        "density_kg_m3": Reference(1300.0, 10.0),
        **{k: Reference(1.0, 1.0) for k in ("kappa_T_1_GPa", "alpha_P_1_K", "cp_J_mol_K", "e_atom", "v_atom")},
    }
    variables = argon_md(production_steps=30000, thermo_every=10, equilibration_steps=4000)
    term = argon_term(
        tmp_path,
        seed=seed,
        references=references,
        variables={**variables, "thermo_columns": ["ke", "etotal"]},
        observables={"e_atom": ThermoObservable("etotal", per="atom"), "v_atom": ThermoObservable("vol", per="atom")},
        temperature_K=temperature_K,
        pressure_bar=pressure_bar,
        n_blocks=10,
    )
    ctx = EvaluateContext()
    term(ARGON_THETA, ctx)
    out = dict(ctx.result.properties)
    out.update({f"{k}_sem": v for k, v in ctx.result.standard_errors.items()})
    out["h_atom"] = out["e_atom"] + pressure_bar * out["v_atom"] * BAR_A3_TO_EV
    out["h_atom_sem"] = np.hypot(out["e_atom_sem"], pressure_bar * out["v_atom_sem"] * BAR_A3_TO_EV)
    return out


def agree(fluctuation: float, sem: float, difference: float, difference_sem: float, k: float = 3.0) -> bool:
    return abs(fluctuation - difference) < k * np.hypot(sem, difference_sem)


@pytest.mark.slow
def test_response_functions_agree_with_finite_differences_between_state_points(tmp_path):
    """α_P = −d ln ρ/dT, κ_T = d ln ρ/dp, c_P = dH/dT per atom between real LAMMPS runs at T ± 5 K and
    p ± 150 bar, against the fluctuation estimates of the run at (T, p), within 3 combined errors
    (compressed liquid at 200 bar, above the critical pressure: no run can boil)."""
    t0, p0, dt, dp = 95.0, 200.0, 5.0, 150.0
    base = run_argon(tmp_path / "base", t0, p0, seed=21)
    hot, cold = (run_argon(tmp_path / f"T{s}", t0 + s * dt, p0, seed=22 + (s > 0)) for s in (1, -1))
    high, low = (run_argon(tmp_path / f"p{s}", t0, p0 + s * dp, seed=24 + (s > 0)) for s in (1, -1))

    def log_slope(a, b, step):
        value = (np.log(a["density_kg_m3"]) - np.log(b["density_kg_m3"])) / (2 * step)
        error = np.hypot(a["density_kg_m3_sem"] / a["density_kg_m3"], b["density_kg_m3_sem"] / b["density_kg_m3"])
        return value, error / (2 * step)

    alpha, alpha_sem = log_slope(cold, hot, dt)  # −d ln ρ/dT
    kappa, kappa_sem = log_slope(high, low, dp)  # d ln ρ/dp per bar
    kappa, kappa_sem = kappa * 1e4, kappa_sem * 1e4  # 1/bar -> 1/GPa
    cp = (hot["h_atom"] - cold["h_atom"]) / (2 * dt) * EV_PER_K_TO_J_PER_MOL_K
    cp_sem = np.hypot(hot["h_atom_sem"], cold["h_atom_sem"]) / (2 * dt) * EV_PER_K_TO_J_PER_MOL_K
    report = {
        "alpha": (base["alpha_P_1_K"], base["alpha_P_1_K_sem"], alpha, alpha_sem),
        "kappa": (base["kappa_T_1_GPa"], base["kappa_T_1_GPa_sem"], kappa, kappa_sem),
        "cp": (base["cp_J_mol_K"], base["cp_J_mol_K_sem"], cp, cp_sem),
    }
    print(report)
    for name, values in report.items():
        assert agree(*values), (name, values)


@pytest.mark.slow
def test_the_argon_isobar_example_runs_end_to_end_through_snakemake(tmp_path, venv_env):
    """The example, reduced (108 atoms, short runs, one replica, 2 evaluations): least squares with the
    fluctuation gradients of density, α_P and κ_T, validation runs, every target in the results."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd
    import yaml

    repo = Path(__file__).resolve().parent.parent
    project = tmp_path / "argon_isobar"
    shutil.copytree(repo / "examples" / "argon_isobar", project)
    config = yaml.safe_load((project / "config.yaml").read_text())
    fit = config["fits"]["argon_isobar"]
    for sp in fit["liquid"]["state_points"]:
        sp["replicas"] = 1
    fit["liquid"]["md"].update(
        n_cells=3, melt_steps=300, equilibration_steps=600, production_steps=2000, thermo_every=10, dump_every=20
    )
    fit["liquid"]["validation"] = {"replicas": 1, "production_steps": 2000}
    fit["optimizer"]["max_evaluations"] = 2
    fit["solid"] = {"enabled": False}
    (project / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake = str(Path(sys.executable).parent / "snakemake")
    command = [snakemake, "-s", str(repo / "Snakefile"), "--cores", "2", "--configfile", "config.yaml"]
    done = subprocess.run(command, cwd=project, env=venv_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = project / "results" / "argon_isobar"
    record = json.loads((results / "fit.json").read_text())
    assert record["n_evaluations"] == 2
    first = record["history"][0]["term_results"][0]
    assert set(first["derivatives"]) >= {"density_kg_m3", "alpha_P_1_K", "kappa_T_1_GPa"}
    assert len(first["residuals"]) == 3 and first["standard_errors"]["kappa_T_1_GPa"] > 0
    table = pd.read_csv(results / "properties.csv")
    fitted = table[table["fitted_to"].astype(bool)]
    assert sorted(set(fitted["property"])) == ["alpha_P_1_K", "density_kg_m3", "kappa_T_1_GPa"]
    assert len(fitted) == 9 and (fitted["statistical_uncertainty"] > 0).all()
    rows = fitted.set_index(["state_point", "property"])
    assert rows.loc[("T90", "density_kg_m3"), "fitted"] > rows.loc[("T110", "density_kg_m3"), "fitted"]
    assert 0.5 < rows.loc[("T100", "kappa_T_1_GPa"), "fitted"] < 20


def test_finite_differences_of_columns_without_a_known_derivative_agree_with_independent_runs(tmp_path, caplog):
    """``enthalpy`` (LAMMPS's, with the instantaneous pressure: ∂A/∂θ unknown), self-diffusion and the
    RDF's bins get d/dθ from one more run per parameter at θ + 1 %·|θ| (same seed), which the log says;
    d⟨H⟩/dε against the central difference of independent runs (own seeds) at ε ± 5 %."""
    import logging

    from chemfit_core.science.structure_observables import RdfTarget

    r = np.linspace(3.0, 9.0, 61)
    rdf = RdfTarget(np.column_stack([r, 1 + 0.3 * np.sin(2 * r)]), r_max_A=9.0, n_bins=30, denominator=0.2)
    references = {"h_atom": Reference(-0.06, 0.01), "diffusion_1e9_m2_s": Reference(2.4, 0.5)}
    observables = {"h_atom": ThermoObservable("enthalpy", per="atom", unit="eV")}

    def run(theta, seed, gradients, production_steps=4000):
        md = argon_md(n_cells=3, melt_steps=400, equilibration_steps=600, production_steps=production_steps)
        term = argon_term(
            tmp_path / f"{seed}",
            seed=seed,
            references=references,
            variables={**md, "thermo_every": 20, "thermo_columns": ["enthalpy"]},
            observables=observables,
            gradients=gradients,
            rdf=rdf,
            temperature_K=T,
            pressure_bar=1.0,
        )
        ctx = EvaluateContext()
        term(theta, ctx)
        return ctx

    with caplog.at_level(logging.INFO, logger="chemfit_core.science.observables"):
        ctx = run(ARGON_THETA, 5, True)
    assert "h_atom, diffusion_1e9_m2_s, rdf (per bin): no known ∂A/∂θ, derivatives by finite differences" in caplog.text
    result, gradients = ctx.result, ctx.quantities["gradients"]
    assert len(result.residuals) == 2 + rdf.fitted.sum() and all(
        len(c) == len(result.residuals) for c in result.jacobian.values()
    )
    assert set(result.derivatives) >= {"h_atom", "diffusion_1e9_m2_s"} and "rdf_g" not in result.derivatives
    assert len(ctx.meta["rdf"]["rdf_g"]) == 30 and result.properties["rdf_rmsd"] > 0
    step = 0.05 * ARGON_THETA["epsilon_K"]
    high, low = (
        run({**ARGON_THETA, "epsilon_K": ARGON_THETA["epsilon_K"] + s * step}, seed, False, 8000).result
        for s, seed in ((1, 31), (-1, 32))
    )
    independent = (high.properties["h_atom"] - low.properties["h_atom"]) / (2 * step)
    independent_sem = np.hypot(high.standard_errors["h_atom"], low.standard_errors["h_atom"]) / (2 * step)
    fd, fd_sem = gradients["h_atom"]["epsilon_K"], gradients["h_atom_sem"]["epsilon_K"]
    print(
        f"dH/deps: {fd:.3g} ± {fd_sem:.2g} (same seed, +1 %), {independent:.3g} ± {independent_sem:.2g} (independent)"
    )
    assert abs(independent) > 4 * independent_sem  # the derivative is resolved
    assert fd < 0 and abs(fd - independent) < 3 * np.hypot(fd_sem, independent_sem)
