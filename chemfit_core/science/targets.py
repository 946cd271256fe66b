"""In-process objective terms: crystal properties and reference energies/forces.

Both are deterministic functions of the parameters (no MD noise), evaluated with the
torch models of :mod:`chemfit_core.models.forms`, and report what the least-squares fitter
needs in a :class:`~chemfit_core.term_result.TermResult` (``ctx.result``): residuals,
for structures the exact Jacobian by autograd, and the computed properties for reports.
The liquid counterpart, run by LAMMPS, is :class:`chemfit_core.science.liquid.LiquidStatePointTerm`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from chemfit_core.abstract_objective_function import EvaluateContext, ObjectiveFunctor, Parameters
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.models.forms import PotentialForm
from chemfit_core.science.crystal import PROPERTIES, CrystalSetup, crystal_properties, is_property
from chemfit_core.science.liquid import Reference
from chemfit_core.term_result import TermResult
from chemfit_core.units import to_voigt


def label(structures: Sequence[Any], model: torch.nn.Module) -> list[Any]:
    """Copies of ``structures`` carrying ``model``'s energy (eV), forces (eV/Å) and stress
    (eV/Å³, periodic cells) as ASE single-point results: synthetic reference data for a
    :class:`StructureTarget` (parameter recovery), or a model's predictions to save as extxyz."""
    from ase.calculators.singlepoint import SinglePointCalculator

    labelled = []
    for atoms in structures:
        atoms = atoms.copy()
        with torch.no_grad():
            out = model(atoms_to_state(atoms, dtype=model.dtype))
        s = out["stress"][0].double().numpy() if "stress" in out and atoms.pbc.all() else None
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=out["energy"].item(),
            forces=out["forces"].double().numpy(),
            stress=None if s is None else to_voigt(s),
        )
        labelled.append(atoms)
    return labelled


def _loss(ctx: EvaluateContext, result: TermResult) -> float:
    ctx.result = result
    ctx.loss = result.loss()
    return ctx.loss


class CrystalTarget(ObjectiveFunctor):
    """Crystal properties of the model (:func:`~chemfit_core.science.crystal.crystal_properties`)
    against references; loss = Σ ((x − x_ref)/d)².

    Args:
        form: the potential form whose parameters are fitted.
        setup: how the crystal is built and relaxed.
        references: ``{property: Reference}``, property names of
            :data:`~chemfit_core.science.crystal.PROPERTIES` (a0_A in Å, Ec_eV in eV/atom, Cij in GPa...).
        validate: further properties computed and reported, but not fitted.
    """

    def __init__(
        self,
        form: PotentialForm,
        setup: CrystalSetup,
        references: Mapping[str, Reference],
        validate: Iterable[str] = (),
    ):
        unknown = {name for name in (*references, *validate) if not is_property(name)}
        if unknown:
            raise ValueError(f"unknown crystal properties {sorted(unknown)}; known: {', '.join(PROPERTIES)}")
        if not references:
            raise ValueError("a crystal target needs at least one reference property")
        self.form, self.setup = form, setup
        self.references = dict(references)
        self.validate = [p for p in validate if p not in self.references]

    def properties(self, parameters: Parameters) -> dict[str, float]:
        """All fitted and validation properties at ``parameters``."""
        return crystal_properties(self.form.model(parameters), self.setup, [*self.references, *self.validate])

    def __call__(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> float:
        ctx = EvaluateContext() if ctx is None else ctx
        values = self.properties(parameters)
        residuals = [(values[k] - ref.value) / ref.denominator for k, ref in self.references.items()]
        return _loss(ctx, TermResult(residuals=residuals, properties=values))


class StructureTarget(ObjectiveFunctor):
    """Energies (per atom), forces and optionally stresses of reference structures.

    Residuals: (E/N − E_ref/N)/``energy_denominator`` (eV/atom) for each structure,
    (F − F_ref)/``force_denominator`` (eV/Å) for each force component and
    (σ − σ_ref)/``stress_denominator`` (eV/Å³) for each of six stress components when
    ``stress_denominator`` is given. References come from each ``ase.Atoms``'s
    calculator (``get_potential_energy()``, ``get_forces()``, ``get_stress()``: extxyz
    written with them keeps them). The Jacobian is exact (autograd through the model).
    """

    def __init__(
        self,
        form: PotentialForm,
        structures: Sequence[Any],
        energy_denominator: float = 1e-3,
        force_denominator: float = 0.05,
        stress_denominator: float | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        if not structures:
            raise ValueError("a structure target needs at least one structure")
        self.form, self.structures = form, list(structures)
        self.energy_denominator, self.force_denominator = energy_denominator, force_denominator
        self.stress_denominator = stress_denominator
        self.dtype = dtype
        self.state = atoms_to_state(self.structures, dtype=dtype)
        self.n_atoms = torch.tensor([len(a) for a in self.structures], dtype=dtype)
        try:
            self.ref_energy = torch.tensor([a.get_potential_energy() for a in self.structures], dtype=dtype)
            self.ref_forces = torch.tensor(np.concatenate([a.get_forces() for a in self.structures]), dtype=dtype)
            self.ref_stress = (
                None
                if stress_denominator is None
                else torch.tensor(np.array([a.get_stress(voigt=True) for a in self.structures]), dtype=dtype)
            )
        except RuntimeError as exc:  # ase: "Atoms object has no calculator"
            raise ValueError(f"reference structures need energies and forces (and stresses if fitted): {exc}") from None

    def _residuals(self, model: torch.nn.Module, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = torch.func.functional_call(
            model,
            self.form.model_tensors(params),
            (self.state,),
            {"compute_stress": self.stress_denominator is not None},
        )
        parts = [
            (out["energy"] - self.ref_energy) / self.n_atoms / self.energy_denominator,
            ((out["forces"] - self.ref_forces) / self.force_denominator).reshape(-1),
        ]
        if self.stress_denominator is not None:
            parts.append(((to_voigt(out["stress"]) - self.ref_stress) / self.stress_denominator).reshape(-1))
        return torch.cat(parts)

    def predictions(self, parameters: Parameters) -> dict[str, np.ndarray]:
        """Reference and model values at ``parameters``, for parity plots:
        ``energy_per_atom`` (eV/atom, one per structure) and ``forces`` (eV/Å, every
        Cartesian component of every atom), each as ``<name>_reference`` and ``<name>_model``."""
        model = self.form.model(parameters, dtype=self.dtype)
        with torch.no_grad():
            out = model(self.state)
        return {
            "energy_per_atom_reference": (self.ref_energy / self.n_atoms).numpy(),
            "energy_per_atom_model": (out["energy"].detach() / self.n_atoms).numpy(),
            "forces_reference": self.ref_forces.reshape(-1).numpy(),
            "forces_model": out["forces"].detach().reshape(-1).numpy(),
        }

    def __call__(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> float:
        ctx = EvaluateContext() if ctx is None else ctx
        names = list(parameters)
        x = torch.tensor([float(parameters[n]) for n in names], dtype=self.dtype, requires_grad=True)
        model = self.form.model(parameters, dtype=self.dtype)
        residuals = self._residuals(model, dict(zip(names, x)))
        # J = d r / d θ column by column with the double-backward trick (few parameters,
        # many residuals): g(u) = Jᵀu is linear in u, so d(g_k)/du = J[:, k]
        u = torch.zeros_like(residuals, requires_grad=True)
        (g,) = torch.autograd.grad(residuals, x, grad_outputs=u, create_graph=True)
        jacobian = torch.stack([torch.autograd.grad(g[k], u, retain_graph=True)[0] for k in range(len(names))], 1)
        r = residuals.detach().numpy()
        rms_e = float(np.sqrt(np.mean(r[: len(self.structures)] ** 2)) * self.energy_denominator)
        n_f = self.ref_forces.numel()
        rms_f = float(
            np.sqrt(np.mean(r[len(self.structures) : len(self.structures) + n_f] ** 2)) * self.force_denominator
        )
        return _loss(
            ctx,
            TermResult(
                residuals=r.tolist(),
                jacobian={n: jacobian[:, k].numpy().tolist() for k, n in enumerate(names)},
                properties={"energy_rmse_eV_atom": rms_e, "force_rmse_eV_A": rms_f},
            ),
        )


def rattled_cells(
    element: str,
    n_structures: int = 8,
    lattice_constant_A: float = 3.615,
    seed: int = 0,
    lattice: str = "fcc",
    vacancies: bool = True,
    repeat: Sequence[int] | None = None,
) -> list[Any]:
    """Unlabelled cubic cells (``repeat`` conventional cells; default 2×2×1 and 2×2×2 in turn),
    each strained by up to ±4 % and rattled by 0.1 Å (seed ``1000·seed + k``); with
    ``vacancies`` every fourth one lacks an atom."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    cells = []
    for k in range(n_structures):
        a = lattice_constant_A * (1 + 0.04 * rng.uniform(-1, 1))
        atoms = bulk(element, lattice, a=a, cubic=True).repeat(tuple(repeat) if repeat else (2, 2, 1 + k % 2))
        atoms.rattle(0.1, seed=seed * 1000 + k)
        if vacancies and k % 4 == 3:
            del atoms[0]
        cells.append(atoms)
    return cells


def propagate(
    func, parameters: Mapping[str, float], covariance: np.ndarray, names: Sequence[str], rel_step: float = 1e-4
) -> dict[str, float]:
    """One-sigma uncertainty of every value of ``func(parameters) -> {name: value}`` from the
    parameter covariance (linear propagation, σ² = gᵀCg, g by central differences)."""
    base = dict(parameters)
    columns = []
    for name in names:
        h = rel_step * max(abs(base[name]), 1e-8)
        up, down = func({**base, name: base[name] + h}), func({**base, name: base[name] - h})
        columns.append({k: (up[k] - down[k]) / (2 * h) for k in up})
    keys = columns[0].keys() if columns else []
    out = {}
    for key in keys:
        g = np.array([c[key] for c in columns])
        out[key] = float(np.sqrt(max(g @ covariance @ g, 0.0)))
    return out


def random_cells(
    lattice: str,
    a_A: float,
    species: Sequence[str],
    formula: str | None = None,
    fractions: Mapping[str, float] | None = None,
    n_structures: int = 8,
    repeat: Sequence[int] = (2, 2, 2),
    strain: float = 0.04,
    rattle_A: float = 0.1,
    vacancies: bool = True,
    seed: int = 0,
) -> list[Any]:
    """Unlabelled cells of ``lattice`` (lattice constant ``a_A``, Å): ``formula`` on its prototype
    (a compound), or the first species' lattice with sites drawn at random by ``fractions`` (an
    alloy); each cell ``repeat``-ed, its edges strained by up to ±``strain``, atoms rattled by
    ``rattle_A`` (Å); with ``vacancies`` every fourth one lacks an atom. Deterministic in ``seed``."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    cells = []
    for k in range(n_structures):
        cubic = lattice not in ("hcp", "wurtzite")
        atoms = bulk(formula or species[0], lattice, a=a_A, cubic=cubic).repeat(tuple(repeat))
        if fractions:
            names = list(fractions)
            weights = np.array([fractions[n] for n in names], dtype=float)
            atoms.set_chemical_symbols(list(rng.choice(names, size=len(atoms), p=weights / weights.sum())))
        atoms.set_cell(atoms.cell.array @ np.diag(1 + strain * rng.uniform(-1, 1, 3)), scale_atoms=True)
        atoms.rattle(rattle_A, seed=seed * 1000 + k)
        if vacancies and k % 4 == 3:
            del atoms[0]
        cells.append(atoms)
    return cells


def label_with_lammps(
    structures: Sequence[Any], commands: Sequence[str], species: Sequence[str], files: Sequence[Any] = ()
) -> list[Any]:
    """Copies of ``structures`` with LAMMPS's energy (eV), forces (eV/Å) and stress (eV/Å³,
    periodic cells) for the potential ``commands`` (``species``: LAMMPS type order; ``files``:
    potential files the commands name, copied beside the input). Reference data from a potential
    the user already has, without LAMMPS's Python module."""
    import shutil
    import tempfile
    from pathlib import Path

    from ase.calculators.singlepoint import SinglePointCalculator

    from chemfit_core.external.single_point import lammps_reference

    with tempfile.TemporaryDirectory(prefix="chemfit-label-") as tmp:
        for file in files:
            shutil.copyfile(file, Path(tmp) / Path(file).name)
        results = lammps_reference(list(structures), list(commands), tmp, list(species))
    labelled = []
    for atoms, result in zip(structures, results):
        atoms = atoms.copy()
        stress = None if result["stress"] is None else to_voigt(np.asarray(result["stress"]))
        atoms.calc = SinglePointCalculator(atoms, energy=result["energy"], forces=result["forces"], stress=stress)
        labelled.append(atoms)
    return labelled
