"""The contract between the workflow and a liquid template: what it gets, what it must write.

A liquid template is rendered (sandboxed Jinja, ``StrictUndefined``) with the variables of
:data:`TEMPLATE_VARIABLES` plus the fit's parameters by name, and the workflow reads
:data:`REQUIRED_THERMO` from the thermo table of the last ``run`` in ``log.lammps`` (and, for
fluctuation gradients, the frames the template dumps to ``frames.dump``). check-config renders
every template for every kind of run and checks the rendered input against this contract with
:func:`output_problems`, naming the template line; :func:`unused_keys` names the configuration
keys a template never reads, which then do not describe the run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import jinja2
import jinja2.meta

TEMPLATE_VARIABLES: Mapping[str, str] = {
    "temperature_K": "thermostat temperature of the state point, K",
    "pressure_bar": "barostat pressure of the state point, bar",
    "seed": "velocity / random seed of this run, 1 ... 9e8 (fixed per replica across evaluations)",
    "kB_eV_per_K": "Boltzmann's constant, eV/K (ε/k_B in K times it gives ε in eV)",
    "dump_every": "steps between frames.dump frames for fluctuation gradients; 0: no frames wanted",
    "mass_g_mol": "atomic mass, g/mol",
    "n_types": "LAMMPS atom types: the potential's species (1 for one element)",
    "masses": "mass of each type in type order, g/mol (mass_g_mol for the fit's element, masses_g_mol or ASE's)",
    "type_ratios": "liquid.composition as conversions of type-1 atoms, in order: [{type, ratio}] for "
    "`set type 1 type/ratio <type> <ratio> <seed>` ([] for one element)",
    "n_cells": "md.n_cells: fcc cells per box edge (the shipped template: 4 n³ atoms)",
    "timestep_fs": "md.timestep_fs: MD time step, fs (LAMMPS metal units take ps: divide by 1000)",
    "melt_temperature_K": "md.melt_temperature_K: start temperature of the melt, K",
    "start_reduced_density": "md.start_reduced_density: ρσ³ of the starting lattice",
    "melt_steps": "md.melt_steps: NVT melt steps",
    "equilibration_steps": "md.equilibration_steps: NPT steps before averaging",
    "production_steps": "md.production_steps (validation runs: liquid.validation.production_steps): NPT steps averaged",
    "thermo_every": "md.thermo_every: steps between thermo rows (dump_every is a multiple of it)",
    "pair_lines": "the potential form's LAMMPS lines at the run's parameters (pair_style, pair_coeff, "
    "pair_modify ...; files a form writes lie in the run folder), one per line",
    "nearest_neighbour_A": "the form's nearest-neighbour distance at the run's parameters, Å (a starting lattice)",
    "thermo_columns": "thermo keywords the state points' targets need beyond the required ones (ke for "
    "alpha_P_1_K and cp_J_mol_K, the observables' columns): append them to the production thermo_style",
    "rdf": "None, or for a state point's rdf target: n_bins, r_max_A (Å), pairs ('' all atoms, else 'i j' "
    "LAMMPS types), every (steps between samples), file (rdf.dat): compute rdf sampled by fix ave/time "
    "... c_rdf[*] file rdf.dat mode vector during the production run",
    "msd": "None, or for a diffusion_1e9_m2_s target: every (steps between samples), file (msd.dat): compute msd "
    "com yes defined at the production start, fix ave/time ... v_<time> c_msd[4] file msd.dat (time in ps)",
    "<parameter>": "each fitted parameter by its config name, in its unit (epsilon_K in K, sigma_A in Å ...)",
    "<option>": "each option of the potential form (cutoff_sigma, tail_correction, shift, cutoff_A ...)",
}
"""Variables every liquid template receives, with their units."""

REQUIRED_THERMO = ("step", "atoms", "temp", "press", "pe", "density", "vol")
"""``thermo_style custom`` keywords the workflow reads from the production run (LAMMPS metal units:
eV, bar, g/cm³, Å³), totals not per atom (``thermo_modify norm no``, metal's default)."""

_THERMO_STYLE = re.compile(r"^\s*thermo_style\s+custom\s+(.*)$", re.M)
_NORM_YES = re.compile(r"^\s*thermo_modify\s+.*\bnorm\s+yes\b", re.M)
_DUMP = re.compile(r"^\s*dump\s+\S+\s+\S+\s+custom\s+(\S+)\s+frames\.dump\s+(.*)$", re.M)


def _template_line(source: str, pattern: str) -> str:
    lines = [k for k, line in enumerate(source.splitlines(), start=1) if pattern in line]
    return f"line {lines[-1]}" if lines else "no line"


def output_problems(rendered: str, dump_every: int, source: str = "", columns: Sequence[str] = ()) -> list[str]:
    """What the rendered input ``rendered`` lacks of the outputs the workflow reads, each naming
    the template line (``source`` is the template text); ``columns``: further thermo keywords the
    targets read (:func:`column_problems`)."""
    problems = column_problems(rendered, columns, source) if columns else []
    styles = _THERMO_STYLE.findall(rendered)
    if not styles:
        problems.append(
            "expected a `thermo_style custom " + " ".join(REQUIRED_THERMO) + "` before the production run, "
            "got no thermo_style custom line"
        )
    else:
        keywords = styles[-1].split("#")[0].split()
        missing = [k for k in REQUIRED_THERMO if k not in keywords]
        if missing:
            problems.append(
                f"expected the last thermo_style ({_template_line(source, 'thermo_style')}) to hold the columns "
                f"{' '.join(REQUIRED_THERMO)}, got no {', '.join(missing)}"
            )
    if _NORM_YES.search(rendered):
        problems.append(
            f"expected totals (thermo_modify norm no), got norm yes ({_template_line(source, 'norm')}): "
            "the workflow divides by the number of atoms or molecules itself"
        )
    if dump_every:
        dumps = _DUMP.findall(rendered)
        if not dumps:
            problems.append(
                "expected `dump <id> all custom {{ dump_every }} frames.dump id type x y z` for fluctuation "
                "gradients (optimizer.jacobian fluctuation), got no dump to frames.dump"
            )
        else:
            every, columns = dumps[-1]
            wanted = ["id", "type", "x", "y", "z"]
            if every != str(dump_every) or columns.split()[:5] != wanted:
                problems.append(
                    f"expected frames.dump every {dump_every} steps with columns id type x y z "
                    f"({_template_line(source, 'frames.dump')}), got every {every} with {columns.strip()}"
                )
    return problems


_COMPUTE = re.compile(r"^\s*compute\s+(\S+)\s+\S+\s+(rdf|msd)\b(.*)$", re.M)
_AVE_TIME = re.compile(r"^\s*fix\s+\S+\s+\S+\s+ave/time\s+(\S+)\s+\S+\s+\S+\s+(.*)$", re.M)


def structure_problems(rendered: str, rdf: Mapping[str, object] | None, msd: Mapping[str, object] | None) -> list[str]:
    """What the rendered input lacks of the RDF (``rdf``) and MSD (``msd``) outputs its targets read:
    a ``compute rdf``/``compute msd`` sampled by ``fix ave/time`` into ``rdf.file``/``msd.file``."""
    problems = []
    computes = {style: (name, rest) for name, style, rest in _COMPUTE.findall(rendered)}
    fixes = [(every, rest.split("#")[0].split()) for every, rest in _AVE_TIME.findall(rendered)]
    for style, spec, needed in (("rdf", rdf, "c_{id}[*]"), ("msd", msd, "c_{id}[4]")):
        if not spec:
            continue
        wanted = f"`compute <id> all {style}` sampled by `fix <id> all ave/time {{{{ {style}.every }}}} 1 "
        wanted += f"{{{{ {style}.every }}}} ... {needed.format(id='<id>')} file {{{{ {style}.file }}}}`"
        wanted += " mode vector" if style == "rdf" else " (with the time in ps before it, v_<time>)"
        if style not in computes:
            problems.append(f"expected {wanted} for the state point's {style} target, got no compute {style}")
            continue
        name, rest = computes[style]
        writers = [words for _, words in fixes if "file" in words and needed.format(id=name) in words]
        if not any(words[words.index("file") + 1] == spec["file"] for words in writers):
            problems.append(
                f"expected {wanted}, got no fix ave/time writing {needed.format(id=name)} to {spec['file']}"
            )
        if style == "rdf" and (str(spec["n_bins"]) not in rest.split()[:1] or "cutoff" not in rest.split()):
            problems.append(
                f"expected `compute {name} all rdf {spec['n_bins']} ... cutoff {spec['r_max_A']}`, got `{rest.strip()}`"
            )
    return problems


def column_problems(rendered: str, columns: Sequence[str], source: str = "") -> list[str]:
    """The thermo keywords of ``columns`` that the last ``thermo_style custom`` of ``rendered`` does not
    print (the targets' observables and response functions read them), naming the template line."""
    styles = _THERMO_STYLE.findall(rendered)
    keywords = styles[-1].split("#")[0].split() if styles else []
    missing = [c for c in columns if c not in keywords]
    if not missing:
        return []
    return [
        f"expected the last thermo_style ({_template_line(source, 'thermo_style')}) to print the column"
        f"{'s' if len(missing) > 1 else ''} {' '.join(missing)} the state points' targets read (observables, "
        "alpha_P_1_K / cp_J_mol_K: ke), got no "
        + ", ".join(missing)
        + " (append {{ thermo_columns | join(' ') }} to it, as the shipped template does)"
    ]


def referenced_variables(source: str) -> set[str]:
    """Names a template's text refers to (Jinja's own analysis of the template)."""
    return set(jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(source)))


def unused_keys(source: str, provided: Mapping[str, str] | Iterable[str]) -> list[str]:
    """Of the ``provided`` variables (name, or name -> the config key it comes from), the config
    keys the template never reads, sorted."""
    used = referenced_variables(source)
    keys = provided if isinstance(provided, Mapping) else {name: name for name in provided}
    return sorted(key for name, key in keys.items() if name not in used)


def config_warnings(
    config: Mapping[str, object], source: str = "<config>", given: Mapping[str, object] | None = None
) -> list[str]:
    """Configuration keys the fits' liquid templates never read (they then do not describe the run),
    as ``source: key: ...`` lines. For a validated config; with ``given`` (the config as the user
    wrote it) only keys the user set are reported, not the schema's defaults."""
    from pathlib import Path

    from chemfit_core.stages.config import template_path
    from chemfit_core.stages.objective import potential_form_of

    warnings = []
    for fit_name, fit in config["fits"].items():  # type: ignore[union-attr]
        if "liquid" not in fit:
            continue
        template = template_path(fit["liquid"]["template"])
        keys = {name: f"liquid.md.{name}" for name in fit["liquid"]["md"] if name not in ("n_blocks", "timeout_s")}
        keys.pop("dump_every", None)
        keys["mass_g_mol"] = "mass_g_mol"
        keys.update(masses="masses_g_mol", type_ratios="liquid.composition")
        options = potential_form_of(fit).spec()
        keys.update({name: f"potential.{name}" for name in options if name not in ("form", "element")})
        if given is not None:
            mine = given.get("fits", {}).get(fit_name, {})  # type: ignore[union-attr]
            written = {f"liquid.md.{k}" for k in mine.get("liquid", {}).get("md", {})}
            written |= {f"potential.{k}" for k in mine.get("potential", {})}
            written |= {"mass_g_mol", "masses_g_mol"} & set(mine)
            written |= {f"liquid.{k}" for k in ("composition",) if k in mine.get("liquid", {})}
            keys = {name: key for name, key in keys.items() if key in written}
        text = Path(template).read_text()
        if "pair_lines" in referenced_variables(text):  # the form's options are in its LAMMPS lines
            keys = {name: key for name, key in keys.items() if not key.startswith("potential.")}
        unused = unused_keys(text, keys)
        if unused:
            warnings.append(
                f"{source}: fits.{fit_name}: {', '.join(unused)} not read by the template {template}: "
                "they do not describe the run (remove them, or use them in the template)"
            )
    return warnings
