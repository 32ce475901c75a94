"""In-context prompts and batched generation.

Prompt template (our choice; the paper's is not public)::

    Questions about the Python standard library, each with a short factual answer.   <- ``header``

    Question: <example 1>
    Answer: <answer 1>

    ... exactly k examples ...

    Documentation: <retrieved passage>        <- only when generating from an unlabeled passage
    Question:                                 <- the model writes "<new question>\\nAnswer: <new answer>"

Evaluation and SFT use ``"Question: <q>\\nAnswer:"`` as the prompt and ``" <answer>"`` as the completion; ICL-kNN
puts the header and k nearest seed examples before it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

DEFAULT_HEADER = "Questions about the Python standard library, each with a short factual answer."


def qa_prompt(question: str) -> str:
    """The SFT / evaluation prompt of one question."""
    return f"Question: {question.strip()}\nAnswer:"


def format_example(example: dict) -> str:
    return f"Question: {example['question'].strip()}\nAnswer: {example['answer'].strip()}\n\n"


def icl_prompt(examples: Sequence[dict], passage: str | None = None, question: str | None = None,
               header: str = DEFAULT_HEADER) -> str:
    """A prompt holding exactly ``len(examples)`` examples, then either a passage to write a new pair from
    (``question`` None) or a question to answer."""
    if passage is not None and question is not None:
        raise ValueError("icl_prompt takes a passage (to generate a pair) or a question (to answer), not both.")
    text = (header.strip() + "\n\n" if header else "") + "".join(format_example(e) for e in examples)
    if question is not None:
        return text + qa_prompt(question)
    if passage is not None:
        text += f"Documentation: {' '.join(passage.split())}\n"
    return text + "Question:"


def first_line(text: str) -> str:
    """The answer part of a continuation: its first non-empty line, stripped."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


@contextlib.contextmanager
def _left_padding(tokenizer):
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


class StopOnText:
    """Stop each sequence once its continuation's decoded last ``window`` tokens contain a stop string.

    ``generate(stop_strings=...)`` precomputes a table over the whole vocabulary on every call (seconds for
    Gemma's 262k tokens); decoding a few tokens per step is far cheaper for short continuations.
    """

    def __init__(self, tokenizer, stops: Sequence[str], prompt_len: int, window: int = 6):
        self.tokenizer, self.stops, self.prompt_len, self.window = tokenizer, list(stops), prompt_len, window

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_len:]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if new.shape[1] == 0:
            return done
        tails = self.tokenizer.batch_decode(new[:, -self.window:], skip_special_tokens=True)
        for i, text in enumerate(tails):
            done[i] = any(s in text for s in self.stops)
        return done


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 48, temperature: float = 0.7,
             top_p: float = 0.9, batch_size: int = 8, seed: int | None = 0, max_prompt_tokens: int = 768,
             progress: bool = True, desc: str = "generate", stop: Sequence[str] | None = None) -> list[str]:
    """Continuations of ``prompts`` (decoded without the prompt), in batches with a progress bar.

    ``temperature == 0`` decodes greedily. With a ``seed``, each batch starts from ``seed + batch index`` so a run
    is reproducible regardless of what ran before. Prompts longer than ``max_prompt_tokens`` keep their end.
    ``stop``: strings that end a continuation early (saves most of the decoding when the model goes on writing
    further examples); checked on the decoded tail of each sequence, see :class:`StopOnText`.
    """
    from tqdm.auto import tqdm

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = []
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else \
        dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    with _left_padding(tokenizer):
        trunc_side, tokenizer.truncation_side = tokenizer.truncation_side, "left"
        try:
            for b, start in enumerate(tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress)):
                chunk = list(prompts[start : start + batch_size])
                enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                                max_length=max_prompt_tokens).to(device)
                if seed is not None:
                    torch.manual_seed(seed + b)
                extra = {}
                if stop:
                    from transformers import StoppingCriteriaList

                    extra["stopping_criteria"] = StoppingCriteriaList(
                        [StopOnText(tokenizer, stop, enc["input_ids"].shape[1])])
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     **sampling, **extra)
                new = ids[:, enc["input_ids"].shape[1]:]
                out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
        finally:
            tokenizer.truncation_side = trunc_side
    model.train(was_training)
    return out
