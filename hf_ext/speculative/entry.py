"""Doors into speculative ``generate`` that keep every argument plain ``generate`` users rely on.

transformers hands a *callable* ``custom_generate`` only the prepared processors, criteria and model inputs:
``tokenizer=`` is dropped (so ``stop_strings`` fail with "could not locate a tokenizer") and ``streamer=`` only
receives the prompt. Three ways in, from most to least complete:

* :class:`SpeculativeGenerationMixin` (``class MyLM(SpeculativeGenerationMixin, LlamaForCausalLM)``): ``generate(...,
  draft_model=d, streamer=s, tokenizer=tok, stop_strings=[...])`` works as plain ``generate`` does.
* :data:`CUSTOM_GENERATE_DIR`, a Hub-style ``custom_generate/generate.py`` folder inside this package:
  ``model.generate(..., custom_generate=CUSTOM_GENERATE_DIR, trust_remote_code=True, draft_model=d, streamer=s,
  tokenizer=tok, stop_strings=[...])`` on any model (transformers passes every argument to a folder's function).
* the callable ``custom_generate=hf_ext.speculative.generate``: pass the streamer as ``speculative_streamer=`` and
  stop strings as ``stopping_criteria=[StopStringCriteria(tokenizer, stop_strings)]``.

The first two build the stop-string criterion themselves (with the tokenizer) and hand the streamer over under its
``speculative_streamer`` name, then run transformers' own ``generate`` with the callable.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from pathlib import Path

from transformers import GenerationMixin, StoppingCriteriaList, StopStringCriteria

CUSTOM_GENERATE_DIR = str(Path(__file__).resolve().parent / "hub_repo")
"""Folder holding ``custom_generate/generate.py``: pass it as ``custom_generate=`` with ``trust_remote_code=True``."""


def generate_with_draft(model, *args, draft_model=None, num_draft_tokens: int | str = "auto", streamer=None,
                        tokenizer=None, stop_strings=None, stopping_criteria=None, generation_config=None,
                        _generate=None, **kwargs):
    """Plain ``generate`` semantics (streamer, tokenizer, stop strings) around :func:`hf_ext.speculative.generate`."""
    from .mixin import generate as speculative_generate

    if draft_model is None:
        raise ValueError("Speculative generate needs draft_model= (a model or an hf_ext Drafter).")
    config = generation_config if generation_config is not None else model.generation_config
    strings = stop_strings if stop_strings is not None else getattr(config, "stop_strings", None)
    criteria = StoppingCriteriaList(list(stopping_criteria or []))
    if strings:
        if tokenizer is None:
            raise ValueError("stop_strings need the model's tokenizer: pass tokenizer= to generate.")
        criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=strings))
        # the criterion is ours now; left in a config, transformers would look for a tokenizer again
        if generation_config is not None and generation_config.stop_strings:
            generation_config = copy.deepcopy(generation_config)
            generation_config.stop_strings = None
    run = _generate or functools.partial(GenerationMixin.generate, model)
    with _without_stop_strings(model.generation_config, active=bool(strings)):
        return run(*args, generation_config=generation_config, stopping_criteria=criteria,
                   custom_generate=speculative_generate, draft_model=draft_model, num_draft_tokens=num_draft_tokens,
                   speculative_streamer=streamer, **kwargs)


@contextlib.contextmanager
def _without_stop_strings(config, active: bool):
    """The model's own generation config fills unset values, stop strings included: hide them for one call."""
    saved = getattr(config, "stop_strings", None)
    if active and saved:
        config.stop_strings = None
    try:
        yield
    finally:
        if active and saved:
            config.stop_strings = saved


def generate_from_folder(model, inputs=None, assistant_model=None, **arguments):
    """What ``custom_generate/generate.py`` runs: transformers passes ``model`` and every ``generate`` argument."""
    if assistant_model is not None:
        raise ValueError("Pass the draft as draft_model=, not assistant_model=, to hf-ext's custom_generate.")
    arguments = {k: v for k, v in arguments.items() if v is not None or k == "generation_config"}
    return generate_with_draft(model, inputs, **arguments)


class SpeculativeGenerationMixin:
    """Put first in a model's bases to get ``generate(..., draft_model=d, num_draft_tokens=...)``.

    ``streamer=``, ``tokenizer=`` and ``stop_strings=`` work as in plain ``generate``; without ``draft_model`` the
    call is plain ``generate``.

    Example:
        ``class MyOPT(SpeculativeGenerationMixin, OPTForCausalLM): ...`` then
        ``MyOPT.from_pretrained(name).generate(**inputs, draft_model=draft, num_draft_tokens="auto")``.
    """

    def generate(self, *args, draft_model=None, num_draft_tokens: int | str = "auto", **kwargs):
        if draft_model is None:
            return super().generate(*args, **kwargs)
        return generate_with_draft(self, *args, draft_model=draft_model, num_draft_tokens=num_draft_tokens,
                                   _generate=super().generate, **kwargs)
