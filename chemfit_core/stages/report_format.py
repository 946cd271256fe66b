"""Numbers as a scientist writes them, and tables of them as HTML, Markdown and LaTeX.

:func:`format_value_uncertainty` is the one formatter of every number the report shows: a value
with its uncertainty is rounded to the uncertainty's two significant digits. A :class:`Table` of
display strings is rendered by :func:`html_table` (the one-file report), :func:`markdown_table`
or :func:`latex_table` (booktabs).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chemfit_core.stages.crystal_inputs import crystal_label, is_crystal_term

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def as_number(value: Any) -> float | None:
    """``value`` as a float, None when it is missing or not a number."""
    if value is None or isinstance(value, (bool, np.bool_, str)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _times_ten(exponent: int) -> str:
    return f"×10{str(exponent).translate(_SUPERSCRIPT)}"


def _plain(value: float, significant: int) -> str:
    text = f"{value:.{significant}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}{_times_ten(int(exponent))}"
    return text


def _fixed(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if re.fullmatch(r"-0(\.0*)?", text) else text  # no "-0.0"


def format_value_uncertainty(
    value: Any, uncertainty: Any = None, digits: int = 2, significant: int = 6, missing: str = ""
) -> str:
    """``value ± uncertainty`` rounded to the uncertainty's ``digits`` significant digits.

    ``format_value_uncertainty(1396.53, 1.43)`` is ``"1396.5 ± 1.4"``; ``(1.234e-8, 5.6e-10)``
    is ``"(1.234 ± 0.056)×10⁻⁸"`` (scientific notation below 10⁻³ and from 10⁶ on). Without an
    uncertainty (None, NaN) the value alone with ``significant`` digits; a zero one: ``"… ± 0"``;
    an infinite one: ``"… ± ∞"``. A missing value (None, NaN, not a number) gives ``missing``.
    """
    number = as_number(value)
    if number is None:
        return missing
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    sigma = as_number(uncertainty)
    if sigma is None:
        return _plain(number, significant)
    sigma = abs(sigma)
    if sigma == 0 or math.isinf(sigma):
        return f"{_plain(number, significant)} ± {'0' if sigma == 0 else '∞'}"
    exponent = math.floor(math.log10(sigma))
    sigma = round(sigma, digits - 1 - exponent)
    exponent = math.floor(math.log10(sigma))  # 0.0996 rounds to 0.10: one more place
    decimals = digits - 1 - exponent
    magnitude = max(math.floor(math.log10(abs(number))) if number else exponent, exponent)
    if magnitude >= 6 or magnitude <= -4:
        places = decimals + magnitude
        scale = 10.0**magnitude
        return f"({_fixed(number / scale, places)} ± {_fixed(sigma / scale, places)}){_times_ten(magnitude)}"
    if decimals < 0:
        number, sigma = round(number, decimals), round(sigma, decimals)
    return f"{_fixed(number, max(decimals, 0))} ± {_fixed(sigma, max(decimals, 0))}"


def yes_no(flag: Any) -> str:
    """``yes``/``no`` for a flag (``True``, ``"True"``, 1...), empty when missing."""
    if flag is None or (isinstance(flag, float) and math.isnan(flag)):
        return ""
    if isinstance(flag, str):
        return "yes" if flag.strip().lower() in ("true", "yes", "1") else "no"
    return "yes" if bool(flag) else "no"


def combined_uncertainty(row: Mapping[str, Any]) -> float | None:
    """Statistical and parameter uncertainty of a property row in quadrature (None: neither)."""
    parts = [as_number(row.get(key)) for key in ("statistical_uncertainty", "parameter_uncertainty")]
    parts = [p for p in parts if p is not None]
    return float(math.hypot(*parts)) if parts else None


def state_label(row: Mapping[str, Any]) -> str:
    """A property row's state point in words: ``normal_boiling_point (87.302 K, 1.01325 bar)``,
    ``fcc`` for a solid-stage row, ``crystal B2`` for a crystal of a ``crystals`` section (its
    ``crystal:<name>`` term), empty for the single crystal and the structure terms."""
    state = row.get("state_point")
    if not isinstance(state, str) or state in ("crystal", "structures"):
        return ""
    if is_crystal_term(state):
        return f"crystal {crystal_label(state)}"
    if state == "solid":
        structure = row.get("structure")
        return structure if isinstance(structure, str) else ""
    temperature, pressure = as_number(row.get("temperature_K")), as_number(row.get("pressure_bar"))
    if temperature is None or pressure is None:
        return state
    return f"{state} ({_plain(temperature, 6)} K, {_plain(pressure, 6)} bar)"


class Sources:
    """Numbered references: a table cites ``[n]``, the report lists them once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def cite(self, source: Any) -> str:
        if not isinstance(source, str) or not source.strip():
            return ""
        if source not in self.items:
            self.items.append(source)
        return f" [{self.items.index(source) + 1}]"


@dataclass
class Table:
    """A table of display strings: ``columns`` headers (units in them), ``rows`` of cells."""

    columns: list[str]
    rows: list[list[str]]
    title: str = ""
    notes: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)


TEXT_COLUMNS = ("state point", "structure", "unit", "check")
"""Columns of words, which wrap; number columns do not (a value stays with its ± uncertainty)."""


def html_table(table: Table, css_class: str = "") -> str:
    """A table as HTML (every cell escaped; cells of :data:`TEXT_COLUMNS` wrap)."""
    head = "".join(
        f"<th class='text'>{html.escape(c)}</th>" if c in TEXT_COLUMNS else f"<th>{html.escape(c)}</th>"
        for c in table.columns
    )
    head = f"<thead><tr>{head}</tr></thead>" if any(table.columns) else ""  # key-value tables: none
    kinds = ["<td class='text'>" if c in TEXT_COLUMNS else "<td>" for c in table.columns]
    body = "".join(
        "<tr>" + "".join(f"{kind}{html.escape(c)}</td>" for kind, c in zip(kinds, row)) + "</tr>" for row in table.rows
    )
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in table.notes)
    cls = f" class='{css_class}'" if css_class else ""
    return f"<div class='wide'><table{cls}>{head}<tbody>{body}</tbody></table></div>{notes}"


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""
    align = ["---" if i == 0 else "---:" for i in range(len(table.columns))]
    lines = [
        "| " + " | ".join(_markdown_cell(c) for c in table.columns) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in table.rows),
    ]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "Å": r"\AA{}",
    "²": r"\textsuperscript{2}",
    "³": r"\textsuperscript{3}",
    "±": r"$\pm$",
    "−": "-",
    "σ": r"$\sigma$",
    "ε": r"$\varepsilon$",
    "µ": r"$\mu$",
    "μ": r"$\mu$",
    "°": r"\textdegree{}",
    "∞": r"$\infty$",
    "–": "--",
    "—": "---",
}


def latex_text(text: str) -> str:
    """Plain text (units, ± and ×10ⁿ included) as LaTeX text-mode source."""
    text = re.sub(
        r"×10([⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)",
        lambda m: "\0" + m.group(1).translate(str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")) + "\1",
        text,
    )
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    return out.replace("\0", r"$\times 10^{").replace("\1", "}$")


def latex_table(tables: Sequence[tuple[str, Table]]) -> str:
    """One booktabs ``tabular`` for the same table of several fits (a row naming each fit when
    there are several); ``\\input`` it in a document that loads ``booktabs``."""
    columns = tables[0][1].columns
    spec = "l" + "r" * (len(columns) - 1)
    lines = [
        "% generated by chemfit-workflow (results/tables); needs \\usepackage{booktabs}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_text(c) for c in columns) + r" \\",
        "\\midrule",
    ]
    for k, (fit_name, table) in enumerate(tables):
        if len(tables) > 1:
            if k:
                lines.append("\\midrule")
            lines.append(f"\\multicolumn{{{len(columns)}}}{{l}}{{\\textit{{{latex_text(fit_name)}}}}} \\\\")
        lines += [" & ".join(latex_text(c) for c in row) + r" \\" for row in table.rows]
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)
