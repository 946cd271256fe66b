"""Pair energies written down as an expression in LAMMPS's lepton syntax, parsed by sympy.

The pair energy E(r) (eV, r in Å) is a string with named parameters, e.g.
``D*(exp(-2*a*(r-r0))-2*exp(-a*(r-r0)))``: ``+ - * / ^``, :data:`SUPPORTED_FUNCTIONS` and
``expr; name=formula`` subexpressions. :func:`parse_expression` parses it with sympy (every
identifier bound explicitly: no name of sympy's or Python's is reachable) and gives dE/dr; a
:class:`PairExpression` evaluates both trees in torch (parameter gradients by autograd) and
prints the same tree in lepton syntax, values written in, for LAMMPS.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import sympy
import torch
from sympy.printing.str import StrPrinter

R = sympy.Symbol("r", positive=True)
"""The pair distance, Å: the one variable of every expression."""

_ELEMENTARY = "sqrt exp log sin cos sec csc tan cot asin acos atan sinh cosh tanh erf erfc".split()
LEPTON_FUNCTIONS = [*_ELEMENTARY, *"atan2 step delta square cube recip min max abs floor ceil select zbl".split()]
"""Every function LAMMPS's lepton knows (lib/lepton Parser.cpp, plus pair_lepton's zbl)."""
SUPPORTED_FUNCTIONS: dict[str, Callable[..., sympy.Expr]] = {
    **{n: getattr(sympy, n) for n in _ELEMENTARY},
    "abs": sympy.Abs,
    "square": lambda x: x**2,
    "cube": lambda x: x**3,
    "recip": lambda x: 1 / x,
    "step": lambda x: sympy.Heaviside(x, 1),  # lepton: x >= 0 ? 1 : 0
    "min": sympy.Min,
    "max": sympy.Max,
}
"""Lepton's functions the torch model has too, as sympy builders (``delta``, ``floor``, ``ceil``,
``select``, ``atan2`` and ``zbl`` are lepton's but not supported here)."""

_TORCH: dict[type, Callable[..., torch.Tensor]] = {
    **{getattr(sympy, n): getattr(torch, n) for n in "exp log sin cos tan asin acos atan sinh cosh tanh".split()},
    sympy.sec: lambda x: 1 / torch.cos(x),
    sympy.csc: lambda x: 1 / torch.sin(x),
    sympy.cot: lambda x: 1 / torch.tan(x),
    sympy.erf: torch.special.erf,
    sympy.erfc: torch.special.erfc,
    sympy.Abs: torch.abs,
    sympy.sign: torch.sign,
    sympy.Min: lambda *xs: functools.reduce(torch.minimum, xs),
    sympy.Max: lambda *xs: functools.reduce(torch.maximum, xs),
    sympy.Heaviside: lambda x, h0=0.5: torch.where(x > 0, 1.0, torch.where(x == 0, float(h0), 0.0)).to(x.dtype),
    sympy.DiracDelta: lambda x, *_: torch.zeros_like(x),  # the derivative of step, away from its jump
}
_TOKEN = re.compile(
    r"(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)(?P<call>\s*\()?|(?P<other>.)"
)
_CHARACTERS = re.compile(r"[\w.+\-*/^(),;=\s]*", re.ASCII)


@dataclasses.dataclass(frozen=True)
class PairExpression:
    """A parsed pair energy: ``energy`` E(r) and ``derivative`` dE/dr (sympy, r = :data:`R`).

    ``parameters``: the names of its other symbols, in the order the text first names them.
    """

    text: str
    energy: sympy.Expr
    derivative: sympy.Expr
    parameters: tuple[str, ...]

    def evaluate(self, r: torch.Tensor, values: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """E (eV) and dE/dr (eV/Å) at distances ``r`` (Å), parameters ``values`` (0-d tensors)."""
        symbols = {R: r, **{sympy.Symbol(n, real=True): v for n, v in values.items()}}
        cache: dict[sympy.Basic, Any] = {}
        energy = _to_torch(self.energy, symbols, cache, r)
        derivative = _to_torch(self.derivative, symbols, cache, r)
        return energy + torch.zeros_like(r), derivative + torch.zeros_like(r)

    def lepton(self, values: Mapping[str, float]) -> str:
        """E(r) in lepton syntax with the parameter ``values`` written in (full precision)."""
        return _LeptonPrinter(values).doprint(self.energy)


@functools.lru_cache(maxsize=256)
def parse_expression(text: str) -> PairExpression:
    """Parse a lepton expression of r; every problem is a ValueError naming ``text``."""
    try:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("expected a formula of r in lepton syntax")
        if not _CHARACTERS.fullmatch(text):
            raise ValueError(f"lepton syntax has no {' '.join(sorted(set(_CHARACTERS.sub('', text))))}")
        for python, lepton in (("**", "^ for powers"), ("//", "/ (lepton has no floor division)")):
            if python in text:
                raise ValueError(f"write {lepton}, not {python}")
        main, *subs = text.split(";")
        defined: dict[str, sympy.Expr] = {}
        order: list[str] = []
        for sub in reversed([sub for sub in subs if sub.strip()]):  # lepton: each sees those after it
            name, sep, body = sub.partition("=")
            if not sep or not re.fullmatch(r"\s*[A-Za-z_]\w*\s*", name):
                raise ValueError(f"subexpression {sub.strip()!r} is not name=formula")
            defined[name.strip()] = _parse(body, defined, order)
        energy = _parse(main, defined, order)
        if R not in energy.free_symbols:
            raise ValueError("does not depend on r")
        free = {s.name for s in energy.free_symbols}
        lost = [n for n in dict.fromkeys(order) if n not in free]
        if lost:
            raise ValueError(f"{', '.join(lost)} cancel(s) out: the energy does not depend on it")
        derivative = _checked(sympy.diff(energy, R))
    except ValueError as exc:
        raise ValueError(f"expression {text!r}: {exc}") from None
    return PairExpression(text, energy, derivative, tuple(n for n in dict.fromkeys(order) if n in free))


def _parse(part: str, defined: Mapping[str, sympy.Expr], order: list[str]) -> sympy.Expr:
    """One (sub)expression: each identifier renamed ``_s<k>`` and bound to r, a subexpression, a
    parameter symbol (appended to ``order``) or a supported function; no other name is in scope."""
    from sympy.parsing.sympy_parser import auto_number, parse_expr

    local: dict[str, Any] = {}
    code = []
    for m in _TOKEN.finditer(part):
        if m["name"] is None:
            code.append(m[0].replace("^", "**"))
            continue
        name, key = m["name"], f"_s{len(local)}"
        if m["call"] and name not in SUPPORTED_FUNCTIONS:
            if name in LEPTON_FUNCTIONS:
                raise ValueError(f"lepton's {name}() is not supported by the torch model")
            raise ValueError(f"uses {name}(), which lepton lacks (it knows {', '.join(LEPTON_FUNCTIONS)})")
        if m["call"]:
            local[key] = functools.partial(_call, name)
        elif name == "r" or name in defined:
            local[key] = R if name == "r" else defined[name]
        else:
            local[key] = sympy.Symbol(name, real=True)
            order.append(name)
        code.append(key + (m["call"] or ""))
    try:
        expr = parse_expr(
            "".join(code),
            local_dict=local,
            global_dict={"__builtins__": {}, "Integer": sympy.Integer, "Float": sympy.Float},
            transformations=(auto_number,),
        )
    except Exception as exc:  # noqa: BLE001 - any failure of the text is a parse error
        why = "unbalanced parentheses" if type(exc).__name__ == "TokenError" else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"does not parse ({why})") from None
    if not isinstance(expr, sympy.Expr) or isinstance(expr, sympy.Tuple):
        raise ValueError(f"{part.strip()!r} is not a single formula")
    return _checked(expr)


def _call(name: str, *args: Any) -> sympy.Expr:
    """Lepton's function ``name`` of ``args`` in sympy, refusing a wrong number of arguments."""
    n = 2 if name in ("min", "max") else 1
    if len(args) != n:
        raise TypeError(f"{name}() takes {n} argument(s), got {len(args)}")
    return SUPPORTED_FUNCTIONS[name](*args)


def _checked(tree: sympy.Expr) -> sympy.Expr:
    """``tree``, if every node is one the torch evaluation knows (no I, zoo, undefined functions)."""
    for node in sympy.preorder_traversal(tree):
        if not (
            isinstance(node, (sympy.Add, sympy.Mul, sympy.Pow, sympy.Symbol, type(sympy.E), type(sympy.pi)))
            or (node.is_Number and node.is_finite and node.is_extended_real)
            or type(node) in _TORCH
        ):
            raise ValueError(f"leads to {node}, which is not a real formula of r")
    return tree


def _to_torch(node: sympy.Expr, symbols: Mapping[sympy.Symbol, torch.Tensor], cache: dict, r: torch.Tensor) -> Any:
    """The value of a sympy tree: a Python float where constant, else a tensor like ``r``."""
    if node in cache:
        return cache[node]
    if node.is_Symbol:
        value = symbols[node]
    elif not node.free_symbols:
        value = float(node)
    elif node.is_Add:
        value = sum(_to_torch(a, symbols, cache, r) for a in node.args)
    elif node.is_Mul:
        value = math.prod(_to_torch(a, symbols, cache, r) for a in node.args)
    elif node.is_Pow:
        base = _to_torch(node.base, symbols, cache, r)
        e = node.exp
        if not isinstance(base, torch.Tensor):
            base = torch.as_tensor(base, dtype=r.dtype, device=r.device)
        if e == sympy.S.Half:
            value = torch.sqrt(base)
        else:  # integer powers by repeated multiplication, like lepton's
            value = base ** int(e) if e.is_Integer else torch.pow(base, _to_torch(e, symbols, cache, r))
    else:
        args = [_to_torch(a, symbols, cache, r) for a in node.args]
        args = [a if isinstance(a, torch.Tensor) else torch.as_tensor(a, dtype=r.dtype, device=r.device) for a in args]
        value = _TORCH[type(node)](*args)
    cache[node] = value
    return value


class _LeptonPrinter(StrPrinter):
    """sympy's str printing in lepton syntax: ``^``, step/abs/min/max, numbers at full precision."""

    def __init__(self, values: Mapping[str, float]):
        super().__init__()
        self.values = values

    @staticmethod
    def _number(value: float) -> str:
        return repr(float(value)) if value >= 0 else f"({float(value)!r})"

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        return "r" if expr == R else self._number(self.values[expr.name])

    def _print_Float(self, expr: sympy.Float) -> str:
        return self._number(float(expr))

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        return super()._print_Pow(expr, rational).replace("**", "^")

    def _print_Exp1(self, expr: Any) -> str:
        return "exp(1)"

    def _print_Pi(self, expr: Any) -> str:
        return repr(math.pi)

    def _print_renamed(self, expr: sympy.Expr) -> str:
        """abs, step (Heaviside(x, 1): its H(0) is lepton's) and min/max of two arguments each."""
        name = {"Abs": "abs", "Heaviside": "step", "Min": "min", "Max": "max"}[type(expr).__name__]
        args = [self._print(a) for a in (expr.args[:1] if name in ("abs", "step") else expr.args)]
        return f"{name}({args[0]})" if len(args) == 1 else functools.reduce(lambda a, b: f"{name}({a}, {b})", args)

    _print_Abs = _print_Heaviside = _print_Min = _print_Max = _print_renamed
