"""ISARA: iterative self-alignment from a few seed samples, without human instructions (Guo et al., 2024).

Each round: (1) retrieve the unlabeled pool passages most related to the seeds (ranked once, consumed in order,
each passage used once: our choice), (2) prompt the current model with the k labeled examples nearest to each
passage and let it write a new (question, answer) pair, (3) filter (parse, length bounds, ROUGE-L duplicates,
quality), (4) fine-tune with ``trl.SFTTrainer`` (LoRA through PEFT by default) on the seeds plus everything kept so
far, then (5) score the held-out set. The next round generates with the updated model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from transformers.utils import logging

from ..common.utils import atomic_dir, atomic_write_text, check_output_dir
from .evaluation import EvalResult, evaluate_qa
from .filtering import FilterResult, filter_samples
from .generation import generate, icl_prompt, qa_prompt
from .isara_config import ISARAConfig
from .report import IterationReport, save_report
from .retrieval import Retriever, nearest_examples, rank_pool

logger = logging.get_logger(__name__)


def validate_rows(rows, name: str, fields: Sequence[str] = ("question", "answer")) -> list[dict]:
    """Rows of a list of dicts, a ``datasets.Dataset`` or a ``.jsonl`` / ``.json`` file, checked for non-empty
    string ``fields``; raises ``ValueError`` naming the first bad row."""
    if rows is None:
        raise ValueError(f"{name} is required.")
    if isinstance(rows, (str, os.PathLike)):
        path = Path(rows)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such file {str(path)!r}.")
        text = path.read_text(encoding="utf-8")
        try:
            lines = [x for x in text.splitlines() if x.strip()]
            rows = json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in lines]
        except json.JSONDecodeError as e:
            raise ValueError(f"{name}: {path} is not valid JSON / JSON Lines ({e}).") from e
    rows = [dict(r) if hasattr(r, "keys") else r for r in rows]
    if not rows:
        raise ValueError(f"{name} is empty: ISARA needs at least one (question, answer) row.")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{name} row {i} is a {type(row).__name__}, not a mapping with {list(fields)}.")
        missing = [f for f in fields if not isinstance(row.get(f), str) or not row[f].strip()]
        if missing:
            raise ValueError(f"{name} row {i} lacks a non-empty string field {missing} (has {sorted(row)}).")
    return rows


def load_pool_passages(pool) -> list[str]:
    """Pool passages: None (no pool), a list of strings (one passage each), a ``datasets.Dataset`` with a ``text``
    column, ``"pydocs"`` (the bundled domain's pool) or any ``hf_ext.common.data`` text source (split into
    paragraphs)."""
    from .domain import doc_passages, load_pool

    if pool is None:
        return []
    if isinstance(pool, (str, os.PathLike)):
        return load_pool() if str(pool) == "pydocs" else doc_passages(_load_text(pool))
    if hasattr(pool, "column_names"):
        if "text" not in pool.column_names:
            raise ValueError(f"pool dataset has no 'text' column (columns: {pool.column_names}).")
        pool = pool["text"]
    passages = [p for p in pool if isinstance(p, str) and p.strip()]
    if len(passages) != len(list(pool)):
        raise ValueError("pool holds entries that are not non-empty strings.")
    return passages


def _load_text(source) -> list[str]:
    from ..common.data import load_text

    return load_text(source, split="eval")


def check_writable_dir(target: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an output folder that cannot be created or written (and a non-empty one without ``overwrite``)."""
    target = check_output_dir(target, overwrite)
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"output_dir {str(target)!r} cannot be created: {str(probe)!r} is a file.")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise PermissionError(f"output_dir {str(target)!r} is not writable ({e.strerror}: {probe}).") from e
    return target


class ISARATrainer:
    """Self-align ``model`` on a domain from ``seed_dataset`` (a few (question, answer) rows) and an optional
    unlabeled ``pool``.

    Args:
        model: a causal LM (wrapped with ``args.lora`` unless it is already a ``PeftModel`` or ``args.lora`` is None).
        tokenizer: its tokenizer.
        seed_dataset: rows with ``question`` and ``answer`` (list, ``datasets.Dataset`` or ``.jsonl`` path).
        pool: unlabeled domain text (see :func:`load_pool_passages`); None: passages are not used, the seeds
            themselves anchor the prompts.
        args: an :class:`ISARAConfig`.
        eval_dataset: held-out rows scored before training and after each round (never trained on).
        scorer: ``scorer(prompt, response, reference) -> float`` for the held-out set (None: the bundled domain's
            ROUGE-L + embedding similarity, :class:`~hf_ext.alignment.scoring.DomainScorer`).
        quality_fn: ``quality_fn(question, answer, passage) -> float`` of the filter (None: grounding in the passage).
        retriever: a ready :class:`~hf_ext.alignment.retrieval.Retriever` (None: built from ``args``).

    All inputs are checked here, before any model work: empty or malformed seeds, more in-context examples than
    labeled examples, an output folder that cannot be written.
    """

    def __init__(self, model, tokenizer, seed_dataset=None, pool=None, args: ISARAConfig | None = None,
                 eval_dataset=None, scorer: Callable | None = None, quality_fn: Callable | None = None,
                 retriever: Retriever | None = None):
        self.args = args if args is not None else ISARAConfig()
        self.seeds, self.eval_rows, self.pool, self.output_dir = self.check_inputs(
            seed_dataset, pool, self.args, eval_dataset)
        self.tokenizer = tokenizer
        self.retriever = retriever or Retriever(self.args.retriever, self.args.embedding_model)
        self.scorer = scorer
        self.quality_fn = quality_fn
        self.model = self._wrap(model)
        self.kept: list[dict] = []
        self.history: list[IterationReport] = []
        self.baseline: EvalResult | None = None
        self.last_eval: EvalResult | None = None  # with per-question scores and answers
        self._anchors: list[str] | None = None

    @staticmethod
    def check_inputs(seed_dataset, pool, args: ISARAConfig, eval_dataset=None):
        """Validate every input without a model: (seed rows, eval rows or None, pool passages, output folder).

        Raises:
            ValueError: empty or malformed seed / eval rows, a bad pool, more in-context examples than seeds.
            FileExistsError, NotADirectoryError, PermissionError: an output folder that cannot be used.
        """
        if not isinstance(args, ISARAConfig):
            raise ValueError(f"args must be an ISARAConfig, got {type(args).__name__}.")
        seeds = validate_rows(seed_dataset, "seed_dataset")
        eval_rows = None if eval_dataset is None else validate_rows(eval_dataset, "eval_dataset")
        passages = load_pool_passages(pool)
        k = args.icl_examples
        if k > len(seeds):
            raise ValueError(
                f"icl_examples={k} exceeds the {len(seeds)} labeled seed examples available (seeds + pool: "
                f"{len(seeds)} + {len(passages)}; pool passages are unlabeled and cannot serve as examples).")
        return seeds, eval_rows, passages, check_writable_dir(args.output_dir, args.overwrite)

    def _wrap(self, model):
        if self.args.lora is None:
            return model
        from peft import PeftModel, get_peft_model
        from transformers import set_seed

        if isinstance(model, PeftModel):
            return model
        set_seed(self.args.seed)  # the adapter's random init follows the run's seed
        return get_peft_model(model, self.args.lora)

    # ------------------------------------------------------------------------------------------------- stages

    def anchors(self) -> list[str]:
        """Pool passages in retrieval order (computed once); empty without a pool."""
        if self._anchors is None:
            seeds = [f"{r['question']} {r['answer']}" for r in self.seeds]
            order, _ = rank_pool(self.retriever, seeds, self.pool, min_quality=self.args.pool_min_quality,
                                 prefilter=self.args.pool_prefilter) if self.pool else ([], None)
            if self.pool and not order:
                raise ValueError(f"No pool passage reaches pool_min_quality={self.args.pool_min_quality}.")
            self._anchors = [self.pool[i] for i in order]
        return self._anchors

    def use_anchors(self, passages: Sequence[str]) -> None:
        """Use ``passages`` (already in retrieval order, e.g. another trainer's :meth:`anchors`) as this run's
        anchors, skipping the ranking (runs compared at the same budget then see the same passages)."""
        self._anchors = list(passages)

    def build_prompts(self, n: int, offset: int = 0) -> list[dict]:
        """``n`` generation prompts (dicts with ``prompt`` and ``passage``) for anchors ``offset .. offset + n``,
        each holding the ``icl_examples`` labeled examples nearest to its anchor."""
        bank = self.seeds + [{"question": s["question"], "answer": s["answer"]} for s in self.kept]
        anchors = self.anchors()
        if anchors:
            chosen = [anchors[(offset + j) % len(anchors)] for j in range(n)]
            passages = chosen
        else:  # no pool: the seeds anchor the prompts (round robin)
            chosen = [f"{self.seeds[(offset + j) % len(self.seeds)]['question']}" for j in range(n)]
            passages = [None] * n
        sims = self.retriever.similarity(chosen, [f"{e['question']} {e['answer']}" for e in bank])
        out = []
        for j in range(n):
            examples = [bank[i] for i in nearest_examples(sims[j], self.args.icl_examples)]
            out.append({"prompt": icl_prompt(examples, passage=passages[j]), "passage": passages[j]})
        return out

    def generate_round(self, n: int, offset: int = 0, seed: int = 0) -> list[dict]:
        """Candidates (``text``: the raw generation, ``passage``) of one round."""
        prompts = self.build_prompts(n, offset)
        a = self.args
        texts = generate(self.model, self.tokenizer, [p["prompt"] for p in prompts], max_new_tokens=a.max_new_tokens,
                         temperature=a.temperature, top_p=a.top_p, batch_size=a.generation_batch_size, seed=seed,
                         max_prompt_tokens=a.max_prompt_tokens, desc="ISARA generate",
                         stop=["\n\n", "\nQuestion:"])
        return [{"text": t, "passage": p["passage"]} for t, p in zip(texts, prompts)]

    def filter(self, candidates: list[dict]) -> FilterResult:
        a = self.args
        existing = [r["question"] for r in self.seeds] + [r["question"] for r in self.kept]
        return filter_samples(candidates, existing, question_words=a.question_words, answer_words=a.answer_words,
                              max_rouge=a.max_rouge, min_quality=a.min_quality, quality_fn=self.quality_fn,
                              require_question_mark=a.require_question)

    def fine_tune(self, rows: Sequence[dict], run_name: str = "sft") -> float:
        """One ``trl.SFTTrainer`` run on prompt-completion pairs of ``rows``; returns the mean training loss."""
        from datasets import Dataset
        from transformers import set_seed
        from trl import SFTTrainer

        data = Dataset.from_list([{"prompt": qa_prompt(r["question"]), "completion": " " + r["answer"].strip()}
                                  for r in rows])
        sft_args = dataclasses.replace(self.args.sft, output_dir=str(self.output_dir / "sft" / run_name),
                                       seed=self.args.seed)
        set_seed(self.args.seed)
        trainer = SFTTrainer(model=self.model, args=sft_args, train_dataset=data, processing_class=self.tokenizer)
        out = trainer.train()
        self.model = trainer.model
        self.model.eval()
        return float(out.training_loss)

    def evaluate(self) -> EvalResult | None:
        """Held-out score of the current model (None without an ``eval_dataset``)."""
        if self.eval_rows is None:
            return None
        if self.scorer is None:
            from .scoring import DomainScorer

            self.scorer = DomainScorer(self.retriever)
        self.last_eval = evaluate_qa(self.model, self.tokenizer, self.eval_rows, self.scorer,
                                     max_new_tokens=self.args.eval_max_new_tokens,
                                     batch_size=self.args.eval_batch_size, seed=self.args.seed, progress=False)
        return self.last_eval

    # ------------------------------------------------------------------------------------------------- loop

    def step(self, iteration: int, n: int | None = None, offset: int | None = None) -> IterationReport:
        """One round: generate ``n`` samples (default ``samples_per_iteration``) from anchors starting at
        ``offset`` (default: where the previous round stopped), filter, fine-tune, evaluate."""
        a = self.args
        n = a.samples_per_iteration if n is None else n
        offset = sum(r.generated for r in self.history) if offset is None else offset
        t0 = time.perf_counter()
        candidates = self.generate_round(n, offset, seed=a.seed * 100_003 + iteration)
        t1 = time.perf_counter()
        result = self.filter(candidates)
        t2 = time.perf_counter()
        new = [{**s, "iteration": iteration} for s in result.kept]
        self.kept.extend(new)
        if a.train_on in ("new", "new_only"):
            rows = (self.seeds if not self.history and a.train_on == "new" else []) + new
        else:
            rows = (self.seeds if a.train_on == "seeds+kept" else []) + self.kept
        loss = self.fine_tune(rows, run_name=f"iter{iteration}") if rows else None
        t3 = time.perf_counter()
        ev = self.evaluate()
        t4 = time.perf_counter()
        atomic_write_text(self.output_dir / f"samples_iter{iteration}.jsonl",
                          "".join(json.dumps(s) + "\n" for s in result.kept))
        report = IterationReport(
            iteration=iteration, generated=len(candidates), kept=len(result.kept),
            rejected=result.to_dict()["rejected"], train_samples=len(rows), sft_loss=loss,
            heldout=None if ev is None else ev.to_dict(),
            seconds={"generate": t1 - t0, "filter": t2 - t1, "sft": t3 - t2, "eval": t4 - t3})
        self.history.append(report)
        logger.info("ISARA iteration %d: kept %d / %d, loss %s, held-out %s", iteration, report.kept, report.generated,
                    loss, None if ev is None else f"{ev.mean:.4f}")
        self._save_report()
        return report

    def train(self) -> list[IterationReport]:
        """Run ``args.iterations`` rounds; writes ``report.json`` / ``report.png`` after each."""
        t = time.perf_counter()
        self.anchors()
        logger.info("ISARA: %d pool passages ranked in %.1f s", len(self._anchors), time.perf_counter() - t)
        if self.eval_rows is not None and self.baseline is None:
            self.baseline = self.evaluate()
        for it in range(len(self.history) + 1, len(self.history) + self.args.iterations + 1):
            self.step(it)
        return self.history

    def _save_report(self) -> None:
        meta = {"config": self.args.to_dict(), "seeds": len(self.seeds), "pool_passages": len(self.pool),
                "baseline_heldout": None if self.baseline is None else self.baseline.to_dict()}
        save_report(self.output_dir, self.history, meta)

    def save_model(self, path: str | os.PathLike | None = None) -> Path:
        """Save the model (the LoRA adapter when LoRA is on) and tokenizer to ``path`` (default
        ``output_dir/final``), atomically."""
        path = Path(path) if path is not None else self.output_dir / "final"
        with atomic_dir(path, overwrite=self.args.overwrite or path.parent == self.output_dir) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
        return path
