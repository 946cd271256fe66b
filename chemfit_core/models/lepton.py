"""Pair potentials written down as an expression: LAMMPS ``pair_style lepton`` and its torch twin.

The pair energy E(r) (eV, r in Å) is a string in lepton syntax with named parameters, e.g.
``D*(exp(-2*a*(r-r0))-2*exp(-a*(r-r0)))``: ``+ - * / ^``, :data:`SUPPORTED_FUNCTIONS` and
``expr; name=formula`` subexpressions. sympy parses it (every identifier bound explicitly: no
name of sympy's or Python's is reachable) and gives dE/dr; torch evaluates both trees (parameter
gradients by autograd); LAMMPS gets the same tree printed in lepton syntax, values written in.
Truncated at the cutoff; ``shift=True`` subtracts E(cutoff) as ``pair_modify shift yes`` does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

import sympy
import torch
from sympy.printing.str import StrPrinter

from chemfit_core.models.base import PairModel
from chemfit_core.models.forms import PotentialForm, atomic_number, register_form
from chemfit_core.models.registry import register_model

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


@dataclasses.dataclass(frozen=True)
class PairTerm:
    """The expression of the species pair ``i <= j`` (``label``: ``Cu-O``); ``names`` maps each of
    its symbols to the parameter's name (``D``, or ``D:Cu-O`` with several species)."""

    i: int
    j: int
    label: str
    expression: PairExpression
    names: Mapping[str, str]


def pair_terms_of(expression: str | Mapping[str, str], species: Sequence[str]) -> list[PairTerm]:
    """One :class:`PairTerm` per unordered pair of ``species`` (chemical symbols, in type order):
    ``expression`` is one formula for every pair, or ``{"A-B": formula}`` (either order) for each."""
    n = len(species)
    if n == 0 or len(set(species)) != n:
        raise ValueError(f"species: expected distinct chemical symbols, got {list(species)}")
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    texts = dict.fromkeys(pairs, expression) if isinstance(expression, str) else {}
    if not isinstance(expression, (str, Mapping)):
        raise ValueError(f"expression: expected a formula of r in lepton syntax, got {expression!r}")
    for key, text in {} if isinstance(expression, str) else expression.items():
        ends = str(key).split("-")
        if len(ends) != 2 or any(e not in species for e in ends):
            raise ValueError(f"expression: {key!r} is not a pair A-B of the species {list(species)}")
        pair = tuple(sorted(species.index(e) for e in ends))
        if pair in texts:
            raise ValueError(f"expression: the pair {key!r} is given twice")
        texts[pair] = text
    missing = [f"{species[i]}-{species[j]}" for i, j in pairs if (i, j) not in texts]
    if missing:
        raise ValueError(f"expression: no formula for the pair(s) {', '.join(missing)}")
    terms = []
    for i, j in pairs:
        label, parsed = f"{species[i]}-{species[j]}", parse_expression(texts[(i, j)])
        terms.append(PairTerm(i, j, label, parsed, {p: p if n == 1 else f"{p}:{label}" for p in parsed.parameters}))
    return terms


def _canonical(name: str, species: Sequence[str]) -> str:
    """A parameter's name as :func:`pair_terms_of` gives it: ``D:Ni-Cu`` -> ``D:Cu-Ni`` (species
    order); ``D:Cu-Cu`` -> ``D`` for one species."""
    base, _, pair = name.partition(":")
    if len(species) == 1:
        return base
    ends = pair.split("-")
    return f"{base}:{'-'.join(sorted(ends, key=species.index))}" if set(ends) <= set(species) else name


class LeptonPair(PairModel):
    """E(r) of each species pair given as a lepton expression, for r < cutoff (LAMMPS ``lepton``).

    Args:
        expression: E(r) in eV with r in Å (lepton syntax), or one per pair ``{"Cu-O": ...}``.
        parameters: value of every parameter the expressions name (bare names for one species,
            ``<name>:<A>-<B>`` in either order for several), in the units the expressions imply.
        cutoff: Å.
        species: atomic numbers (default copper).
        shift: subtract E(cutoff) of each pair (``pair_modify shift yes``).
    """

    def __init__(
        self,
        expression: str | Mapping[str, str],
        parameters: Mapping[str, float],
        cutoff: float,
        species: Sequence[int] = (29,),
        shift: bool = False,
        skin: float = 0.5,
        compute_stress: bool = True,
    ):
        super().__init__(cutoff, species, skin, compute_stress)
        from ase.data import chemical_symbols

        symbols = [chemical_symbols[z] for z in self.species]
        self.expression, self.shift = expression if isinstance(expression, str) else dict(expression), shift
        self.terms = pair_terms_of(expression, symbols)
        given = {_canonical(name, symbols): value for name, value in parameters.items()}
        for term in self.terms:
            if absent := [s for s, name in term.names.items() if name not in given]:
                raise ValueError(
                    f"expression {term.expression.text!r}{f' ({term.label})' if len(symbols) > 1 else ''}: "
                    f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} neither r nor a parameter "
                    f"(parameters given: {', '.join(given) or 'none'})"
                )
        used = [name for term in self.terms for name in term.names.values()]
        if unused := [name for name in given if name not in used]:
            raise ValueError(f"parameters {unused} appear in no expression (the expressions name {used})")
        self.coefficients = torch.nn.ParameterDict(
            {name: torch.nn.Parameter(torch.tensor(float(given[name]), dtype=torch.float64)) for name in used}
        )
        table = torch.zeros(len(symbols), len(symbols), dtype=torch.long)
        for k, term in enumerate(self.terms):
            table[term.i, term.j] = table[term.j, term.i] = k
        self.register_buffer("_term_of_pair", table, persistent=False)

    def _term_values(self, term: PairTerm, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = {s: self.coefficients[name].to(r.dtype) for s, name in term.names.items()}
        energy, dedr = term.expression.evaluate(r, values)
        if self.shift:
            energy = energy - term.expression.evaluate(r.new_full((1,), self.cutoff), values)[0]
        return energy, dedr

    def pair_terms(self, r2, ti, tj):
        """Pair energy (eV) and (dE/dr)/r (eV/Å²) from r² (Å²), each pair by its own expression."""
        r = torch.sqrt(r2)
        if ti is None:
            energy, dedr = self._term_values(self.terms[0], r)
            return energy, dedr / r
        which = self._term_of_pair[ti, tj]
        energy, dedr = torch.zeros_like(r), torch.zeros_like(r)
        for k, term in enumerate(self.terms):
            sel = torch.nonzero(which == k).squeeze(1)
            e, d = self._term_values(term, r[sel])
            energy, dedr = energy.index_copy(0, sel, e), dedr.index_copy(0, sel, d)
        return energy, dedr / r

    def lammps_commands(self, species: Sequence[str]) -> list[str]:
        """The same potential in LAMMPS input commands (types numbered in ``self.species`` order)."""
        lines = [f"pair_style lepton {self.cutoff!r}"]
        for t in self.terms:
            values = {s: float(self.coefficients[name].detach()) for s, name in t.names.items()}
            lines.append(f'pair_coeff {t.i + 1} {t.j + 1} "{t.expression.lepton(values)}"')
        return [*lines, f"pair_modify shift {'yes' if self.shift else 'no'}"]


@register_model("lepton")
def _build_lepton(spec: dict) -> LeptonPair:
    """``{"expression", "parameters", "cutoff", "species"[, "shift"]}``; ``parameters`` flat
    (``{"D": ...}``, ``{"D:Cu-O": ...}``) or per pair (``{"Cu-O": {"D": ...}}``)."""
    if not spec.get("species"):
        raise ValueError("model 'lepton' needs the species (at least one element)")
    parameters: dict[str, float] = {}
    for key, value in dict(spec.pop("parameters", {})).items():
        parameters.update({f"{n}:{key}": v for n, v in value.items()} if isinstance(value, Mapping) else {key: value})
    return LeptonPair(spec.pop("expression"), parameters, spec.pop("cutoff"), **spec)


@register_form
@dataclasses.dataclass(frozen=True)
class LeptonForm(PotentialForm):
    """``lepton``: the pair energy as an expression (option ``expression``, lepton syntax, E in eV,
    r in Å); the fit's parameters are its symbols other than r, in the units the user gives them
    (``<name>:<A>-<B>`` when option ``species`` lists several elements); cutoff ``cutoff_A``."""

    option_defaults = {"expression": None, "cutoff_A": None, "shift": False, "species": ()}
    option_help = {"expression": "a pair energy E(r) in LAMMPS lepton syntax (eV, r in Å)", "cutoff_A": "a cutoff in Å"}
    name = "lepton"

    def __post_init__(self) -> None:
        self._terms  # noqa: B018 - parse and check the expression now, before any job

    @property
    def species(self) -> tuple[str, ...]:
        """Chemical symbols in type order: option ``species``, else the fit's element alone."""
        species = tuple(self.options.get("species") or (self.element,))
        for symbol in species:
            atomic_number(symbol)  # an unknown symbol is an error naming it
        if self.element not in species:
            raise ValueError(f"species: {list(species)} does not hold the fit's element {self.element}")
        return species

    @cached_property
    def _terms(self) -> list[PairTerm]:
        return pair_terms_of(self.option("expression"), list(self.species))

    @property
    def parameter_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(name for term in self._terms for name in term.names.values())

    def spec(self) -> dict[str, Any]:
        return {k: v for k, v in super().spec().items() if k != "species" or v}

    def model(self, params, dtype=torch.float64):
        self.check(params)
        return LeptonPair(
            self.option("expression"),
            {name: float(params[name]) for name in self.parameter_names},
            cutoff=self.option("cutoff_A"),
            species=[atomic_number(s) for s in self.species],
            shift=self.option("shift"),
        ).to(dtype)

    def model_tensors(self, params):
        return {f"coefficients.{name}": params[name].reshape(()) for name in self.parameter_names}

    def lammps_commands(self, params, workdir=None):
        return self.model(params).lammps_commands(list(self.species))

    def nearest_neighbour_A(self, params):
        """The minimum of the element's own pair energy on (0.5 Å, cutoff), to ~1e-6 Å."""
        own = self.species.index(self.element)
        term = next(t for t in self._terms if t.i == t.j == own)
        values = {s: torch.tensor(float(params[name]), dtype=torch.float64) for s, name in term.names.items()}
        r = torch.linspace(0.5, float(self.option("cutoff_A")), 20001, dtype=torch.float64)
        with torch.no_grad():
            energy = torch.nan_to_num(term.expression.evaluate(r, values)[0], nan=math.inf)
        k = int(energy.argmin())
        if k in (0, len(r) - 1):
            raise ValueError(f"expression {term.expression.text!r}: no minimum of E(r) between 0.5 Å and the cutoff")
        down, mid, up = (float(e) for e in energy[k - 1 : k + 2])  # the parabola through three points
        return float(r[k]) + 0.5 * float(r[1] - r[0]) * (down - up) / max(down - 2 * mid + up, 1e-300)
