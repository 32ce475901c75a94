"""The Tool-CL benchmark generator: a deterministic sequence of tasks over tools that change between tasks.

Each task is a :class:`TaskSpec` naming the tool versions of its environment (``"plus@1"``, ``"convert@2"``, ...);
its examples ask questions answered by those tools. Every example exists in two forms, for the paper's comparison:

- **tool-use**: the model writes ``<tool>plus(37, 12)</tool>``; the executor's result is the answer;
- **no-tool**: the model writes the answer (``49``) directly.

Both forms share the prompt, which starts with the environment's tool names (``[tools: plus, days_between]``): the
same question can need a different call in another task (a renamed tool), and the header is what tells the model
which environment it is in (our choice; without it the rename would make two tasks contradict each other).

:data:`DEFAULT_SCHEDULE` gives six tasks: a tool appears, is renamed, changes signature, changes behaviour.
``ToolCLBenchmark(num_tasks=4, seed=0)`` takes the first ``num_tasks`` of it. Generation is deterministic from the
seed (string-seeded ``random.Random``, independent of ``PYTHONHASHSEED``).
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .tools import TABLES, UNITS, Tool, get_tool, toolbox

TOOL_OPEN, TOOL_CLOSE = "<tool>", "</tool>"

_WORDS = ("apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "ocean", "maple", "robot", "candle",
          "silver", "garden", "pencil", "rocket", "window")


@dataclass(frozen=True)
class TaskSpec:
    """One task of the sequence.

    Args:
        name: short task name.
        tools: the tool versions (``"name@version"``) of this task's environment; examples cycle through them in
            order (balanced), their arguments drawn from the seeded generator.
        note: what changed in this task (shown in reports).
    """

    name: str
    tools: tuple[str, ...]
    note: str = ""

    def __post_init__(self) -> None:
        if not self.tools:
            raise ValueError(f"TaskSpec {self.name!r}: tools must name at least one tool version.")
        for key in self.tools:
            tool = get_tool(key)  # unknown tool names fail here, with the known keys in the message
            if (tool.family, tool.arity) not in _QUESTIONS:
                raise ValueError(f"TaskSpec {self.name!r}: no question template for tool {key!r}.")
        toolbox(self.tools)  # two versions under one call name in one task is an error


# ------------------------------------------------------------------------------ question templates per family

def _date(rng: random.Random) -> str:
    return (datetime.date(2024, 1, 1) + datetime.timedelta(days=rng.randrange(0, 365))).isoformat()


def _q_add(rng):
    a, b = rng.randrange(10, 100), rng.randrange(10, 100)
    return f"What is {a} plus {b}?", [a, b]


def _q_mul(rng):
    a, b = rng.randrange(2, 20), rng.randrange(2, 20)
    return f"What is {a} times {b}?", [a, b]


def _q_calc(rng):
    op = rng.choice(["+", "-", "*", "^"])
    a, b = (rng.randrange(2, 10), rng.randrange(2, 5)) if op == "^" else (rng.randrange(10, 100), rng.randrange(2, 50))
    return f"Compute {a} {op} {b}.", [a, op, b]


def _units(rng):
    src, dst = rng.choice(sorted(UNITS))
    return rng.randrange(1, 100), src, dst


def _q_convert3(rng):
    x, src, dst = _units(rng)
    return f"Convert {x} {src} to {dst}.", [x, src, dst]


def _q_convert2(rng):
    x, src, dst = _units(rng)
    return f"Convert {x} {src} to {dst}.", [x, f"{src}->{dst}"]


def _q_days_between(rng):
    a, b = sorted([_date(rng), _date(rng)])
    return f"How many days from {a} to {b}?", [a, b]


def _q_add_days(rng):
    a, n = _date(rng), rng.randrange(1, 60)
    return f"What date is {n} days after {a}?", [a, n]


def _q_reverse(rng):
    w = rng.choice(_WORDS)
    return f"Reverse the word {w}.", [w]


def _q_upper(rng):
    w = rng.choice(_WORDS)
    return f"Write {w} in capitals.", [w]


def _q_count_char(rng):
    w = rng.choice(_WORDS)
    c = rng.choice(sorted(set(w)))
    return f"How many times does {c} occur in {w}?", [w, c]


def _q_lookup(rng):
    table = rng.choice(sorted(TABLES))
    key = rng.choice(sorted(TABLES[table]))
    q = f"What is the capital of {key}?" if table == "capital" else f"What is the atomic number of {key}?"
    return q, [table, key]


_QUESTIONS: dict[tuple[str, int], Callable[[random.Random], tuple[str, list]]] = {
    ("add", 2): _q_add, ("mul", 2): _q_mul, ("calc", 3): _q_calc, ("convert", 3): _q_convert3,
    ("convert", 2): _q_convert2, ("days_between", 2): _q_days_between, ("add_days", 2): _q_add_days,
    ("reverse", 1): _q_reverse, ("upper", 1): _q_upper, ("count_char", 2): _q_count_char, ("lookup", 2): _q_lookup,
}


DEFAULT_SCHEDULE: tuple[TaskSpec, ...] = (
    TaskSpec("arithmetic+units", ("add@1", "convert@1"), "add and convert appear"),
    TaskSpec("rename+dates", ("plus@1", "days_between@1"), "add renamed to plus; days_between appears"),
    TaskSpec("signature+strings", ("convert@2", "reverse@1"), "convert takes 'from->to'; reverse appears"),
    TaskSpec("behaviour+tables", ("days_between@2", "lookup@1"), "days_between counts both ends; lookup appears"),
    TaskSpec("calculator+dates", ("calc@1", "add_days@1"), "calc and add_days appear"),
    TaskSpec("strings+products", ("mul@1", "count_char@1", "upper@1"), "mul, count_char, upper appear"),
)


def format_call(name: str, args: list) -> str:
    """``<tool>name(arg, ...)</tool>`` with Python literal syntax (strings in double quotes)."""
    def lit(a):
        return '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' if isinstance(a, str) else repr(a)

    return f"{TOOL_OPEN}{name}({', '.join(lit(a) for a in args)}){TOOL_CLOSE}"


def make_example(tool: Tool, spec: TaskSpec, task_id: int, rng: random.Random) -> dict:
    """One example of ``tool`` in both forms (columns of the task's datasets)."""
    question, args = _QUESTIONS[(tool.family, tool.arity)](rng)
    header = "[tools: " + ", ".join(get_tool(k).name for k in spec.tools) + "]"
    return {
        "task_id": task_id,
        "tool": tool.key,
        "prompt": f"{header}\nQ: {question}\nA: ",
        "tool_completion": format_call(tool.name, args),
        "direct_completion": tool.fn(*args),
        "answer": tool.fn(*args),
    }


@dataclass
class ToolCLBenchmark:
    """A deterministic sequence of Tool-CL tasks, each a ``datasets.DatasetDict`` with ``train`` / ``test`` splits.

    Columns: ``task_id``, ``tool`` (the version key), ``prompt``, ``tool_completion`` (the call), ``direct_completion``
    (the answer, no-tool form), ``answer`` (the reference for exact match).

    Args:
        num_tasks: how many tasks of ``tasks`` (or :data:`DEFAULT_SCHEDULE`) to use.
        seed: generation seed; the same seed gives the same examples.
        train_size: training examples per task.
        test_size: test examples per task.
        tasks: a custom schedule of :class:`TaskSpec` (default: :data:`DEFAULT_SCHEDULE`).
    """

    num_tasks: int = field(default=4, metadata={"help": "Number of tasks in the sequence."})
    seed: int = field(default=0, metadata={"help": "Generation seed."})
    train_size: int = field(default=64, metadata={"help": "Training examples per task."})
    test_size: int = field(default=32, metadata={"help": "Test examples per task."})
    tasks: tuple[TaskSpec, ...] | None = field(default=None, metadata={"help": "Task schedule (default: built-in)."})

    def __post_init__(self) -> None:
        for name in ("num_tasks", "train_size", "test_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        schedule = tuple(self.tasks) if self.tasks is not None else DEFAULT_SCHEDULE
        if any(not isinstance(t, TaskSpec) for t in schedule):
            raise ValueError("tasks must be TaskSpec objects (TaskSpec(name, tools=('add@1', ...))).")
        if self.num_tasks > len(schedule):
            raise ValueError(f"num_tasks={self.num_tasks} but the schedule has only {len(schedule)} tasks.")
        self.specs: tuple[TaskSpec, ...] = schedule[: self.num_tasks]
        self._cache: dict[int, object] = {}

    def __len__(self) -> int:
        return self.num_tasks

    def __iter__(self) -> Iterator:
        return (self[i] for i in range(len(self)))

    def tools(self, task_id: int) -> dict[str, Tool]:
        """The environment of task ``task_id``: ``{call name: Tool}`` for the executor."""
        return toolbox(self.specs[task_id].tools)

    def examples(self, task_id: int, split: str) -> list[dict]:
        """The examples of one split as plain dicts (deterministic from ``seed``, task and split)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        spec = self.specs[task_id]
        rng = random.Random(f"tool_cl/{self.seed}/{task_id}/{spec.name}/{split}")
        n = self.train_size if split == "train" else self.test_size
        tools = [get_tool(k) for k in spec.tools]
        return [make_example(tools[k % len(tools)], spec, task_id, rng) for k in range(n)]

    def __getitem__(self, task_id: int):
        if not isinstance(task_id, int) or not -len(self) <= task_id < len(self):
            raise IndexError(f"task index {task_id!r} out of range for {len(self)} tasks.")
        task_id %= len(self)
        if task_id not in self._cache:
            from datasets import Dataset, DatasetDict

            self._cache[task_id] = DatasetDict({s: Dataset.from_list(self.examples(task_id, s))
                                                for s in ("train", "test")})
        return self._cache[task_id]
