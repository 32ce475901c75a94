"""Quality levels a server routes between: in-process HF models, the widths of one any-precision checkpoint, and
remote OpenAI-compatible endpoints (vLLM, TGI; how users scale out behind an existing engine).

Every level answers ``await level.generate(prompts, max_tokens, temperature, on_text)`` for one batch; ``on_text``
(one callback or None per prompt) receives text deltas as tokens are produced, which is how the server streams.
In-process levels run ``model.generate`` in a worker thread; levels sharing one model object (the widths of an
any-precision checkpoint) share a lock, switch precision before each batch, and keep one dense weight cache per
served width (``cache_dequantized="all"``), so a switch costs a pointer change: the memory of those caches is
reported by :meth:`AnyPrecisionLevel.memory_mib`.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.generation.streamers import BaseStreamer
from transformers.utils import logging

logger = logging.get_logger(__name__)

DEFAULT_LEVELS = ("default@layers=12@vocab=8192", "default@vocab=32768", "default")
"""``hf-ext serve`` without ``--level``: the embedded model three ways, lowest quality first, all sharing one copy of
the weights (our choice: on a CPU the 262k-token LM head is most of Gemma 3 270M's decode time, so reduced
vocabularies, plus fewer blocks for the cheapest, give levels that differ in speed; the profiler measures how much
and what quality each keeps)."""

TINY_CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                      "{% if add_generation_prompt %}assistant:{% endif %}")


_TOKENIZER_LOCKS: dict[int, threading.Lock] = {}


def tokenizer_lock(tokenizer) -> threading.Lock:
    """One lock per tokenizer object: a fast tokenizer used from two threads at once raises "Already borrowed", and
    levels sharing a model share its tokenizer (workers and the request handler run in different threads)."""
    return _TOKENIZER_LOCKS.setdefault(id(tokenizer), threading.Lock())


class BackendUnavailable(RuntimeError):
    """A level could not serve (remote endpoint down or failing); the server answers 503 and keeps running."""


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


class Level:
    """Base class: ``name``, an optional ``tokenizer`` (for chat templates and token limits) and ``generate``."""

    name: str = "level"
    tokenizer = None

    async def generate(self, prompts: list[str], max_tokens: list[int], temperature: float,
                       on_text: list[Callable[[str], None] | None]) -> list[Generation]:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text) // 4 + 1
        with tokenizer_lock(self.tokenizer):
            return len(self.tokenizer(text)["input_ids"])

    async def aclose(self) -> None:
        return None


class _RowStreamer(BaseStreamer):
    """Receives the batch's new token ids from ``generate`` (in its thread) and hands each row's text delta to the
    event loop."""

    def __init__(self, tokenizer, callbacks, max_tokens, loop):
        self.tok, self.callbacks, self.max_tokens, self.loop = tokenizer, callbacks, max_tokens, loop
        self.ids: list[list[int]] = [[] for _ in callbacks]
        self.text = [""] * len(callbacks)
        self.done = [cb is None for cb in callbacks]
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate first passes the prompt ids
            self.prompt_seen = True
            return
        for row, tok in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if tok == self.tok.eos_token_id or len(self.ids[row]) >= self.max_tokens[row]:
                self.done[row] = True
                continue
            self.ids[row].append(tok)
            with tokenizer_lock(self.tok):
                text = self.tok.decode(self.ids[row], skip_special_tokens=True)
            if text.startswith(self.text[row]) and len(text) > len(self.text[row]) and not text.endswith("\ufffd"):
                delta, self.text[row] = text[len(self.text[row]):], text
                self.loop.call_soon_threadsafe(self.callbacks[row], delta)

    def end(self) -> None:
        return None


class HFModelLevel(Level):
    """An in-process transformers causal LM (batched, left-padded greedy or sampled decoding)."""

    def __init__(self, model, tokenizer, name: str, lock: threading.Lock | None = None):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.lock = lock or threading.Lock()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def _prepare(self) -> None:
        return None

    def generate_sync(self, prompts: list[str], max_tokens: list[int], temperature: float,
                      on_text=None, loop=None) -> list[Generation]:
        tok = self.tokenizer
        with self.lock, torch.no_grad():
            self._prepare()
            with tokenizer_lock(tok):
                side, tok.padding_side = tok.padding_side, "left"
                try:
                    enc = tok(prompts, return_tensors="pt", padding=True)
                finally:
                    tok.padding_side = side
            streamer = None
            if on_text is not None and any(cb is not None for cb in on_text):
                streamer = _RowStreamer(tok, on_text, max_tokens, loop)
            kw = dict(do_sample=True, temperature=temperature) if temperature > 0 else dict(do_sample=False)
            out = self.model.generate(**enc, max_new_tokens=max(max_tokens), pad_token_id=tok.pad_token_id,
                                      streamer=streamer, **kw)
        new = out[:, enc["input_ids"].shape[1]:]
        with tokenizer_lock(tok):
            return self._decode(new, enc, max_tokens)

    def _decode(self, new, enc, max_tokens) -> list[Generation]:
        tok, gens = self.tokenizer, []
        for row in range(new.shape[0]):
            ids = new[row].tolist()
            stop = tok.eos_token_id in ids[: max_tokens[row]]
            ids = ids[: ids.index(tok.eos_token_id)] if stop else ids[: max_tokens[row]]
            ids = [i for i in ids if i != tok.pad_token_id]
            gens.append(Generation(tok.decode(ids, skip_special_tokens=True), int(enc["attention_mask"][row].sum()),
                                   len(ids), "stop" if stop else "length"))
        return gens

    async def generate(self, prompts, max_tokens, temperature, on_text):
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self.generate_sync, prompts, max_tokens, temperature, on_text, loop)


class AnyPrecisionLevel(HFModelLevel):
    """One width of an any-precision model; several levels share the model and its lock."""

    def __init__(self, model, tokenizer, bits: int, name: str, lock: threading.Lock):
        from ..any_precision.model import any_precision_layers

        super().__init__(model, tokenizer, name, lock)
        self.bits = int(bits)
        if self.bits not in model.precisions:
            raise ValueError(f"Precision {bits} is not loaded in this checkpoint (it holds {model.precisions}).")
        for layer in any_precision_layers(model).values():
            layer.cache = "all"  # one dense cache per served width: a switch is then a pointer change

    def _prepare(self) -> None:
        if self.model.precision != self.bits:
            self.model.set_precision(self.bits)

    def memory_mib(self) -> float:
        """Dense caches of every width served so far plus the stored planes (the whole model's footprint)."""
        from ..any_precision.model import any_precision_layers, stored_mib

        return stored_mib(self.model) + sum(m.cache_nbytes() for m in any_precision_layers(self.model).values()) / 2**20


class OpenAILevel(Level):
    """A remote OpenAI-compatible ``/v1/completions`` endpoint (vLLM, TGI, another hf-ext server)."""

    def __init__(self, base_url: str, name: str | None = None, model: str | None = None, timeout_s: float = 60.0,
                 tokenizer=None):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.name = name or self.base_url.split("//", 1)[-1].replace("/", "_")
        self.model, self.tokenizer = model, tokenizer
        self.client = httpx.AsyncClient(timeout=timeout_s)

    async def _one(self, prompt: str, max_tokens: int, temperature: float) -> Generation:
        import httpx

        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                "model": self.model or "default"}
        try:
            r = await self.client.post(f"{self.base_url}/completions", json=body)
        except httpx.HTTPError as e:
            raise BackendUnavailable(f"backend {self.base_url} unreachable: {type(e).__name__}") from e
        if r.status_code >= 500 or r.status_code == 429:
            raise BackendUnavailable(f"backend {self.base_url} answered {r.status_code}")
        if r.status_code >= 400:
            raise ValueError(f"backend {self.base_url} refused the request ({r.status_code}): {r.text[:200]}")
        data = r.json()
        choice, usage = data["choices"][0], data.get("usage") or {}
        return Generation(choice.get("text", ""), int(usage.get("prompt_tokens", 0)),
                          int(usage.get("completion_tokens", 0)), choice.get("finish_reason") or "length")

    async def generate(self, prompts, max_tokens, temperature, on_text):
        gens = await asyncio.gather(*(self._one(p, m, temperature) for p, m in zip(prompts, max_tokens)))
        for g, cb in zip(gens, on_text or [None] * len(gens)):
            if cb is not None and g.text:
                cb(g.text)  # the remote answer arrives whole: one delta
        return list(gens)

    async def aclose(self) -> None:
        await self.client.aclose()


def truncated_view(model, depth: int | None = None, vocab: int | None = None):
    """A model running only the first ``depth`` decoder blocks of ``model`` and, with ``vocab``, predicting only the
    first ``vocab`` token ids (the LM head's first rows: tokenizers rank ids roughly by frequency, as FR-Spec's
    reduced draft vocabulary), sharing every weight with ``model``: a cheaper level that costs no memory. On a CPU the
    LM head of a large-vocabulary model dominates decoding, so ``vocab`` is what makes such a level fast."""
    import copy

    from ..common.arch import get_blocks

    blocks = get_blocks(model)
    depth = len(blocks) if depth is None else depth
    if not 1 <= depth <= len(blocks):
        raise ValueError(f"@layers={depth} but the model has {len(blocks)} decoder blocks.")
    head = model.get_output_embeddings()
    if vocab is not None and not 1 <= vocab <= head.weight.shape[0]:
        raise ValueError(f"@vocab={vocab} but the model has {head.weight.shape[0]} output tokens.")
    path = next(name for name, m in model.named_modules() if m is blocks).split(".")
    config = copy.deepcopy(model.config)
    text = getattr(config, "text_config", config)
    text.num_hidden_layers = depth
    if getattr(text, "layer_types", None):
        text.layer_types = text.layer_types[:depth]
    root = copy.copy(model)
    root._modules = dict(model._modules)
    new, old = root, model
    for part in path[:-1]:  # copy the chain of parents down to the block list, nothing else
        child = copy.copy(old._modules[part])
        child._modules = dict(child._modules)
        new._modules[part] = child
        new, old = child, old._modules[part]
    new._modules[path[-1]] = torch.nn.ModuleList(list(blocks)[:depth])
    if vocab is not None:
        small = torch.nn.Linear(head.in_features, vocab, bias=head.bias is not None)
        small.weight = torch.nn.Parameter(head.weight[:vocab], requires_grad=False)  # a view: no copy
        if head.bias is not None:
            small.bias = torch.nn.Parameter(head.bias[:vocab], requires_grad=False)
        name = next(n for n, m in model.named_modules() if m is head)
        if "." in name:
            raise ValueError(f"@vocab= needs the LM head at the model's top level, found {name!r}.")
        root._modules[name] = small
    chain = [root, *(root.get_submodule(".".join(path[:i])) for i in range(1, len(path)))]
    for m in {id(x): x for x in chain}.values():
        if hasattr(m, "config"):
            m.config = config if m is root or getattr(m.config, "num_hidden_layers", None) is None else text
    return root


def _split_name(spec: str) -> tuple[str | None, str]:
    m = re.match(r"^([A-Za-z0-9_.\-]+)=(.+)$", spec)  # NAME=SPEC; "@layers=K" and URLs have other characters first
    return (m.group(1), m.group(2)) if m else (None, spec)


def parse_levels(specs: list[str], dtype: torch.dtype = torch.float32) -> list[Level]:
    """Build levels from command-line specs (lowest quality first), each optionally ``name=spec``:

    * ``http(s)://host:port/v1``: a remote OpenAI-compatible endpoint;
    * ``PATH:BITS``: one width of the any-precision checkpoint at ``PATH`` (widths of one path share one model);
    * ``tiny:FAMILY``: a tiny random-weight model (tests and ``--tiny`` examples);
    * anything else: a model path or Hub id (``default``: the embedded Gemma 3 270M);
    * any in-process spec may end in ``@layers=K`` (only its first ``K`` decoder blocks run: an early-exit level)
      and / or ``@vocab=N`` (only the first ``N`` token ids are predicted); both share the full model's weights and
      are faster and worse, by amounts the profiler measures.
    """
    if not specs:
        raise ValueError("At least one --level is needed.")
    from ..common.models import load_model, tiny_model

    shared: dict[str, tuple] = {}
    levels: list[Level] = []
    for raw in specs:
        name, spec = _split_name(raw)
        cut: dict[str, int] = {}
        while not spec.startswith(("http://", "https://")) and re.search(r"@(layers|vocab)=[^@]*$", spec):
            spec, opt = spec.rsplit("@", 1)
            key, k = opt.split("=", 1)
            if not k.isdigit() or int(k) < 1:
                raise ValueError(f"@{key}= needs a positive integer, got {k!r} in {raw!r}.")
            cut[key] = int(k)
        if spec.startswith(("http://", "https://")):
            levels.append(OpenAILevel(spec, name=name))
        elif spec.startswith("tiny:"):
            if spec not in shared:
                model, tok = tiny_model(spec.split(":", 1)[1], seed=len(levels))
                tok.chat_template = TINY_CHAT_TEMPLATE
                shared[spec] = (model, tok, threading.Lock())
            model, tok, _ = shared[spec]
            levels.append(HFModelLevel(model, tok, name or spec.replace(":", "-")))
        elif ":" in spec and spec.rsplit(":", 1)[1].isdigit() and os.path.isdir(spec.rsplit(":", 1)[0]):
            path, bits = spec.rsplit(":", 1)
            if path not in shared:
                from transformers import AutoTokenizer

                from ..any_precision.api import from_pretrained

                shared[path] = (from_pretrained(path, dtype=dtype), AutoTokenizer.from_pretrained(path),
                                threading.Lock())
            model, tok, lock = shared[path]
            levels.append(AnyPrecisionLevel(model, tok, int(bits), name or f"{os.path.basename(path)}@{bits}bit", lock))
        else:
            if spec not in shared:  # a model named twice (full and @layers=K) is loaded once
                shared[spec] = (*load_model(spec, dtype=dtype), threading.Lock())
            model, tok, _ = shared[spec]
            levels.append(HFModelLevel(model, tok, name or os.path.basename(spec.rstrip("/")) or spec))
        if cut:
            if type(levels[-1]) is not HFModelLevel:
                raise ValueError(f"@layers= / @vocab= apply to a plain in-process model, not {raw!r}.")
            levels[-1].model = truncated_view(levels[-1].model, cut.get("layers"), cut.get("vocab"))
            suffix = (f"-{cut['layers']}L" if "layers" in cut else "") + (f"-v{cut['vocab']}" if "vocab" in cut else "")
            levels[-1].name = name or f"{levels[-1].name}{suffix}"
    names = [lv.name for lv in levels]
    if len(set(names)) != len(names):
        raise ValueError(f"Level names must be unique, got {names}; name them with NAME=SPEC.")
    return levels


def parse_level(spec: str) -> Level:
    return parse_levels([spec])[0]
