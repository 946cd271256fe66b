"""Molecular liquids: molecule files, molecule counts and the gas phase of ΔHvap.

A molecular liquid's properties are per molecule: with N_mol molecules in the box,

    ΔHvap = ⟨U_gas⟩ − ⟨U_liq⟩/N_mol − p⟨V⟩/N_mol + RT      (ideal vapour; kJ/mol),

where ⟨U_gas⟩ is the potential energy of one isolated molecule at T (its intramolecular
energy). It is 0 for a rigid molecule without intramolecular terms (constrained bonds,
intramolecular pairs excluded), and otherwise comes from a gas-phase run
(:class:`GasPhaseRun`: isolated molecules, MD at T, their own template).

The checks here run before any job (called from the configuration's checks): a molecule
file LAMMPS itself rejects (:func:`molecule_file_error`), atom counts that are not a multiple
of the atoms per molecule (:func:`count_problem`).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chemfit_core.errors import ChemFitError, LammpsError
from chemfit_core.external.lammps import read_thermo, run_lammps
from chemfit_core.units import EV_PER_ATOM_TO_KJ_PER_MOL, KB_EV_PER_K

_HEADER = re.compile(r"^(\d+)\s+(atoms|bonds|angles|dihedrals|impropers)$")
_SECTIONS = {
    "Coords", "Types", "Molecules", "Fragments", "Charges", "Diameters", "Dipoles", "Masses", "Bonds", "Angles",
    "Dihedrals", "Impropers", "Special Bond Counts", "Special Bonds", "Shake Flags", "Shake Atoms",
    "Shake Bond Types", "Body Integers", "Body Doubles",
}  # fmt: skip
_TYPED_SECTIONS = {
    "Types": "atom",
    "Bonds": "bond",
    "Angles": "angle",
    "Dihedrals": "dihedral",
    "Impropers": "improper",
}


@dataclass(frozen=True)
class Molecules:
    """The molecules of a liquid box: ``count`` molecules of ``atoms_per_molecule`` atoms each."""

    count: int
    atoms_per_molecule: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.atoms_per_molecule < 1:
            raise ValueError(f"expected ≥ 1 molecule of ≥ 1 atom, got {self.count} of {self.atoms_per_molecule}")

    @property
    def n_atoms(self) -> int:
        """Atoms in the box."""
        return self.count * self.atoms_per_molecule

    def check_atoms(self, n_atoms: int, where: str) -> None:
        """Raise :class:`ChemFitError` when a run's atom count is not this box's."""
        if n_atoms != self.n_atoms:
            raise ChemFitError(
                f"{where}: the run has {n_atoms} atoms; expected {self.count} molecules × "
                f"{self.atoms_per_molecule} atoms = {self.n_atoms} (the template builds another box than "
                "liquid.molecule says, or molecules were lost)"
            )


@dataclass(frozen=True)
class MoleculeFile:
    """What the header and sections of a LAMMPS molecule file say (``molecule`` command format)."""

    path: Path
    n_atoms: int
    counts: Mapping[str, int]
    """``{"bonds": n, "angles": n, ...}`` from the header (0 where absent)."""
    max_types: Mapping[str, int]
    """Largest type used per kind (``atom``, ``bond``, ``angle``, ``dihedral``, ``improper``)."""
    masses: tuple[float, ...] | None
    """Per-atom masses (g/mol) of a ``Masses`` section, else None."""

    @property
    def has_intramolecular_terms(self) -> bool:
        """Whether the molecule has angles, dihedrals or impropers (energy a rigid model would not have)."""
        return any(self.counts.get(k, 0) for k in ("angles", "dihedrals", "impropers"))


def read_molecule_file(path: Path | str) -> MoleculeFile:
    """The header and section summary of a molecule file; a file without an atom count is an error."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise ChemFitError(f"{path}: cannot read the molecule file: {exc}") from exc
    counts: dict[str, int] = {}
    max_types: dict[str, int] = {}
    masses: list[float] = []
    section = None
    for line in lines[1:]:  # the first line is a title
        text = " ".join(line.split("#", 1)[0].split())
        if not text:
            continue
        if text in _SECTIONS:
            section = text
            continue
        words = text.split()
        if section is None:
            header = _HEADER.match(text)
            if header:
                counts[header.group(2)] = int(header.group(1))
        elif section in _TYPED_SECTIONS and len(words) > 1:
            kind = _TYPED_SECTIONS[section]
            try:
                max_types[kind] = max(max_types.get(kind, 0), int(words[1]))
            except ValueError:
                pass  # a type label: LAMMPS maps it itself
        elif section == "Masses" and len(words) > 1:
            try:
                masses.append(float(words[1]))
            except ValueError:
                pass  # LAMMPS's check reports it
    if "atoms" not in counts:
        raise ChemFitError(f"{path}: not a LAMMPS molecule file: no `N atoms` line in its header")
    return MoleculeFile(
        path=path,
        n_atoms=counts["atoms"],
        counts={k: counts.get(k, 0) for k in ("bonds", "angles", "dihedrals", "impropers")},
        max_types=max_types,
        masses=tuple(masses) if len(masses) == counts["atoms"] else None,
    )


def _check_input(name: str, info: MoleculeFile | None) -> str:
    """A tiny LAMMPS input that reads molecule file ``name`` and places one copy in a box with every
    type it may use (atom style ``full``)."""
    types = dict(info.max_types) if info else {}
    per = "extra/bond/per/atom 8 extra/angle/per/atom 16 extra/dihedral/per/atom 32 extra/improper/per/atom 16"
    kinds = " ".join(f"{kind}/types {max(types.get(kind, 0), 1)}" for kind in ("bond", "angle", "dihedral", "improper"))
    return (
        "units metal\natom_style full\nboundary f f f\n"
        "region box block -50 50 -50 50 -50 50\n"
        f"create_box {max(types.get('atom', 0), 1)} box {kinds} {per} extra/special/per/atom 64\n"
        f"mass * 1.0\nmolecule checked {name}\n"
        "create_atoms 0 single 0 0 0 mol checked 1\n"
    )


def molecule_file_error(path: Path | str, timeout: float = 60.0, remember_in: Path | str | None = None) -> str | None:
    """LAMMPS's own verdict on a molecule file: its ``ERROR`` line when a tiny input that reads the
    file (and places one molecule) fails, else None. Our parse of the header comes first.

    With ``remember_in``, a file that passed is remembered there by its content and the LAMMPS
    version, and not run again (the configuration is checked at every Snakemake start).
    """
    import hashlib

    from chemfit_core.external.lammps import lammps_version

    path = Path(path)
    try:
        info = read_molecule_file(path)
    except ChemFitError as exc:
        return str(exc).split(": ", 1)[-1]
    digest = hashlib.sha256(path.read_bytes() + f"\0molecule check, LAMMPS {lammps_version()}".encode())
    marker = None if remember_in is None else Path(remember_in) / f"molecule-{digest.hexdigest()}"
    if marker is not None and marker.is_file():
        return None
    with tempfile.TemporaryDirectory(prefix="chemfit-molecule-check-") as tmp:
        folder = Path(tmp)
        shutil.copyfile(path, folder / "molecule.mol")
        (folder / "in.lammps").write_text(_check_input("molecule.mol", info))
        try:
            run_lammps(folder, timeout=timeout)
        except LammpsError as exc:
            errors = getattr(exc, "errors", None) or [str(exc)]
            return errors[0]
        except ChemFitError as exc:  # no ERROR line, but it failed
            return str(exc).splitlines()[0]
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{path.resolve()}\n")
    return None


def data_file_atoms(path: Path | str) -> int:
    """The atom count in the header of a LAMMPS data file."""
    path = Path(path)
    with path.open(errors="replace") as handle:
        next(handle, None)  # title line
        for line in handle:
            words = line.split("#", 1)[0].split()
            if len(words) == 2 and words[1] == "atoms":
                return int(words[0])
            if len(words) == 1 and words[0][:1].isupper():  # first section: the header is over
                break
    raise ChemFitError(f"{path}: no `N atoms` line in the header of the data file")


def count_problem(n_atoms: int, atoms_per_molecule: int, count: int | None = None) -> str | None:
    """What is wrong with ``n_atoms`` atoms as molecules of ``atoms_per_molecule`` (and ``count``
    molecules where given), in words; None when they agree."""
    if atoms_per_molecule < 1:
        return f"expected ≥ 1 atom per molecule, got {atoms_per_molecule}"
    if n_atoms % atoms_per_molecule:
        return (
            f"{n_atoms} atoms are not a whole number of molecules of {atoms_per_molecule} atoms "
            f"({n_atoms / atoms_per_molecule:.2f})"
        )
    if count is not None and count * atoms_per_molecule != n_atoms:
        return (
            f"{count} molecules of {atoms_per_molecule} atoms are {count * atoms_per_molecule} atoms, "
            f"the box has {n_atoms}"
        )
    return None


@dataclass(frozen=True)
class GasPhaseResult:
    """⟨U_gas⟩ per molecule (kJ/mol) with its standard error and, where asked for, its parameter
    derivatives (kJ/mol per parameter unit) with theirs."""

    energy_kJ_mol: float
    energy_kJ_mol_sem: float
    gradient: Mapping[str, float] | None = None
    gradient_sem: Mapping[str, float] | None = None


RIGID = GasPhaseResult(0.0, 0.0)
"""The gas phase of a rigid molecule without intramolecular terms: U_gas = 0 exactly."""


class GasPhaseRun:
    """Isolated molecules at T (the template keeps them apart): ⟨U_gas⟩ per molecule for ΔHvap.

    The template gets the fixed ``template_variables`` (``molecule_file``, ``molecule_count``
    — here the molecules of the gas run —, MD settings...), ``temperature_K``, ``seed``,
    ``kB_eV_per_K``, ``dump_every`` (0: no frames) and ``rerun_dump`` (None), and writes thermo
    output with ``Step``, ``Atoms`` and ``PotEng`` (total eV, ``thermo_modify norm no``) for its
    production run. With ``form``, the template also gets the form's ``pair_lines`` (and
    ``nearest_neighbour_A``) at each evaluation's parameters, as the liquid runs do. With
    ``gradients``, frames are saved every ``dump_every`` steps and
    d⟨U_gas⟩/dθ = ⟨∂U/∂θ⟩ − β cov(U, ∂U/∂θ) comes from LAMMPS reruns of them
    (:mod:`chemfit_core.science.rerun`; the template must know ``rerun_dump``).
    """

    def __init__(
        self,
        name: str,
        template: str | Path,
        workdir: Path | str,
        temperature_K: float,
        molecules: Molecules,
        seed: int,
        template_variables: Mapping[str, Any] | None = None,
        n_blocks: int = 5,
        command_timeout: float | None = 600.0,
        gradients: bool = False,
        dump_every: int = 100,
        relative_step: float = 1e-3,
        files: Sequence[Path | str] = (),
        output_cache: Any | None = None,
        form: Any | None = None,
    ):
        from chemfit_core.science.rerun import FormLammpsComputer, RerunDerivatives

        self.name = name
        self.temperature_K = temperature_K
        self.molecules = molecules
        self.n_blocks = n_blocks
        self.files = [Path(f) for f in files]
        variables = {
            **(template_variables or {}),
            "molecule_count": molecules.count,
            "n_atoms": molecules.n_atoms,
            "temperature_K": temperature_K,
            "seed": seed,
            "kB_eV_per_K": KB_EV_PER_K,
            "dump_every": dump_every if gradients else 0,
            "rerun_dump": None,
        }
        self.computer = FormLammpsComputer(
            template,
            workdir,
            output_parsers=[lambda outputs: {"_thermo": read_thermo(outputs[0])[-1]}],
            template_variables=variables,
            command_timeout=command_timeout,
            delete_temp_workdirs=False,
            name=name,
            output_files=["frames.dump"] if gradients else [],
            output_cache=output_cache,
            presubmit_hook=self._copy_files if self.files else None,
            form=form,
        )
        self.derivatives = (
            RerunDerivatives(template, variables, self.files, relative_step, command_timeout, name, form)
            if gradients
            else None
        )

    def _copy_files(self, parameters: Any, workdir: Path) -> None:
        for path in self.files:
            shutil.copyfile(path, workdir / path.name)

    def __call__(self, parameters: Mapping[str, float], ctx: Any | None = None) -> GasPhaseResult:
        """⟨U_gas⟩ per molecule at ``parameters`` (and its gradient when asked for)."""
        from chemfit_core.abstract_objective_function import EvaluateContext
        from chemfit_core.science.fluctuation import fluctuation_gradient, fluctuation_gradient_sem
        from chemfit_core.science.liquid import block_average
        from chemfit_core.science.rerun import check_rerun_energies

        ctx = EvaluateContext() if ctx is None else ctx
        thermo = dict(self.computer(parameters, ctx))["_thermo"]
        workdir = Path(ctx.meta.pop("workdir"))
        try:
            missing = [c for c in ("Step", "Atoms", "PotEng") if c not in thermo]
            if missing:
                raise ChemFitError(
                    f"{self.name}: the gas-phase run's thermo output lacks {', '.join(missing)}; expected "
                    "`thermo_style custom step atoms pe ...` with `thermo_modify norm no`"
                )
            self.molecules.check_atoms(int(thermo["Atoms"][-1]), f"{self.name} (gas phase)")
            per_molecule = EV_PER_ATOM_TO_KJ_PER_MOL / self.molecules.count
            energy, sem = block_average(thermo["PotEng"] * per_molecule, self.n_blocks)
            if self.derivatives is None:
                return GasPhaseResult(energy, sem)
            steps, rerun, d_energy = self.derivatives(parameters, workdir / "frames.dump", workdir)
            rows = check_rerun_energies(self.name, steps, rerun, thermo["Step"], thermo["PotEng"])
            beta = 1.0 / (KB_EV_PER_K * self.temperature_K)
            u = thermo["PotEng"][rows] * per_molecule
            direct = d_energy * per_molecule
            grad = fluctuation_gradient(u, d_energy, beta, direct)
            grad_sem = fluctuation_gradient_sem(u, d_energy, beta, direct, self.n_blocks)
            names = list(parameters)
            return GasPhaseResult(
                energy, sem, dict(zip(names, map(float, grad))), dict(zip(names, map(float, grad_sem)))
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
