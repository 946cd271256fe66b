"""The ``chemfit`` command line: small entry points used by the Snakemake rules and by users.

Subcommands:
    chemfit lammps IN.lammps [--timeout S]   run LAMMPS on an input (log next to it)
    chemfit check-config CONFIG.yaml          validate a configuration, print it with defaults
    chemfit fit ARGS.json [--mpi]             one fit (under mpiexec with --mpi: terms over ranks)
    chemfit relax IN.extxyz OUT.extxyz --model lj/cut --param epsilon=0.0104 ... [--fmax 0.01]
                                              relax structures in batches (GPU when available)
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
    from chemfit_core.external.lammps import run_lammps

    path = Path(args.input)
    if not path.is_file():
        raise ChemFitError(f"{path}: no such LAMMPS input file")
    log = run_lammps(path.parent, path.name, timeout=args.timeout)
    print(f"LAMMPS finished: {log}")


def _cmd_check_config(args: argparse.Namespace) -> None:
    import yaml

    from chemfit_core.stages.config import load_config, read_config_file
    from chemfit_core.stages.cutoff_checks import cutoff_warnings
    from chemfit_core.stages.template_contract import config_warnings

    config = load_config(args.config)
    warnings = config_warnings(config, args.config, given=read_config_file(args.config))
    for warning in [*warnings, *cutoff_warnings(config, args.config)]:
        print(f"chemfit check-config: warning: {warning}", file=sys.stderr)
    print(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def _fitted_model(args: argparse.Namespace):
    """The model of a fit's params.json entry, through its potential form."""
    from chemfit_core.models.forms import fitted_form
    from chemfit_core.results import read_json

    if args.param or args.cutoff is not None or args.potential is not None or args.species:
        raise ChemFitError(
            "--fit-params takes the whole model from the fit; drop --param, --cutoff, --potential and --species"
        )
    summaries = read_json(args.fit_params)
    name = args.fit or (next(iter(summaries)) if len(summaries) == 1 else None)
    if name not in summaries:
        raise ChemFitError(f"{args.fit_params}: name the fit with --fit (one of {', '.join(summaries)})")
    form, params = fitted_form(summaries[name])
    return form.model(params)


def _model_from_arguments(args: argparse.Namespace):
    """The model named by --model with its --param, --cutoff, --potential and --species."""
    from chemfit_core.models import build_model

    spec: dict = {"form": args.model}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ChemFitError(f"--param expects NAME=VALUE, got {item!r}")
        spec[key] = _parse_value(value)
    if args.cutoff is not None:
        spec["cutoff"] = args.cutoff
    if args.potential is not None:
        spec["file"] = args.potential
    if args.species:
        spec["species"] = args.species
    try:
        return build_model(spec)
    except ValueError as exc:
        raise ChemFitError(str(exc)) from exc


def _cmd_relax(args: argparse.Namespace) -> None:
    import math

    import numpy as np
    import torch
    from ase.io import write

    from chemfit_core.engine.relax import relax_structures
    from chemfit_core.engine.structures import read_structures
    from chemfit_core.results import atomic_write_text

    if not (math.isfinite(args.fmax) and args.fmax > 0):
        raise ChemFitError(f"--fmax must be a finite number > 0 (eV/Å), got {args.fmax}")
    if args.max_steps < 1:
        raise ChemFitError(f"--max-steps must be at least 1, got {args.max_steps}")
    if args.cell_factor is not None and not (
        args.relax_cell and math.isfinite(args.cell_factor) and args.cell_factor > 0
    ):
        raise ChemFitError(f"--cell-factor needs --relax-cell and a finite number > 0 (Å), got {args.cell_factor}")
    if args.fit_params:
        model = _fitted_model(args)
    elif args.model:
        model = _model_from_arguments(args)
    else:
        raise ChemFitError("give --model (with --param ...) or --fit-params")
    structures = read_structures(args.input)  # checked: overlapping atoms, NaN, bad cells, unknown symbols
    result = relax_structures(
        structures,
        model,
        fmax=args.fmax,
        max_steps=args.max_steps,
        relax_cell=args.relax_cell,
        cell_factor=args.cell_factor,
        device=None if args.device in (None, "auto") else args.device,
        dtype=getattr(torch, args.dtype),
        progress_every_s=5.0,
        engine=args.engine,
    )
    import io

    buffer = io.StringIO()
    write(buffer, result.structures, format="extxyz")
    atomic_write_text(args.output, buffer.getvalue())
    print(
        f"relaxed {result.n_structures} structures ({int(result.converged.sum())} converged) "
        f"in {result.wall_time_s:.2f} s on {result.device} ({result.engine} engine) -> {args.output}"
    )
    errors = [(k, e) for k, e in enumerate(result.errors) if e is not None]
    if errors:
        listed = "\n  ".join(f"{args.input}, structure {k}: {error}" for k, error in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ChemFitError(
            f"{len(errors)} structures gave no finite result (flagged relax_converged=False and relax_error "
            f"in {args.output}):\n  {listed}{more}"
        )
    if not result.converged.all():
        failed = ", ".join(str(k) for k in np.flatnonzero(~result.converged)[:20])
        raise ChemFitError(
            f"{int((~result.converged).sum())} structures did not converge within "
            f"{args.max_steps} steps ({args.input}, structures {failed}; flagged relax_converged=False in "
            f"{args.output})"
        )


def _cmd_fit(args: argparse.Namespace) -> None:
    from chemfit_core.results import read_json
    from chemfit_core.stages.fit import run_fit

    log_to(None)
    if args.mpi:
        from mpi4py import MPI

        logging.getLogger("chemfit_core").info(
            "MPI rank %d of %d on %s", MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size(), MPI.Get_processor_name()
        )
    run_fit(**read_json(args.arguments), mpi=args.mpi)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``chemfit`` command."""
    parser = argparse.ArgumentParser(prog="chemfit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lammps", help="run LAMMPS on an input file; the log is written next to it")
    p.add_argument("input", help="LAMMPS input file")
    p.add_argument("--timeout", type=float, default=None, help="seconds before LAMMPS is killed")
    p.set_defaults(func=_cmd_lammps)
    p = sub.add_parser("fit", help="run one fit from a JSON file of run_fit's arguments (what the fit rule writes)")
    p.add_argument(
        "arguments",
        help="JSON: fit_name, fit, master_seed, template, workdir, fit_json, params_json, history_csv, workers",
    )
    p.add_argument("--mpi", action="store_true", help="started by mpiexec: rank 0 fits, the others evaluate terms")
    p.set_defaults(func=_cmd_fit)
    p = sub.add_parser("check-config", help="validate a configuration and print it with defaults")
    p.add_argument("config", help="YAML configuration file")
    p.set_defaults(func=_cmd_check_config)
    p = sub.add_parser("relax", help="relax the structures of an extxyz file in batches")
    p.add_argument("input", help="structures (extxyz or any ASE-readable file)")
    p.add_argument("output", help="relaxed structures with energies, forces and convergence flags (extxyz)")
    p.add_argument("--model", help="lj/cut, morse, eam/alloy, eam or eam/analytic")
    p.add_argument("--fit-params", help="take the model of a fit's params.json instead of --model")
    p.add_argument("--fit", help="which fit of --fit-params (when it holds several)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="model parameter, e.g. epsilon=0.0104 (eV), sigma=3.4 (Å); repeat",
    )
    p.add_argument("--cutoff", type=float, help="cutoff radius, Å")
    p.add_argument("--potential", help="EAM file (path, or a file shipped with LAMMPS)")
    p.add_argument("--species", nargs="+", help="elements in the order of the parameter tables")
    p.add_argument("--fmax", type=float, default=0.01, help="largest force at convergence, eV/Å (0.01)")
    p.add_argument("--max-steps", type=int, default=10_000, help="FIRE steps per structure at most")
    p.add_argument("--relax-cell", action="store_true", help="relax the cell too (zero stress)")
    p.add_argument(
        "--cell-factor",
        type=float,
        default=None,
        help="the cell filter's scale, Å (default: the number of atoms N; about √N·(V/N)^(1/3) for large cells)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--engine",
        choices=["auto", "torch", "lammps"],
        default="auto",
        help="auto: LAMMPS workers on CPU where possible, batched torch otherwise",
    )
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.set_defaults(func=_cmd_relax)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chemfit`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ChemFitError, ValueError) as exc:
        print(f"chemfit {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
