"""Load and validate workflow configurations against the JSON schema, filling defaults.

Every error names the file, the key (as a dotted path such as
``fits.argon.parameters.sigma_A.lower``) and what was expected, and all errors of
a file are reported at once, before any expensive work starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from chemfit_core.errors import ConfigError
from chemfit_core.models.forms import form_class
from chemfit_core.stages.composition import composition_problems
from chemfit_core.stages.config_checks import (  # noqa: F401 - re-exported: config's public checks
    MAX_STRUCTURE_PROBLEMS,
    _crystal_problems,
    _lammps_label_problems,
    _run_length_problems,
    _template_problems,
    structure_file_problems,
    structure_problems,
)
from chemfit_core.stages.optimizers import option_problems

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
"""The package data: the configuration schema and the shipped LAMMPS templates."""
SCHEMA_PATH = DATA_DIR / "config.schema.yaml"
TEMPLATE_DIR = DATA_DIR / "templates"

_PATH_NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_NAME_LENGTH = 100
"""Longest fit, state-point or set name: each names a folder (file systems stop at 255 bytes)."""


def _with_defaults(validator_class: type) -> type:
    """A validator class that fills ``default`` values while it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in props.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def key_path(parts: Iterable[Any]) -> str:
    """``["fits", "argon", "liquid", "state_points", 0]`` → ``fits.argon.liquid.state_points[0]``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    """What was expected, in words, for one schema violation."""
    v, value, expected = error.validator, error.instance, error.validator_value
    if v == "type":
        return f"expected {expected}, got {type(value).__name__} {value!r}"
    if v == "required":
        missing = [k for k in expected if k not in value]
        return f"missing required key(s) {', '.join(repr(k) for k in missing)}"
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed)) if allowed else []
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"unknown key(s) {', '.join(repr(k) for k in unknown)}{hint}"
    if v == "enum":
        return f"expected one of {expected}, got {value!r}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"expected a number {sign} {expected}, got {value!r}"
    if v == "anyOf" and all("required" in s for s in expected):
        keys = [k for s in expected for k in s["required"]]
        return f"expected at least one of the keys {', '.join(keys)}"
    if v in ("minItems", "minProperties"):
        return f"expected at least {expected} entr{'y' if expected == 1 else 'ies'}, got none"
    if v == "pattern":
        return f"expected a name matching {expected}, got {value!r}"
    return error.message


def validate_config(
    config: dict[str, Any],
    source: str = "<config>",
    schema_path: Path | str = SCHEMA_PATH,
    template_dir: Path | str = TEMPLATE_DIR,
    checked_dir: Path | str | None = None,
    base_dir: Path | str | None = None,
) -> dict[str, Any]:
    """A validated copy of ``config`` with every default filled in; ``config`` itself is not changed.

    The user's files (``liquid.template`` unless it names a shipped template, ``liquid.files``,
    ``structures.file``, ``solid.sets.<name>.file``) are relative to ``base_dir`` — the folder of
    the config file (default: the working directory) — or absolute; the returned config holds
    them relative to the working directory, where every stage runs.

    ``schema_path`` and ``template_dir`` default to the schema and templates shipped as
    package data (``chemfit_core/data``). ``checked_dir``,
    when given, remembers the structure files that passed their checks by content
    (see :func:`structure_file_problems`); Snakemake passes ``.snakemake/chemfit/checked``.

    Raises :class:`ConfigError` listing every problem as ``source: key: expected ...``.
    """
    config = copy.deepcopy(config)
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{source}: {key_path(e.absolute_path)}: {_describe(e)}" for e in errors]
    problems += _non_finite_problems(config, source)
    if not problems:
        _resolve_inputs(config, Path.cwd() if base_dir is None else Path(base_dir), Path(template_dir))
        problems = _semantic_problems(config, source, Path(template_dir), checked_dir)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    for fit in config["fits"].values():  # null: the solid stage runs where it always has, for atomic lj/cut
        if fit["solid"]["enabled"] is None:
            fit["solid"]["enabled"] = fit["potential"]["form"] == "lj/cut" and "molecule" not in fit.get("liquid", {})
    return config


def _resolve_inputs(config: dict[str, Any], base_dir: Path, template_dir: Path) -> None:
    """Make every user file path of ``config`` relative to the working directory (in place)."""

    def resolved(value: str) -> str:
        path = Path(value).expanduser()
        return str(path) if path.is_absolute() else os.path.relpath(base_dir / path)

    for fit in config["fits"].values():
        if "liquid" in fit:
            liquid = fit["liquid"]
            user = Path(liquid["template"])
            own = user if user.is_absolute() else base_dir / user
            if own.is_file() or not (template_dir / liquid["template"]).is_file():
                liquid["template"] = resolved(liquid["template"])
            liquid["files"] = [resolved(f) for f in liquid["files"]]
            for sp in liquid["state_points"]:  # reference curves of RDF targets
                if "rdf" in sp:
                    sp["rdf"]["file"] = resolved(sp["rdf"]["file"])
        if "file" in fit.get("structures", {}):
            fit["structures"]["file"] = resolved(fit["structures"]["file"])
        file = fit["potential"].get("file")
        if file and not Path(file).is_absolute() and (base_dir / file).is_file():  # else a file shipped with LAMMPS
            fit["potential"]["file"] = resolved(file)
        if "lammps" in fit.get("structures", {}):
            fit["structures"]["lammps"]["files"] = [resolved(f) for f in fit["structures"]["lammps"]["files"]]
        for crystal in [fit.get("crystal", {}), *fit.get("crystals", {}).values()]:
            if crystal.get("structure_file"):
                crystal["structure_file"] = resolved(crystal["structure_file"])
        for entry in fit["solid"]["sets"].values():
            entry["file"] = resolved(entry["file"])


def template_path(value: str | Path, template_dir: Path | str = TEMPLATE_DIR) -> Path:
    """The template a validated ``liquid.template`` names: the user's file, or a shipped one."""
    path = Path(value)
    return path if path.is_file() or len(path.parts) > 1 else Path(template_dir) / path


def _non_finite_problems(node: Any, source: str, path: tuple[Any, ...] = ()) -> Iterator[str]:
    """NaN and ±inf anywhere in the config (JSON Schema's ``number`` lets them through)."""
    if isinstance(node, float) and not math.isfinite(node):
        yield f"{source}: {key_path(path)}: expected a finite number, got {node}"
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _non_finite_problems(value, source, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _non_finite_problems(value, source, (*path, index))


def _name_problems(where: str, names: Sequence[Any], what: str, listed: bool = False) -> list[str]:
    """Names that become folders (``results/<fit>/...``): plain, unique even where letter case is not.
    ``listed``: the names are ``where[i].name`` (a list) rather than the keys of ``where``."""
    problems = [
        f"{where}{f'[{k}].name' if listed else ''}: expected a {what} of letters, digits, _ and - only "
        f"(it names a folder), got {n!r}"
        for k, n in enumerate(names)
        if not (isinstance(n, str) and _PATH_NAME.fullmatch(n))
    ]
    problems += [
        f"{where}{f'[{k}].name' if listed else ''}: expected a {what} of at most {MAX_NAME_LENGTH} characters "
        f"(it names a folder), got {len(n)}"
        for k, n in enumerate(names)
        if isinstance(n, str) and len(n) > MAX_NAME_LENGTH
    ]
    folded = [str(n).casefold() for n in names]
    duplicates = sorted({str(n) for n, f in zip(names, folded) if folded.count(f) > 1})
    if duplicates:
        problems.append(
            f"{where}: expected unique {what}s (letter case ignored: they name folders), got duplicates {duplicates}"
        )
    return problems


def _semantic_problems(
    config: Mapping[str, Any], source: str, template_dir: Path, checked_dir: Path | str | None
) -> list[str]:
    """Checks a schema cannot express: bound order, names, elements, structure files, templates."""
    from ase.data import chemical_symbols

    problems = _name_problems(f"{source}: fits", list(config["fits"]), "fit name")
    for fit_name, fit in config["fits"].items():
        if fit["element"] not in chemical_symbols[1:]:
            problems.append(
                f"{source}: fits.{fit_name}.element: expected a chemical symbol (H, He, ... Og), got {fit['element']!r}"
            )
        for name, p in fit["parameters"].items():
            where = f"{source}: fits.{fit_name}.parameters.{name}"
            if not p["lower"] < p["upper"]:
                problems.append(f"{where}: expected lower < upper, got lower={p['lower']}, upper={p['upper']}")
            elif not p["lower"] <= p["initial"] <= p["upper"]:
                problems.append(
                    f"{where}.initial: expected a value within [{p['lower']}, {p['upper']}], got {p['initial']}"
                )
        where = f"{source}: fits.{fit_name}"
        form = fit["potential"]["form"]
        spec_class = form_class(form)
        for option, default in spec_class.option_defaults.items():
            if default is None and option not in fit["potential"]:
                what = spec_class.option_help.get(option, "a value")
                problems.append(f"{where}.potential.{option}: expected {what} for form {form}, got none")
        unused = sorted(set(fit["potential"]) - {"form", *spec_class.option_defaults})
        if unused:
            problems.append(
                f"{where}.potential: form {form} takes the options "
                f"{sorted(spec_class.option_defaults)}; got {unused}, which it does not use"
            )
        options = {key: value for key, value in fit["potential"].items() if key != "form"}
        try:  # a form checks its own options (files, species, expressions) when it is made
            expected = set(spec_class(element=fit["element"], options=options).parameter_names)
        except (ValueError, OSError) as exc:
            problems.append(f"{where}.potential: {exc}")
            continue
        if set(fit["parameters"]) != expected:
            problems.append(
                f"{where}.parameters: expected exactly {sorted(expected)} for form {form}, "
                f"got {sorted(fit['parameters'])}"
            )
        synthetic = fit.get("structures", {}).get("synthetic")
        if synthetic and set(synthetic["parameters"]) != expected:
            problems.append(
                f"{where}.structures.synthetic.parameters: expected {sorted(expected)}, "
                f"got {sorted(synthetic['parameters'])}"
            )
        method = fit["optimizer"]["method"]
        for problem in option_problems(method, fit["optimizer"]["options"]):
            key = "method" if problem.startswith("unknown optimizer method") else "options"
            problems.append(f"{where}.optimizer.{key}: {problem}")
        problems += _crystal_problems(where, fit)  # crystal and crystals.<name>, the Jacobian they need
        spec = fit.get("structures", {})
        species = fit["potential"].get("species") or fit["element"]
        if "file" in spec:
            needed = ["energy", "forces"] + ([] if spec["stress_denominator"] is None else ["stress"])
            problems += structure_file_problems(f"{where}.structures.file", spec["file"], species, needed, checked_dir)
        if "lammps" in spec:
            problems += _lammps_label_problems(f"{where}.structures.lammps", spec["lammps"])
        sets = fit["solid"].get("sets", {})
        problems += _name_problems(f"{where}.solid.sets", list(sets), "set name")
        for set_name, entry in sets.items():
            problems += structure_file_problems(
                f"{where}.solid.sets.{set_name}.file", entry["file"], fit["element"], [], checked_dir
            )
        if "liquid" not in fit:
            continue
        template = template_path(fit["liquid"]["template"], template_dir)
        if not template.is_file():
            shipped = ", ".join(sorted(p.name for p in template_dir.glob("*.j2")))
            problems.append(
                f"{where}.liquid.template: expected a template file (relative to the config file, or "
                f"absolute) or the name of a shipped one ({shipped}), got {fit['liquid']['template']!r} (no such file)"
            )
        for index, file in enumerate(fit["liquid"]["files"]):
            if not Path(file).is_file():
                problems.append(
                    f"{where}.liquid.files[{index}]: expected a file (relative to the config file, or absolute), "
                    f"got {file!r} (no such file)"
                )
        file_names = [Path(f).name for f in fit["liquid"]["files"]]
        if len(set(file_names)) != len(file_names):
            problems.append(
                f"{where}.liquid.files: expected distinct file names (they are copied into one run "
                f"folder), got {file_names}"
            )
        elif set(fit["parameters"]) == expected:  # else the template's parameters are undefined too
            problems += _template_problems(f"{where}.liquid.template", template, fit)
        problems += _run_length_problems(where, fit) + composition_problems(where, fit)
        from chemfit_core.stages.objective import liquid_problems  # molecules, rerun gradients

        problems += liquid_problems(where, fit, checked_dir)
        names = [sp["name"] for sp in fit["liquid"]["state_points"]]
        problems += _name_problems(f"{where}.liquid.state_points", names, "state point name", listed=True)
    return problems


class _StrictLoader(yaml.SafeLoader):
    """YAML as a configuration should be: no duplicate keys (YAML drops the first silently), no
    aliases (``&a``/``*a``: a "billion laughs" expands without bound when traversed)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"expected plain values, got the alias *{event.anchor} (anchors and aliases are "
                "not accepted in a configuration)",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"expected unique keys, got {key!r} twice "
                    f"(first on line {seen[key].line + 1}; YAML would silently keep only the last)",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: Path | str) -> dict[str, Any]:
    """A config file's YAML, read strictly (:class:`_StrictLoader`); every error names the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: expected a YAML file, got a directory") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: expected UTF-8 text, got byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start} (save the file as UTF-8)"
        ) from None
    try:
        config = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(config).__name__}")
    if "__use_yte__" in config:
        raise ConfigError(
            f"{path}: __use_yte__: expected a plain YAML configuration, got a YTE template "
            "(Snakemake's YTE runs Python while loading; chemfit-workflow configs are data only)"
        )
    return config


def load_config(path: Path | str) -> dict[str, Any]:
    """Read a YAML config file (strictly: :func:`read_config_file`), validate it and fill defaults."""
    path = Path(path)
    return validate_config(read_config_file(path), str(path), base_dir=path.parent)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON form of a configuration (keys sorted)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


MAX_SEED = 900_000_000
"""Largest seed every LAMMPS random-number consumer takes (``create_atoms random``, ``velocity``:
Marsaglia's generator needs 1 ≤ seed ≤ 9×10⁸)."""


def derived_seed(master_seed: int, *labels: Any) -> int:
    """A seed in [1, :data:`MAX_SEED`] derived from the master seed and labels, stable across runs."""
    digest = hashlib.sha256(json.dumps([master_seed, *map(str, labels)]).encode()).digest()
    return 1 + int.from_bytes(digest[:8], "big") % MAX_SEED
