"""The tools of the Tool-CL benchmark and their version history.

A tool version is registered under a key ``"<name>@<version>"``; the model calls it by ``<name>`` with literal
arguments, for example ``<tool>convert(3, "km", "mi")</tool>``. Versions model the non-stationary setting of Huang
et al. (2024): a tool appears, is renamed (``add@1`` -> ``plus@1``), changes signature (``convert@1`` takes
``(x, from, to)``, ``convert@2`` takes ``(x, "from->to")``) or changes behaviour (``days_between@1`` counts the
days between two dates, ``days_between@2`` counts both ends, i.e. one more). The tool set, the versions and the
output formats are our choice (the paper publishes none). Every tool returns a ``str``: exact match compares it
with the reference answer.

Every function checks its own inputs (types, ranges) and raises :class:`ToolError`, which the executor turns into
an error result; nothing here can run for long on inputs within the executor's size limits.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field


class ToolError(ValueError):
    """A tool refused its arguments (wrong type, out of range, unknown unit / table / key)."""


@dataclass(frozen=True)
class Tool:
    """One version of a tool.

    Args:
        name: the name the model writes in a call.
        version: the version number (the key is ``name@version``).
        fn: the Python function; takes positional literal arguments, returns ``str``.
        arity: number of positional arguments.
        family: what the tool does; a renamed tool keeps its family (the benchmark's question templates are per
            family and signature).
        description: one line for humans.
    """

    name: str
    version: int
    fn: Callable[..., str] = field(repr=False)
    arity: int
    family: str
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


def _num(x, what: str, lo: float = -1e9, hi: float = 1e9) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ToolError(f"{what} must be a number, got {type(x).__name__}.")
    if not lo <= x <= hi:
        raise ToolError(f"{what} must be in [{lo:g}, {hi:g}], got {x!r}.")
    return x


def _str(x, what: str) -> str:
    if not isinstance(x, str):
        raise ToolError(f"{what} must be a string, got {type(x).__name__}.")
    return x


def _fmt(x: float) -> str:
    """Integers without a decimal point, anything else rounded to 2 decimals."""
    if isinstance(x, int) or float(x).is_integer():
        return str(int(x))
    return f"{x:.2f}"


# ------------------------------------------------------------------------------------------------- calculator

def add(a, b) -> str:
    return _fmt(_num(a, "a") + _num(b, "b"))


def mul(a, b) -> str:
    return _fmt(_num(a, "a") * _num(b, "b"))


MAX_EXPONENT = 64


def calc(a, op, b) -> str:
    """``a op b`` for ``op`` in ``+ - * / ^``; exponents are capped at :data:`MAX_EXPONENT` (no huge powers)."""
    a, b, op = _num(a, "a"), _num(b, "b"), _str(op, "op")
    if op == "+":
        return _fmt(a + b)
    if op == "-":
        return _fmt(a - b)
    if op == "*":
        return _fmt(a * b)
    if op == "/":
        if b == 0:
            raise ToolError("division by zero.")
        return _fmt(a / b)
    if op == "^":
        if not -MAX_EXPONENT <= b <= MAX_EXPONENT or abs(a) > 1e6:
            raise ToolError(f"power out of range: |exponent| <= {MAX_EXPONENT} and |base| <= 1e6.")
        if a == 0 and b < 0:
            raise ToolError("zero to a negative power.")
        return _fmt(a ** b)
    raise ToolError(f"unknown operator {op!r}; use one of + - * / ^.")


# ------------------------------------------------------------------------------------------------ conversion

UNITS: dict[tuple[str, str], float] = {
    ("km", "mi"): 0.621371, ("mi", "km"): 1.609344, ("kg", "lb"): 2.204623, ("lb", "kg"): 0.453592,
    ("m", "ft"): 3.280840, ("ft", "m"): 0.3048, ("l", "gal"): 0.264172, ("gal", "l"): 3.785412,
}


def convert(x, src, dst) -> str:
    key = (_str(src, "from unit"), _str(dst, "to unit"))
    if key not in UNITS:
        raise ToolError(f"cannot convert {src!r} to {dst!r}; known pairs: {sorted(UNITS)}.")
    return f"{_num(x, 'x') * UNITS[key]:.2f}"


def convert_pair(x, pair) -> str:
    """``convert@2``: the units as one ``"from->to"`` string."""
    parts = _str(pair, "unit pair").split("->")
    if len(parts) != 2:
        raise ToolError(f"unit pair must look like 'km->mi', got {pair!r}.")
    return convert(x, parts[0], parts[1])


# ------------------------------------------------------------------------------------------------------ dates

def _date(s, what: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(_str(s, what))
    except ValueError:
        raise ToolError(f"{what} must be an ISO date YYYY-MM-DD, got {s!r}.") from None


def days_between(a, b) -> str:
    return str((_date(b, "end") - _date(a, "start")).days)


def days_between_inclusive(a, b) -> str:
    """``days_between@2``: counts both the first and the last day (a behaviour change, same name and signature)."""
    d = (_date(b, "end") - _date(a, "start")).days
    return str(d + 1 if d >= 0 else d - 1)


def add_days(a, n) -> str:
    n = _num(n, "n", -100_000, 100_000)
    if not float(n).is_integer():
        raise ToolError(f"n must be a whole number of days, got {n!r}.")
    try:
        return (_date(a, "date") + datetime.timedelta(days=int(n))).isoformat()
    except OverflowError:
        raise ToolError("date out of range.") from None


# ---------------------------------------------------------------------------------------------------- strings

def reverse(s) -> str:
    return _str(s, "s")[::-1]


def upper(s) -> str:
    return _str(s, "s").upper()


def count_char(s, c) -> str:
    c = _str(c, "c")
    if len(c) != 1:
        raise ToolError(f"c must be one character, got {c!r}.")
    return str(_str(s, "s").count(c))


# ------------------------------------------------------------------------------------------------------ tables

TABLES: dict[str, dict[str, str]] = {
    "capital": {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima", "Kenya": "Nairobi", "Canada": "Ottawa",
                "Egypt": "Cairo", "Norway": "Oslo", "Chile": "Santiago", "Spain": "Madrid", "India": "New Delhi"},
    "atomic_number": {"hydrogen": "1", "helium": "2", "carbon": "6", "nitrogen": "7", "oxygen": "8", "neon": "10",
                      "sodium": "11", "iron": "26", "copper": "29", "gold": "79"},
}


def lookup(table, key) -> str:
    t = TABLES.get(_str(table, "table"))
    if t is None:
        raise ToolError(f"unknown table {table!r}; tables: {sorted(TABLES)}.")
    if _str(key, "key") not in t:
        raise ToolError(f"{key!r} is not in table {table!r}.")
    return t[key]


# ---------------------------------------------------------------------------------------------------- registry

TOOLS: dict[str, Tool] = {t.key: t for t in (
    Tool("add", 1, add, 2, "add", "sum of two numbers"),
    Tool("plus", 1, add, 2, "add", "add, renamed"),
    Tool("mul", 1, mul, 2, "mul", "product of two numbers"),
    Tool("calc", 1, calc, 3, "calc", "a op b with op in + - * / ^"),
    Tool("convert", 1, convert, 3, "convert", "convert(x, from_unit, to_unit), 2 decimals"),
    Tool("convert", 2, convert_pair, 2, "convert", "convert(x, 'from->to'): new signature"),
    Tool("days_between", 1, days_between, 2, "days_between", "days from start to end"),
    Tool("days_between", 2, days_between_inclusive, 2, "days_between", "days counting both ends: new behaviour"),
    Tool("add_days", 1, add_days, 2, "add_days", "date plus n days"),
    Tool("reverse", 1, reverse, 1, "reverse", "reversed string"),
    Tool("upper", 1, upper, 1, "upper", "upper-cased string"),
    Tool("count_char", 1, count_char, 2, "count_char", "occurrences of a character"),
    Tool("lookup", 1, lookup, 2, "lookup", "lookup(table, key) in a small built-in table"),
)}


def get_tool(key: str) -> Tool:
    """The tool version registered under ``key`` (``"name@version"``).

    Raises:
        ValueError: no such tool version (the message lists the known keys).
    """
    if key not in TOOLS:
        raise ValueError(f"Unknown tool {key!r}; known tool versions: {sorted(TOOLS)}.")
    return TOOLS[key]


def toolbox(keys) -> dict[str, Tool]:
    """``{call name: Tool}`` for the tool versions ``keys`` (one environment); two versions of one name clash.

    Raises:
        ValueError: an unknown key, or two keys with the same call name.
    """
    box: dict[str, Tool] = {}
    for key in keys:
        tool = get_tool(key)
        if tool.name in box:
            raise ValueError(f"Tools {box[tool.name].key!r} and {key!r} share the call name {tool.name!r}.")
        box[tool.name] = tool
    return box
