"""Tool-CL: tools and executor safety, the benchmark generator, replay sampling, and a tiny continual run."""

import time
from collections import Counter

import pytest

from hf_ext.tool_cl import (
    DEFAULT_SCHEDULE,
    ExecutorConfig,
    ReplayBuffer,
    ReplayConfig,
    TaskSpec,
    ToolCLBenchmark,
    ToolExecutor,
    parse_call,
    toolbox,
)
from hf_ext.tool_cl.executor import CallRefused
from hf_ext.tool_cl.tools import Tool


def _run(text, tools=None, **cfg):
    ex = ToolExecutor(tools or toolbox(["convert@1", "calc@1", "reverse@1", "days_between@1", "lookup@1"]),
                      ExecutorConfig(**cfg))
    try:
        return ex.run(text)
    finally:
        ex.close()


# -------------------------------------------------------------------------------------------------- executor

def test_executor_runs_literal_calls():
    assert _run('<tool>convert(3, "km", "mi")</tool>').output == "1.86"
    assert _run("The answer: <tool>calc(2, '^', 10)</tool> done").output == "1024"
    assert _run('<tool>calc(-4, "+", 1)').output == "-3"  # closing tag cut off by the generation limit
    assert _run('<tool>days_between("2024-01-01", "2024-03-01")</tool>').output == "60"
    assert _run('<tool>lookup("capital", "Peru")</tool>').output == "Lima"


@pytest.mark.parametrize("text, reason", [
    ("no call here", "no <tool>"),
    ("<tool>__import__('os').system('echo hi')</tool>", "bare tool name"),
    ("<tool>__import__('os')</tool>", "unknown tool '__import__'"),
    ("<tool>convert.__globals__</tool>", "not a function call"),
    ("<tool>reverse.__class__('x')</tool>", "bare tool name"),
    ("<tool>reverse(''.join)</tool>", "not a literal"),
    ("<tool>calc(10 ** 1000000000, '+', 1)</tool>", "not a literal"),
    ("<tool>calc(10, '^', 10000000000)</tool>", "exceeds"),
    ("<tool>calc(10, '^', 1000000000)</tool>", "power out of range"),
    ("<tool>calc(10, '^', 100000)</tool>", "power out of range"),
    ("<tool>reverse('" + "a" * 10_000_000 + "')</tool>", "exceeds 200"),
    ("<tool>reverse('" + "a" * 150 + "')</tool>", "string argument of 150 characters"),
    ("<tool>calc(" + "9" * 150 + ", '+', 1)</tool>", "numeric argument"),
    ("<tool>convert(3, 'km')</tool>", "takes 3 arguments, got 2"),
    ("<tool>convert(3, src='km', dst='mi')</tool>", "keyword"),
    ("<tool>convert(*[3, 'km', 'mi'])</tool>", "starred"),
    ("<tool>convert(3, 'km', 'parsec')</tool>", "cannot convert"),
    ("<tool>nosuch(1)</tool>", "unknown tool 'nosuch'"),
    ("<tool>convert(3, 'km', </tool>", "malformed"),
    ("<tool>reverse(f'{1}')</tool>", "not a literal"),
    ("<tool>reverse([1, 2])</tool>", "not a literal"),
    ("<tool>(lambda: 1)()</tool>", "bare tool name"),
    ("<tool>calc(1, '/', 0)</tool>", "division by zero"),
    ("<tool>days_between('2024-13-01', '2024-01-01')</tool>", "ISO date"),
    ("<tool>calc(float('inf'), '+', 1)</tool>", "not a literal"),
])
def test_executor_refuses_without_raising_or_hanging(text, reason):
    t = time.perf_counter()
    res = _run(text)
    assert time.perf_counter() - t < 2.0
    assert not res.ok and res.output == ""
    assert reason in res.error, res.error


def test_result_size_and_time_limits():
    slow = Tool("slow", 1, lambda s: time.sleep(s) or "done", 1, "slow")
    big = Tool("big", 1, lambda n: "x" * n, 1, "big")
    t = time.perf_counter()
    res = _run("<tool>slow(1.5)</tool>", {"slow": slow}, timeout_s=0.2)
    assert time.perf_counter() - t < 1.0 and not res.ok and "ran past" in res.error
    assert _run("<tool>slow(0)</tool>", {"slow": slow}, timeout_s=0.2).ok  # a fresh worker after a time-out
    assert "result of 1000 characters" in _run("<tool>big(1000)</tool>", {"big": big}).error
    boom = Tool("boom", 1, lambda x: 1 / 0, 1, "boom")
    assert "ZeroDivisionError" in _run("<tool>boom(1)</tool>", {"boom": boom}).error


def test_parse_call_and_config_validation():
    assert parse_call('f(1, -2.5, "a", True, None)') == ("f", [1, -2.5, "a", True, None])
    with pytest.raises(CallRefused):
        parse_call("f(1) + g(2)")
    with pytest.raises(ValueError, match="timeout_s must be a positive number"):
        ExecutorConfig(timeout_s=0)
    assert ExecutorConfig.from_dict(ExecutorConfig(timeout_s=2).to_dict()) == ExecutorConfig(timeout_s=2)
    with pytest.raises(ValueError, match="Unknown ExecutorConfig keys"):
        ExecutorConfig.from_dict({"timeout": 1})


# ------------------------------------------------------------------------------------------------- benchmark

def test_benchmark_is_deterministic_and_has_both_forms():
    a, b = ToolCLBenchmark(num_tasks=4, seed=0, train_size=12, test_size=6), ToolCLBenchmark(num_tasks=4, seed=0,
                                                                                             train_size=12, test_size=6)
    assert len(a) == 4
    for i in range(4):
        assert a[i]["train"].to_list() == b[i]["train"].to_list()
        assert a[i]["test"].to_list() == b[i]["test"].to_list()
    c = ToolCLBenchmark(num_tasks=4, seed=1, train_size=12, test_size=6)
    assert a[0]["train"]["prompt"] != c[0]["train"]["prompt"]
    for i in range(4):
        ex = ToolExecutor(a.tools(i))
        for row in a[i]["test"]:
            res = ex.run(row["tool_completion"])  # the tool form's call reproduces the no-tool answer
            assert res.ok and res.output == row["answer"] == row["direct_completion"], (row, res)
        ex.close()
    assert set(a[0].keys()) == {"train", "test"}


def test_tools_change_between_tasks():
    bench = ToolCLBenchmark(num_tasks=4, seed=0, train_size=8, test_size=4)
    assert "add" in bench.tools(0) and "add" not in bench.tools(1) and "plus" in bench.tools(1)  # renamed
    assert bench.tools(0)["convert"].arity == 3 and bench.tools(2)["convert"].arity == 2  # new signature
    d1, d2 = bench.tools(1)["days_between"], bench.tools(3)["days_between"]  # new behaviour, same call
    assert d1.arity == d2.arity
    assert d1.fn("2024-01-01", "2024-01-03") == "2" and d2.fn("2024-01-01", "2024-01-03") == "3"
    # a task-0 call is wrong in task 1's environment (the rename)
    call = bench[0]["test"].filter(lambda r: r["tool"] == "add@1")[0]["tool_completion"]
    assert ToolExecutor(bench.tools(0)).run(call).ok and not ToolExecutor(bench.tools(1)).run(call).ok
    assert bench[1]["train"][0]["prompt"].startswith("[tools: plus, days_between]\nQ: ")
    assert len(DEFAULT_SCHEDULE) == 6 and len(ToolCLBenchmark(num_tasks=6, train_size=2, test_size=2)) == 6


def test_benchmark_bad_input():
    with pytest.raises(ValueError, match="Unknown tool 'sqrt@1'"):
        TaskSpec("bad", ("add@1", "sqrt@1"))
    with pytest.raises(ValueError, match="share the call name 'convert'"):
        TaskSpec("clash", ("convert@1", "convert@2"))
    with pytest.raises(ValueError, match="only 6 tasks"):
        ToolCLBenchmark(num_tasks=7)
    with pytest.raises(ValueError, match="num_tasks must be a positive integer"):
        ToolCLBenchmark(num_tasks=0)
    custom = ToolCLBenchmark(num_tasks=1, tasks=(TaskSpec("only", ("upper@1",)),), train_size=3, test_size=2)
    assert custom[0]["test"][0]["answer"].isupper()


# ---------------------------------------------------------------------------------------------------- replay

def _stream(task, n, tools=("a", "b")):
    return [{"task_id": task, "tool": f"{tools[k % len(tools)]}{task}", "i": k} for k in range(n)]


def test_reservoir_is_uniform_over_the_stream_and_seeded():
    counts = Counter()
    for seed in range(300):
        buf = ReplayBuffer(ReplayConfig(size=10, seed=seed))
        buf.add(_stream(0, 50))
        buf.add(_stream(1, 50))
        assert len(buf) == 10 and buf.seen == 100
        counts.update(x["task_id"] for x in buf.examples())
    assert abs(counts[0] / 3000 - 0.5) < 0.05  # each of the 100 examples kept with probability 10/100
    a, b = ReplayBuffer(ReplayConfig(size=5, seed=3)), ReplayBuffer(ReplayConfig(size=5, seed=3))
    for buf in (a, b):
        buf.add(_stream(0, 40))
    assert a.examples() == b.examples()


def test_class_balanced_splits_capacity_over_classes():
    buf = ReplayBuffer(ReplayConfig(size=9, strategy="class_balanced"))
    buf.add(_stream(0, 90, tools=("a",)))  # one class: takes everything
    assert len(buf) == 9
    buf.add(_stream(1, 40, tools=("b", "c")))  # three classes now: 3 each
    assert Counter(x["tool"] for x in buf.examples()) == {"a0": 3, "b1": 3, "c1": 3}
    buf.add(_stream(2, 3, tools=("d",)))  # four classes: 3, 2, 2, 2
    assert sorted(Counter(x["tool"] for x in buf.examples()).values()) == [2, 2, 2, 3]
    by_task = ReplayBuffer(ReplayConfig(size=4, strategy="class_balanced", class_key="task_id"))
    by_task.add(_stream(0, 10) + _stream(1, 10))
    assert Counter(x["task_id"] for x in by_task.examples()) == {0: 2, 1: 2}


def test_replay_none_and_config_validation():
    for cfg in (ReplayConfig(size=0), ReplayConfig(size=10, strategy="none")):
        buf = ReplayBuffer(cfg)
        buf.add(_stream(0, 5))
        assert len(buf) == 0
    with pytest.raises(ValueError, match="strategy must be one of"):
        ReplayConfig(strategy="fifo")
    with pytest.raises(ValueError, match="size must be a non-negative integer"):
        ReplayConfig(size=-1)
    assert ReplayConfig.from_dict(ReplayConfig(size=3).to_dict()) == ReplayConfig(size=3)
    with pytest.raises(ValueError, match="Unknown ReplayConfig keys"):
        ReplayConfig.from_dict({"size": 3, "ratio": 0.5})


# ------------------------------------------------------------------------------------------ continual trainer

@pytest.mark.parametrize("tool_use", [True, False])
def test_tiny_continual_run_fills_the_matrix(tool_use, tmp_path):
    import torch
    from transformers import TrainingArguments

    from hf_ext.common.models import tiny_model
    from hf_ext.tool_cl import ContinualTrainer

    model, tok = tiny_model("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    bench = ToolCLBenchmark(num_tasks=2, seed=0, train_size=8, test_size=4)
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, per_device_train_batch_size=4,
                             learning_rate=1e-2, save_strategy="no", report_to="none", disable_tqdm=True,
                             use_cpu=True)
    trainer = ContinualTrainer(model, tok, bench, replay=ReplayConfig(size=4), args=args, tool_use=tool_use,
                               max_new_tokens=6, progress=False)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    res = trainer.run()
    assert len(res.matrix) == 2 and all(len(r) == 2 for r in res.matrix) and len(res.baseline) == 2
    assert all(0.0 <= v <= 1.0 for r in res.matrix for v in r)
    assert set(res.metrics) == {"average_accuracy", "learning_accuracy", "backward_transfer", "forward_transfer",
                                "forgetting"}
    assert len(res.answers[1][0]) == 4 and len(res.train_loss) == 2
    assert len(trainer.buffer) == 4
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad
               and not torch.equal(p.detach(), lora_before[n])]
    assert changed and all("lora_" in n for n in changed)
    base = trainer.model.get_base_model()
    assert all(torch.equal(p, before[n.replace("base_layer.", "")]) for n, p in base.named_parameters()
               if "lora_" not in n)  # LoRA trains adapters only


def test_trainer_tokenizes_with_prompt_masked():
    from hf_ext.common.models import tiny_model
    from hf_ext.tool_cl import ContinualTrainer

    model, tok = tiny_model("llama")
    bench = ToolCLBenchmark(num_tasks=1, train_size=2, test_size=2)
    trainer = ContinualTrainer(model, tok, bench, lora=False, progress=False)
    row = bench.examples(0, "train")[0]
    ds = trainer.tokenize([row])
    n_prompt = len(tok(row["prompt"])["input_ids"])
    assert ds[0]["labels"][:n_prompt] == [-100] * n_prompt
    assert ds[0]["labels"][-1] == tok.eos_token_id and ds[0]["input_ids"][n_prompt:] == ds[0]["labels"][n_prompt:]
    assert tok.decode(ds[0]["labels"][n_prompt:-1]) == row["tool_completion"]
    with pytest.raises(ValueError, match="bench must be a ToolCLBenchmark"):
        ContinualTrainer(model, tok, [bench[0]])


def test_completion_loss_equals_the_models_own_loss():
    import torch

    from hf_ext.common.models import tiny_model
    from hf_ext.tool_cl.trainer import completion_loss

    model, _ = tiny_model("llama")
    ids = torch.randint(4, 300, (3, 12))
    labels = ids.clone()
    labels[0, :7], labels[1, :4], labels[2, :10] = -100, -100, -100  # prompts of different lengths
    labels[1, 9:] = -100  # right padding
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        assert completion_loss(model, inputs).item() == pytest.approx(model(**inputs).loss.item(), rel=1e-5)


def test_cli_bench_tool_cl_is_registered_and_refuses_bad_input_before_loading(capsys):
    from hf_ext.cli import build_parser, main

    args = build_parser().parse_args(["bench", "tool-cl", "--tasks", "2", "--replay", "0", "--no-tools"])
    assert args.tasks == 2 and args.replay == 0 and args.no_tools
    assert main(["bench", "tool-cl", "--model", "/nonexistent", "--tasks", "9"]) == 2  # before any model load
    assert "only 6 tasks" in capsys.readouterr().err
