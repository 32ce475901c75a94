"""Tool-CL: continual learning of tool-using LLMs (Huang et al., 2024, arXiv 2404.09339).

    >>> bench = hf_ext.tool_cl.ToolCLBenchmark(num_tasks=4, seed=0)   # tasks over tools that change
    >>> trainer = hf_ext.tool_cl.ContinualTrainer(model, tok, bench, replay=hf_ext.tool_cl.ReplayConfig(size=200))
    >>> result = trainer.run()                                          # accuracy matrix + untrained baseline row
    >>> evaluate.load("tool_cl").compute(accuracy_matrix=result.matrix, baseline=result.baseline)

The metric math is in :mod:`hf_ext.tool_cl.metrics` (pure functions); ``evaluate.load("tool_cl")`` wraps it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common.import_utils import lazy_getattr

_import_structure: dict[str, list[str]] = {
    "benchmark": ["ToolCLBenchmark", "TaskSpec", "DEFAULT_SCHEDULE", "format_call"],
    "tools": ["Tool", "ToolError", "TOOLS", "get_tool", "toolbox"],
    "executor": ["ToolExecutor", "ExecutorConfig", "ToolResult", "parse_call", "extract_call"],
    "replay": ["ReplayConfig", "ReplayBuffer"],
    "trainer": ["ContinualTrainer", "ContinualResult"],
    "evaluation": ["evaluate_task", "evaluate_tasks", "score_generations"],
    "metrics": ["continual_metrics", "average_accuracy", "learning_accuracy", "backward_transfer",
                "forward_transfer", "forgetting", "matrix_from_predictions", "exact_match_accuracy"],
}
__all__ = [
    "ContinualResult",
    "ContinualTrainer",
    "DEFAULT_SCHEDULE",
    "ExecutorConfig",
    "ReplayBuffer",
    "ReplayConfig",
    "TOOLS",
    "TaskSpec",
    "Tool",
    "ToolCLBenchmark",
    "ToolError",
    "ToolExecutor",
    "ToolResult",
    "average_accuracy",
    "backward_transfer",
    "continual_metrics",
    "evaluate_task",
    "evaluate_tasks",
    "exact_match_accuracy",
    "extract_call",
    "forgetting",
    "format_call",
    "forward_transfer",
    "get_tool",
    "learning_accuracy",
    "matrix_from_predictions",
    "parse_call",
    "score_generations",
    "toolbox",
]

__getattr__ = lazy_getattr(__name__, globals(), _import_structure)

if TYPE_CHECKING:
    from .benchmark import DEFAULT_SCHEDULE, TaskSpec, ToolCLBenchmark, format_call
    from .evaluation import evaluate_task, evaluate_tasks, score_generations
    from .executor import ExecutorConfig, ToolExecutor, ToolResult, extract_call, parse_call
    from .metrics import (
        average_accuracy,
        backward_transfer,
        continual_metrics,
        exact_match_accuracy,
        forgetting,
        forward_transfer,
        learning_accuracy,
        matrix_from_predictions,
    )
    from .replay import ReplayBuffer, ReplayConfig
    from .tools import TOOLS, Tool, ToolError, get_tool, toolbox
    from .trainer import ContinualResult, ContinualTrainer
