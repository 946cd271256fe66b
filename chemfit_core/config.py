"""Load and validate workflow configurations against the JSON schema, filling defaults.

Every error names the file, the key (as a dotted path such as
``fits.argon.parameters.sigma_A.lower``) and what was expected, and all errors of
a file are reported at once, before any expensive work starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from chemfit_core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
TEMPLATE_DIR = REPO_ROOT / "workflow" / "templates"


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
) -> dict[str, Any]:
    """Validate ``config`` in place, fill defaults and return it.

    ``schema_path`` and ``template_dir`` default to the workflow folder next to
    this package (an editable install); Snakemake passes its own.

    Raises :class:`ConfigError` listing every problem as ``source: key: expected ...``.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{source}: {key_path(e.absolute_path)}: {_describe(e)}" for e in errors]
    if not problems:
        problems = _semantic_problems(config, source, Path(template_dir))
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def _semantic_problems(config: Mapping[str, Any], source: str, template_dir: Path) -> list[str]:
    """Checks a schema cannot express: bound order, file existence, duplicate names."""
    problems = []
    for fit_name, fit in config["fits"].items():
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
        if form == "morse" and "cutoff_A" not in fit["potential"]:
            problems.append(f"{where}.potential.cutoff_A: expected a cutoff radius in Å for form morse, got none")
        if fit["solid"]["enabled"] is None:
            fit["solid"]["enabled"] = form == "lj/cut"
        elif fit["solid"]["enabled"] and form != "lj/cut":
            problems.append(f"{where}.solid.enabled: the solid validation supports lj/cut fits only; expected false "
                            f"for form {form} (use crystal.validate for crystal properties)")
        expected = {"lj/cut": {"epsilon_K", "sigma_A"}, "morse": {"D_eV", "alpha_invA", "r0_A"},
                    "eam/analytic": {"D_eV", "alpha_invA", "r0_A", "A_eV", "B_eV", "beta"}}[form]
        if set(fit["parameters"]) != expected:
            problems.append(f"{where}.parameters: expected exactly {sorted(expected)} for form {form}, "
                            f"got {sorted(fit['parameters'])}")
        synthetic = fit.get("structures", {}).get("synthetic")
        if synthetic and set(synthetic["parameters"]) != expected:
            problems.append(f"{where}.structures.synthetic.parameters: expected {sorted(expected)}, "
                            f"got {sorted(synthetic['parameters'])}")
        if fit["optimizer"].get("jacobian") in ("analytic", "fluctuation") and "crystal" in fit:
            problems.append(f"{where}.optimizer.jacobian: crystal targets have no analytic Jacobian; expected "
                            f"2-point or 3-point, got {fit['optimizer']['jacobian']}")
        if "liquid" not in fit:
            continue
        template = fit["liquid"]["template"]
        if not (template_dir / template).is_file():
            problems.append(
                f"{source}: fits.{fit_name}.liquid.template: expected a file in {template_dir}, "
                f"got {template!r} (no such file)"
            )
        names = [sp["name"] for sp in fit["liquid"]["state_points"]]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(
                f"{source}: fits.{fit_name}.liquid.state_points: expected unique names, "
                f"got duplicates {duplicates}"
            )
    return problems


def load_config(path: Path | str) -> dict[str, Any]:
    """Read a YAML config file, validate it and fill defaults."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(config).__name__}")
    return validate_config(config, str(path))


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON form of a configuration (keys sorted)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def derived_seed(master_seed: int, *labels: Any) -> int:
    """A seed in [1, 2**31 - 1) derived from the master seed and labels, stable across runs."""
    digest = hashlib.sha256(json.dumps([master_seed, *map(str, labels)]).encode()).digest()
    return 1 + int.from_bytes(digest[:8], "big") % (2**31 - 2)
