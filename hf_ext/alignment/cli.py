"""``hf-ext align``: ISARA self-alignment of a model from seed (question, answer) rows and an unlabeled pool."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction) -> None:
    """Add ``hf-ext align``."""
    p = sub.add_parser("align", help="ISARA self-alignment: retrieve -> generate in context -> filter -> SFT, iterated")
    p.add_argument("--model", default="default", help="model path or Hub id ('default': Gemma 3 270M)")
    p.add_argument("--seeds", default="bundled",
                   help="seed .jsonl/.json with question/answer fields ('bundled': the 64 Python-stdlib seeds)")
    p.add_argument("--pool", default="pydocs",
                   help="unlabeled domain text: 'pydocs', a file or folder, or 'none' (the seeds anchor prompts)")
    p.add_argument("--heldout", default="auto",
                   help="held-out .jsonl scored each round ('auto': the bundled set with the bundled seeds; 'none')")
    p.add_argument("--eval-limit", type=int, default=None, help="score only the first N held-out rows")
    p.add_argument("--out", required=True, help="output folder (report.json, report.png, samples, final adapter)")
    p.add_argument("--overwrite", action="store_true", help="replace hf-ext's files in a non-empty --out")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--samples-per-iteration", type=int, default=64)
    p.add_argument("--icl-examples", type=int, default=4)
    p.add_argument("--retriever", default="embedding", choices=("embedding", "bm25"))
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--epochs", type=float, default=2.0, help="SFT epochs per round")
    p.add_argument("--max-steps", type=int, default=-1, help="SFT steps per round (overrides --epochs when > 0)")
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=8, help="SFT batch size")
    p.add_argument("--full-finetune", action="store_true", help="train every weight instead of a LoRA adapter")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_align)


def cmd_align(args: argparse.Namespace) -> int:
    from ..common.models import load_model
    from .domain import HELDOUT_FILE, SEEDS_FILE
    from .isara_config import ISARAConfig, default_sft_config
    from .isara_trainer import ISARATrainer, load_pool_passages, validate_rows

    seeds = validate_rows(str(SEEDS_FILE) if args.seeds == "bundled" else args.seeds, "--seeds")
    heldout_path = {"auto": str(HELDOUT_FILE) if args.seeds == "bundled" else None, "none": None}.get(
        args.heldout, args.heldout)
    heldout = None if heldout_path is None else validate_rows(heldout_path, "--heldout")[: args.eval_limit]
    pool = None if args.pool == "none" else load_pool_passages(args.pool)
    sft = default_sft_config()
    sft.num_train_epochs, sft.max_steps = args.epochs, args.max_steps
    sft.learning_rate, sft.per_device_train_batch_size = args.learning_rate, args.batch_size
    cfg = ISARAConfig(output_dir=args.out, overwrite=args.overwrite, iterations=args.iterations,
                      samples_per_iteration=args.samples_per_iteration, icl_examples=args.icl_examples,
                      retriever=args.retriever, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      seed=args.seed, sft=sft, **({"lora": None} if args.full_finetune else {}))
    # every input is checked by the trainer before the model loads
    ISARATrainer.check_inputs(seeds, pool, cfg, heldout)
    model, tokenizer = load_model(args.model)
    trainer = ISARATrainer(model, tokenizer, seed_dataset=seeds, pool=pool, args=cfg, eval_dataset=heldout)
    reports = trainer.train()
    final = trainer.save_model()
    base = trainer.baseline
    print("| iteration | generated | kept | rejected | SFT loss | held-out score (95% CI) |")
    print("|---|---|---|---|---|---|")
    if base is not None:
        print(f"| 0 (before) | - | - | - | - | {base.mean:.4f} [{base.ci_low:.4f}, {base.ci_high:.4f}] |")
    for r in reports:
        rej = ", ".join(f"{k} {v}" for k, v in r.rejected.items() if v) or "-"
        h = r.heldout
        score = "-" if h is None else f"{h['mean']:.4f} [{h['ci_low']:.4f}, {h['ci_high']:.4f}]"
        loss = "-" if r.sft_loss is None else f"{r.sft_loss:.4f}"
        print(f"| {r.iteration} | {r.generated} | {r.kept} | {rej} | {loss} | {score} |")
    print(f"wrote {trainer.output_dir / 'report.json'}, report.png and the adapter in {final}")
    return 0

