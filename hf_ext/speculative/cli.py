"""``hf-ext speculative generate`` and ``hf-ext speculative select-draft``: speculative decoding from the shell.

Drafts are named on the command line: ``self:K`` (the target's first K blocks with a frequency-ranked head of
``--head-vocab`` tokens), ``lookup`` (prompt-lookup n-grams), or a model folder / Hub id sharing the vocabulary
(a folder written by ``train-draft`` loads as the trained EAGLE-style draft).

``hf-ext speculative train-draft --model default --data pydocs --out DIR`` trains that draft (:mod:`.eagle_train`).
"""

from __future__ import annotations

import argparse


def register(subparsers, eval_subparsers) -> None:
    p = subparsers.add_parser("speculative", help="speculative decoding: generate with a draft, or rank drafts")
    sub = p.add_subparsers(dest="speculative_command", required=True, parser_class=type(p))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="default", help="target model path or Hub id ('default': Gemma 3 270M)")
    common.add_argument("--max-new-tokens", type=int, default=64, help="new tokens per prompt (default 64)")
    common.add_argument("--head-vocab", type=int, default=4096,
                        help="tokens in a self-draft's frequency-ranked head (default 4096)")
    common.add_argument("--vocab-data", default="pydocs",
                        help="text whose token frequencies rank the self-draft head (default pydocs)")

    g = sub.add_parser("generate", parents=[common], help="generate with a draft; checks greedy identity")
    g.add_argument("--prompt", required=True, help="the prompt text")
    g.add_argument("--draft", default="lookup", help="self:K, lookup, or a model path (default lookup)")
    g.add_argument("--num-draft-tokens", default="auto", help="lookahead: a positive integer or 'auto' (default)")
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("select-draft", parents=[common], help="rank drafts with the analytical model")
    s.add_argument("--draft", nargs="+", required=True, dest="drafts", help="candidates: self:K, lookup, paths")
    s.add_argument("--prompts", nargs="+", default=None, help="prompt texts (default: 3 pydocs paragraphs)")
    s.set_defaults(func=cmd_select_draft)

    t = sub.add_parser("train-draft", help="train an EAGLE-style shallow draft on the target's features")
    t.add_argument("--model", default="default", help="target model path or Hub id ('default': Gemma 3 270M)")
    t.add_argument("--data", default="pydocs", help="training text: pydocs, a local file or folder (default pydocs)")
    t.add_argument("--out", required=True, help="output folder (the draft, training_log.json, loss_curve.png)")
    t.add_argument("--layers", type=int, default=1, help="decoder layers of the draft (default 1)")
    t.add_argument("--draft-vocab", type=int, default=8192, help="tokens of the draft head (default 8192)")
    t.add_argument("--samples", type=int, default=64, help="training windows (default 64)")
    t.add_argument("--seqlen", type=int, default=256, help="tokens per window (default 256)")
    t.add_argument("--steps", type=int, default=150, help="optimizer steps (default 150)")
    t.add_argument("--batch-size", type=int, default=8, help="windows per step (default 8)")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument("--unroll", type=int, default=1,
                   help="training passes per batch; > 1 feeds back the draft's own outputs (default 1)")
    t.add_argument("--overwrite", action="store_true", help="replace what hf-ext wrote in --out before")
    t.set_defaults(func=cmd_train_draft)


def _lookahead(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--num-draft-tokens must be a positive integer or 'auto', got {value!r}.")
    return int(value)


def _check_draft_specs(specs: list[str]) -> None:
    for spec in specs:
        if spec.startswith("self:") and not (spec[5:].isdigit() and int(spec[5:]) >= 1):
            raise ValueError(f"Draft {spec!r}: self:K needs a positive block count K (e.g. self:4).")


def _make_draft(spec: str, model, tokenizer, head_vocab: int, vocab_data: str):
    from ..common.arch import get_blocks
    from ..common.data import load_text
    from ..common.models import load_model
    from .drafts import PromptLookupDrafter, frequency_vocab, shallow_self_draft

    if spec == "lookup":
        return PromptLookupDrafter()
    if spec.startswith("self:"):
        depth = int(spec[5:])
        blocks = len(get_blocks(model))
        if depth > blocks:
            raise ValueError(f"Draft {spec!r}: the target has only {blocks} blocks.")
        head = frequency_vocab(tokenizer, load_text(vocab_data, "calibration")[:40], min(head_vocab, len(tokenizer)))
        return shallow_self_draft(model, depth, head)
    from pathlib import Path

    config = Path(spec) / "config.json"
    if config.is_file() and '"hf_ext_eagle_draft"' in config.read_text():
        from .eagle import EagleDraftModel

        return EagleDraftModel.from_pretrained(spec).eval()
    draft, _ = load_model(spec)
    return draft


def _check_common(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}.")
    if args.head_vocab < 2:
        raise ValueError(f"--head-vocab must be >= 2, got {args.head_vocab}.")


def cmd_generate(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..common.models import load_model
    from .mixin import SpeculativeStats, generate

    _check_common(args)
    gamma = _lookahead(args.num_draft_tokens)
    _check_draft_specs([args.draft])
    model, tokenizer = load_model(args.model)
    draft = _make_draft(args.draft, model, tokenizer, args.head_vocab, args.vocab_data)
    inputs = tokenizer(args.prompt, return_tensors="pt").to(model.device)
    gen = dict(do_sample=False, max_new_tokens=args.max_new_tokens)
    with torch.no_grad():
        t0 = time.perf_counter()
        ref = model.generate(**inputs, **gen)
        plain = time.perf_counter() - t0
        stats = SpeculativeStats()
        t0 = time.perf_counter()
        out = model.generate(**inputs, custom_generate=generate, draft_model=draft, num_draft_tokens=gamma,
                             speculative_stats=stats, **gen)
        spec = time.perf_counter() - t0
    new = out.shape[1] - inputs["input_ids"].shape[1]
    print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    print(f"\n{new} new tokens: speculative {new / spec:.2f} tok/s vs plain greedy {new / plain:.2f} tok/s "
          f"(one run each, first call includes warm-up); acceptance {stats.acceptance:.2f}, mean accepted length "
          f"{stats.mean_accepted_length:.2f}; output {'identical' if torch.equal(out, ref) else 'DIFFERENT'} "
          "to plain greedy")
    return 0


def cmd_select_draft(args: argparse.Namespace) -> int:
    from ..common.data import load_text
    from ..common.models import load_model
    from .select import select_draft

    _check_common(args)
    _check_draft_specs(args.drafts)
    prompts = args.prompts or [t[:600] for t in load_text("pydocs", "eval")[:3]]
    model, tokenizer = load_model(args.model)
    candidates = {s: _make_draft(s, model, tokenizer, args.head_vocab, args.vocab_data) for s in args.drafts}
    ranking = select_draft(model, candidates, prompts, tokenizer=tokenizer, max_new_tokens=args.max_new_tokens)
    print("| draft | acceptance | draft step ms | best lookahead | predicted tok/s | measured tok/s | error % |"
          " speedup |\n|---|---|---|---|---|---|---|---|")
    for r in ranking:
        print(f"| {r.name} | {r.acceptance:.3f} | {r.draft_step_ms:.1f} | {r.best_gamma} | {r.predicted_tps:.2f} | "
              f"{r.measured_tps:.2f} | {r.error_pct:+.1f} | {r.speedup:.2f}x |")
    return 0


def cmd_train_draft(args: argparse.Namespace) -> int:
    from ..common.models import load_model
    from ..common.utils import check_output_dir
    from .eagle_train import EagleTrainingConfig, train_eagle_draft

    config = EagleTrainingConfig(num_layers=args.layers, draft_vocab_size=args.draft_vocab, data=args.data,
                                 n_samples=args.samples, seqlen=args.seqlen, max_steps=args.steps,
                                 batch_size=args.batch_size, learning_rate=args.lr, unroll=args.unroll)
    check_output_dir(args.out, args.overwrite)
    model, tokenizer = load_model(args.model)
    name = "google/gemma-3-270m" if args.model == "default" else args.model
    result = train_eagle_draft(model, tokenizer, config, target_name=name, output_dir=args.out,
                               overwrite=args.overwrite)
    first, last = result.losses[0][1], result.losses[-1][1]
    print(f"trained a {args.layers}-layer draft over {result.draft.config.draft_vocab_size} tokens in "
          f"{result.feature_seconds:.0f} s (features) + {result.train_seconds:.0f} s (training); loss {first:.3f} -> "
          f"{last:.3f}; saved to {args.out} (loss_curve.png, training_log.json)")
    return 0
