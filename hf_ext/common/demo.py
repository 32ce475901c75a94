"""The ``hf-ext demo`` row and context types: every capability's ``demo_rows`` returns these, the CLI prints them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DemoRow:
    """One row of the ``hf-ext demo`` table."""

    capability: str
    setting: str
    metric: str
    value: float | str
    baseline: float | str = ""
    note: str = ""


@dataclass
class DemoContext:
    """What every demo row shares: the dense perplexity and the evaluation protocol, measured once."""

    eval_data: str = "pydocs"
    seqlen: int = 512
    max_tokens: int = 4088
    dense_ppl: float | None = None
    extra: dict = field(default_factory=dict)

    def ppl(self, model, tokenizer) -> float:
        from .perplexity import perplexity

        return perplexity(model, tokenizer, self.eval_data, seqlen=self.seqlen, max_tokens=self.max_tokens,
                          progress=False).perplexity
