"""Parse tool calls out of generated text and run them safely.

A call is ``<tool>name(arg, ...)</tool>`` (the closing tag may be missing when generation stopped right after the
call). The call text is parsed with :func:`ast.parse` and accepted only when it is a single call of a bare name with
positional *literal* arguments (numbers, strings, ``True`` / ``False`` / ``None``, a leading minus on a number).
Model text is never passed to ``eval`` / ``exec``: ``__import__('os')``, ``x.y`` attribute access, ``2 ** 10**9``,
keyword arguments, nested calls, containers and f-strings are all refused at parse time. Size limits apply to the
call text (before parsing, so a huge literal never reaches the parser), to each string and number, and to the
result; a per-call time limit guards registered functions. Every failure (no call, malformed call, unknown tool,
wrong arity, refused argument, tool error, time-out) returns a :class:`ToolResult` with ``ok=False`` and a reason:
it counts as a wrong answer and never raises out of an evaluation loop.

The time limit is best effort: the call runs in a worker thread and is abandoned after ``timeout_s`` (Python cannot
kill a thread). The built-in tools bound their own work through the size limits, so they finish in microseconds.
"""

from __future__ import annotations

import ast
import concurrent.futures
import math
from dataclasses import asdict, dataclass, field, fields

from transformers.utils import logging

from .tools import Tool, ToolError

logger = logging.get_logger(__name__)

_OPEN, _CLOSE = "<tool>", "</tool>"


@dataclass
class ExecutorConfig:
    """Limits of the tool executor (our choice; the paper's executor is not public).

    Args:
        timeout_s: seconds a tool call may run before it counts as failed.
        max_call_chars: longest call text accepted (checked before parsing).
        max_string_chars: longest string argument.
        max_abs_number: largest absolute value of a numeric argument.
        max_result_chars: longest result; longer results are refused, not truncated.
    """

    timeout_s: float = field(default=1.0, metadata={"help": "Seconds a tool call may run."})
    max_call_chars: int = field(default=200, metadata={"help": "Longest call text accepted, checked before parsing."})
    max_string_chars: int = field(default=64, metadata={"help": "Longest string argument."})
    max_abs_number: float = field(default=1e9, metadata={"help": "Largest absolute numeric argument."})
    max_result_chars: int = field(default=128, metadata={"help": "Longest result accepted."})

    def __post_init__(self) -> None:
        for name in ("timeout_s", "max_call_chars", "max_string_chars", "max_abs_number", "max_result_chars"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ExecutorConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Unknown ExecutorConfig keys: {sorted(unknown)}.")
        return cls(**d)


@dataclass
class ToolResult:
    """Outcome of one tool call: ``output`` when ``ok``, else ``error`` says why (the answer counts as wrong)."""

    ok: bool
    output: str = ""
    error: str = ""
    call: str = ""


class CallRefused(ValueError):
    """The call text is not a single call of a bare name with literal arguments within the limits."""


def extract_call(text: str) -> str | None:
    """The text inside the first ``<tool>...</tool>`` of ``text`` (to the end if the closing tag is missing)."""
    start = text.find(_OPEN)  # str.find, not a regex: linear and in C even on a huge generation
    if start < 0:
        return None
    start += len(_OPEN)
    end = text.find(_CLOSE, start)
    return (text[start:] if end < 0 else text[start:end]).strip()


def _literal(node: ast.AST, cfg: ExecutorConfig):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
        v = node.operand.value
        value = -v if isinstance(node.op, ast.USub) else v
    elif isinstance(node, ast.Constant) and (node.value is None or type(node.value) in (bool, int, float, str)):
        value = node.value
    else:
        raise CallRefused(f"argument {ast.dump(node)[:60]} is not a literal (number, string, True/False/None).")
    if isinstance(value, str) and len(value) > cfg.max_string_chars:
        raise CallRefused(f"string argument of {len(value)} characters exceeds {cfg.max_string_chars}.")
    if type(value) in (int, float) and (not math.isfinite(value) or abs(value) > cfg.max_abs_number):
        raise CallRefused(f"numeric argument {value!r:.40} exceeds |x| <= {cfg.max_abs_number:g}.")
    return value


def parse_call(call: str, cfg: ExecutorConfig | None = None) -> tuple[str, list]:
    """``(name, [literal args])`` of a call text such as ``convert(3, "km", "mi")``.

    Raises:
        CallRefused: too long, not valid Python, not one call of a bare name, keyword or non-literal arguments.
    """
    cfg = cfg or ExecutorConfig()
    if len(call) > cfg.max_call_chars:
        raise CallRefused(f"call of {len(call)} characters exceeds {cfg.max_call_chars}.")
    try:
        tree = ast.parse(call, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise CallRefused(f"malformed call: {type(e).__name__}.") from None
    node = tree.body
    if not isinstance(node, ast.Call):
        raise CallRefused("not a function call.")
    if not isinstance(node.func, ast.Name):
        raise CallRefused("the callee must be a bare tool name (no attribute access, no expression).")
    if node.keywords:
        raise CallRefused("keyword arguments are not accepted.")
    if any(isinstance(a, ast.Starred) for a in node.args):
        raise CallRefused("starred arguments are not accepted.")
    return node.func.id, [_literal(a, cfg) for a in node.args]


class ToolExecutor:
    """Runs tool calls found in generated text against one environment (``{call name: Tool}``).

    Args:
        tools: the tools callable in this environment (see :func:`hf_ext.tool_cl.tools.toolbox`).
        config: the limits (:class:`ExecutorConfig`).
    """

    def __init__(self, tools: dict[str, Tool], config: ExecutorConfig | None = None):
        self.tools = dict(tools)
        self.config = config or ExecutorConfig()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def run(self, text: str) -> ToolResult:
        """Find the first call in ``text`` and run it; never raises."""
        try:
            call = extract_call(text)
            if call is None:
                return ToolResult(False, error="no <tool>...</tool> call in the text.")
            return self.call(call)
        except Exception as e:  # noqa: BLE001 - an evaluation loop must never die on model text
            return ToolResult(False, error=f"executor error: {type(e).__name__}: {e}")

    def call(self, call: str) -> ToolResult:
        """Run one call text (the part between the tags); never raises."""
        try:
            name, args = parse_call(call, self.config)
        except CallRefused as e:
            return ToolResult(False, error=str(e), call=call[:80])
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult(False, error=f"unknown tool {name!r}; available: {sorted(self.tools)}.", call=call)
        if len(args) != tool.arity:
            return ToolResult(False, error=f"{name} takes {tool.arity} arguments, got {len(args)}.", call=call)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tool_cl")
        future = self._pool.submit(tool.fn, *args)
        try:
            out = future.result(timeout=self.config.timeout_s)
        except concurrent.futures.TimeoutError:
            self._pool.shutdown(wait=False)  # abandon the stuck worker; the next call gets a fresh one
            self._pool = None
            return ToolResult(False, error=f"{name} ran past {self.config.timeout_s} s.", call=call)
        except ToolError as e:
            return ToolResult(False, error=f"{name}: {e}", call=call)
        except Exception as e:  # noqa: BLE001 - a tool bug is a wrong answer, not a crash of the evaluation
            return ToolResult(False, error=f"{name} raised {type(e).__name__}: {e}", call=call)
        out = str(out)
        if len(out) > self.config.max_result_chars:
            return ToolResult(False, error=f"result of {len(out)} characters exceeds {self.config.max_result_chars}.",
                              call=call)
        return ToolResult(True, output=out, call=call)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __del__(self):
        self.close()
