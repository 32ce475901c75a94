"""``hf-ext demo`` row: a very short continual run on the default model (2 tasks x 8 examples, tool-use form,
LoRA, replay; the second task renames ``add`` to ``plus``), scored by the Tool-CL metric. Far too small to measure
forgetting reliably (4 test examples per task): it shows the pipeline end to end; ``benchmarks/tool_cl.py`` runs
the comparison. The LoRA adapters are removed afterwards, so the shared model is unchanged for the other rows."""

from __future__ import annotations

import time


def demo_rows(model, tokenizer, ctx) -> list:
    import tempfile

    from transformers import TrainingArguments

    from ..common.demo import DemoRow
    from .benchmark import TaskSpec, ToolCLBenchmark
    from .replay import ReplayConfig
    from .trainer import ContinualTrainer

    t = time.perf_counter()
    # two short-call tasks (a rename between them) keep generation short: the row must stay under a minute
    tasks = (TaskSpec("add+reverse", ("add@1", "reverse@1")), TaskSpec("rename", ("plus@1", "upper@1"), "add -> plus"))
    bench = ToolCLBenchmark(num_tasks=2, seed=0, train_size=8, test_size=4, tasks=tasks)
    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="tool_cl_demo_"), num_train_epochs=2,
                             per_device_train_batch_size=8, learning_rate=1e-3, lr_scheduler_type="constant",
                             save_strategy="no", report_to="none", disable_tqdm=True)
    trainer = ContinualTrainer(model, tokenizer, bench, replay=ReplayConfig(size=8), args=args, tool_use=True,
                               progress=False)
    try:
        res = trainer.run()
    finally:
        trainer.model.unload()  # back to the plain model: LoRA never touched the base weights
    m = res.metrics
    base = sum(res.baseline) / len(res.baseline)
    return [DemoRow("tool_cl", "2 tasks x 8 examples (add renamed plus), LoRA, tool-use, replay 8", "average accuracy",
                    m["average_accuracy"], baseline=base,
                    note=f"baseline: untrained; BWT {m['backward_transfer']:+.2f}, forgetting {m['forgetting']:+.2f}; "
                         f"4 test examples per task; {time.perf_counter() - t:.0f} s")]
