"""Continual learning of tool use: train LoRA on a sequence of tool tasks whose tools change (renamed, new
signature, new behaviour), with a replay buffer, and score it with ``evaluate.load("tool_cl")``.

    python examples/tool_continual_learning.py           # Gemma 3 270M, 4 tasks x 24 examples (minutes on CPU)
    python examples/tool_continual_learning.py --tiny    # a tiny random model, 2 tasks (seconds; numbers meaningless)
"""

import evaluate
from _common import parser, setup
from transformers import TrainingArguments

import hf_ext
from hf_ext.common.models import load_model

args = parser(__doc__.splitlines()[0]).parse_args()
path, _, out = setup(args)
model, tokenizer = load_model(path)

tasks, n_train, n_test = (2, 4, 2) if args.tiny else (4, 24, 12)
bench = hf_ext.tool_cl.ToolCLBenchmark(num_tasks=tasks, seed=0, train_size=n_train, test_size=n_test)
for i, spec in enumerate(bench.specs):
    row = bench[i]["train"][0]
    print(f"task {i} ({spec.note}): {row['prompt'].splitlines()[1]} -> {row['tool_completion']} = {row['answer']}")

train_args = TrainingArguments(output_dir=str(out), num_train_epochs=1 if args.tiny else 2,
                               per_device_train_batch_size=8, learning_rate=1e-3, lr_scheduler_type="constant",
                               save_strategy="no", report_to="none", disable_tqdm=True)
trainer = hf_ext.tool_cl.ContinualTrainer(model, tokenizer, bench, replay=hf_ext.tool_cl.ReplayConfig(size=n_train),
                                          args=train_args, tool_use=True, max_new_tokens=8 if args.tiny else None)
result = trainer.run()
print("untrained:", " ".join(f"{v:.2f}" for v in result.baseline))
for i, row in enumerate(result.matrix):
    print(f"after {i}:  ", " ".join(f"{v:.2f}" for v in row))

tool_cl = evaluate.load("tool_cl")  # by name, offline: `import hf_ext` put it in evaluate's module cache
metrics = tool_cl.compute(accuracy_matrix=result.matrix, baseline=result.baseline)
print("Tool-CL metrics:", {k: None if v is None else round(v, 3) for k, v in metrics.items()})
