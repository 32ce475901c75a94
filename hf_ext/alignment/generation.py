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

from collections.abc import Sequence

from transformers.utils import logging

from ..common.generation import batched_generate

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


def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 48, temperature: float = 0.7,
             top_p: float = 0.9, batch_size: int = 8, seed: int | None = 0, max_prompt_tokens: int = 768,
             progress: bool = True, desc: str = "generate", stop: Sequence[str] | None = None) -> list[str]:
    """Continuations of ``prompts`` (decoded without the prompt), in batches with a progress bar.

    :func:`hf_ext.common.generation.batched_generate` with this capability's defaults (sampling at 0.7 / top-p 0.9,
    seeded per batch, prompts cut to their last 768 tokens). ``temperature == 0`` decodes greedily. ``stop``:
    strings that end a continuation early (saves most of the decoding when the model goes on writing further
    examples); the returned text may hold the stop string and what followed it in the same step.
    """
    return batched_generate(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size,
                            temperature=temperature, top_p=top_p, seed=seed, max_prompt_tokens=max_prompt_tokens,
                            stop=stop, progress=progress, desc=desc)
