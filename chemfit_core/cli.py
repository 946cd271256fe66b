"""The ``chemfit`` command line: small entry points used by the Snakemake rules and by users.

Subcommands:
    chemfit lammps IN.lammps [--timeout S]   run LAMMPS on an input (log next to it)
    chemfit check-config CONFIG.yaml          validate a configuration, print it with defaults
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from chemfit_core.errors import ChemFitError


def log_to(path: str | Path | None, level: int = logging.INFO) -> None:
    """Send chemfit_core's log records to stderr and, when given, to ``path``."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    package = logging.getLogger("chemfit_core")
    for handler in handlers:
        handler.setFormatter(formatter)
        package.addHandler(handler)
    package.setLevel(level)


def _cmd_lammps(args: argparse.Namespace) -> None:
    from chemfit_core.lammps import run_lammps

    path = Path(args.input)
    if not path.is_file():
        raise ChemFitError(f"{path}: no such LAMMPS input file")
    log = run_lammps(path.parent, path.name, timeout=args.timeout)
    print(f"LAMMPS finished: {log}")


def _cmd_check_config(args: argparse.Namespace) -> None:
    import yaml

    from chemfit_core.config import load_config

    config = load_config(args.config)
    print(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``chemfit`` command."""
    parser = argparse.ArgumentParser(prog="chemfit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lammps", help="run LAMMPS on an input file; the log is written next to it")
    p.add_argument("input", help="LAMMPS input file")
    p.add_argument("--timeout", type=float, default=None, help="seconds before LAMMPS is killed")
    p.set_defaults(func=_cmd_lammps)
    p = sub.add_parser("check-config", help="validate a configuration and print it with defaults")
    p.add_argument("config", help="YAML configuration file")
    p.set_defaults(func=_cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chemfit`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ChemFitError as exc:
        print(f"chemfit {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
