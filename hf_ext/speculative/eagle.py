"""A trained shallow draft of the EAGLE family, reading the target's own features, with a reduced vocabulary head.

Design (EAGLE-1 input and feature regression, EAGLE-3 / FR-Spec head; REFERENCES.md section 4):

* Draft position ``t`` reads the target's last hidden state ``f_t`` (the input of its LM head at token ``t``)
  concatenated with the embedding of token ``t + 1`` (the target's own frozen embedding): ``2H -> Linear -> H``,
  then ``num_hidden_layers`` Llama decoder layers (whatever the target's family, as vLLM's EAGLE-3 drafts do).
* Its output ``o_t`` is trained to equal ``f_{t+1}`` (Smooth-L1), so the next draft step can read it in place of
  the target feature it has not computed yet; ``lm_head(norm(o_t))`` scores the token at ``t + 2`` over a NEW
  head of ``draft_vocab_size`` frequency-ranked tokens (``d2t`` maps draft index -> target id). The target still
  verifies over its full vocabulary, so greedy output stays the target's own.
* Only the new parts are saved (``fc``, layers, norm, head, ``d2t``): the embedding is the target's, bound at run
  time with :meth:`EagleDraftModel.bind_target` (Gemma 3 270M's embedding alone is 170 M parameters).

Our choices (not fixed by the papers): Llama layers with the target's widths; the head initialised from the
target's LM head rows; losses ``token_loss_weight * CE + feature_loss_weight * SmoothL1`` (see :mod:`.eagle_train`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from huggingface_hub import ModelCard, ModelCardData
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.masking_utils import create_causal_mask
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding
from transformers.utils import ModelOutput

from ..common.hub import attach_model_card
from .eagle_config import EagleDraftConfig


@dataclass
class EagleDraftOutput(ModelOutput):
    """``logits`` over the draft vocabulary; ``hidden_states`` the draft's output (its estimate of the next target
    feature, fed back by the next draft step); ``loss`` when labels are given."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    cache: object | None = None


_CARD = """
# {{ model_name }}

A shallow **EAGLE-style draft** for speculative decoding of [{{ target }}]({{ target_link }}), made with
[hf-ext](https://github.com/hf-ext/hf-ext) (`hf_ext.speculative`).

- Reads the target's last hidden state and the next token's embedding (the target's own, frozen, not stored here);
  {{ layers }} Llama decoder layer(s) of width {{ hidden }}; a new head over the {{ draft_vocab }} most frequent
  tokens of its training text (`d2t` maps them to the target's ids). The target verifies over its full
  vocabulary of {{ target_vocab }} tokens, so greedy output is exactly the target's.
- Trained data: {{ data }}.

```python
from hf_ext.speculative import EagleDraftModel, generate
draft = EagleDraftModel.from_pretrained("{{ model_name }}")
out = target.generate(**inputs, custom_generate=generate, draft_model=draft, num_draft_tokens="auto")
```

It only works with its target (it reads the target's features and embedding).
"""


class EagleDraftModel(PreTrainedModel):
    """EAGLE-family draft (module docstring); plug in as ``draft_model=`` of :func:`hf_ext.speculative.generate`."""

    config_class = EagleDraftConfig
    base_model_prefix = "eagle"
    main_input_name = "hidden_states"
    _no_split_modules = ["LlamaDecoderLayer"]
    _supports_sdpa = True
    _supports_attention_backend = True

    def __init__(self, config: EagleDraftConfig):
        super().__init__(config)
        h = config.hidden_size
        self.fc = nn.Linear(2 * h, h, bias=True)
        self.layers = nn.ModuleList([LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(h, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.lm_head = nn.Linear(h, config.draft_vocab_size, bias=False)
        self.register_buffer("d2t", torch.arange(config.draft_vocab_size), persistent=True)
        object.__setattr__(self, "_target_embed", None)  # not a submodule: never saved, never trained
        self.post_init()
        attach_model_card(self, _make_card)

    # ----------------------------------------------------------------------------------------------- target glue
    def bind_target(self, target: PreTrainedModel) -> EagleDraftModel:
        """Use ``target``'s input embedding for the next-token embeddings (not copied, not saved)."""
        vocab = target.config.get_text_config().vocab_size
        if vocab != self.config.target_vocab_size:
            raise ValueError(f"This draft was made for a target with {self.config.target_vocab_size} tokens, "
                             f"got one with {vocab}.")
        object.__setattr__(self, "_target_embed", target.get_input_embeddings())
        return self

    def make_drafter(self, target: PreTrainedModel):
        """The :class:`~.drafts.Drafter` the verifier runs (called by ``generate(draft_model=self)``)."""
        from .eagle_drafter import EagleDrafter

        return EagleDrafter(self.bind_target(target))

    @torch.no_grad()
    def init_head_from_target(self, target: PreTrainedModel) -> None:
        """Start the draft head from the target's LM head rows of the draft vocabulary (our choice)."""
        weight = target.get_output_embeddings().weight
        self.lm_head.weight.copy_(weight[self.d2t.to(weight.device)].to(self.lm_head.weight))

    def draft_to_target(self, logits: torch.Tensor, fill: float = -1e9) -> torch.Tensor:
        """Scatter draft-vocabulary logits ``(..., Vd)`` into target-vocabulary logits ``(..., V)``."""
        full = logits.new_full((*logits.shape[:-1], self.config.target_vocab_size), fill)
        return full.index_copy_(-1, self.d2t, logits)

    # --------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        labels: torch.LongTensor | None = None,
        target_hidden: torch.Tensor | None = None,
        **kwargs,
    ) -> EagleDraftOutput:
        """One draft pass.

        Args:
            hidden_states: ``(B, n, H)`` target features ``f_t`` (or the draft's own estimates).
            input_ids: ``(B, n)`` the tokens ``t + 1`` (embedded with the bound target embedding), or
            inputs_embeds: ``(B, n, H)`` their embeddings.
            labels: ``(B, n)`` draft-vocabulary index of the target's token at ``t + 2`` (-100: ignore).
            target_hidden: ``(B, n, H)`` the target features ``f_{t+1}`` the output should reproduce.
        """
        if inputs_embeds is None:
            if input_ids is None or self._target_embed is None:
                raise ValueError("Pass inputs_embeds, or input_ids after bind_target(target).")
            inputs_embeds = self._target_embed(input_ids)
        if position_ids is None:
            start = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(start, start + inputs_embeds.shape[1], device=inputs_embeds.device)[None]
        x, logits = self._pass(hidden_states, inputs_embeds, attention_mask, position_ids, cache, use_cache,
                               logits_to_keep)
        loss = None
        if labels is not None or target_hidden is not None:
            loss = self._loss(x, logits, labels, target_hidden)
            prev = x
            for i in range(1, self.config.train_unroll if self.training else 1):
                # draft position t reads the previous pass's estimate of f_t (its output at t - 1)
                fed = torch.cat([hidden_states[:, :1].to(prev.dtype), prev[:, :-1]], dim=1)
                prev, more = self._pass(fed, inputs_embeds, attention_mask, position_ids, None, False, 0)
                loss = loss + 0.8 ** i * self._loss(prev, more, labels, target_hidden)
        return EagleDraftOutput(loss=loss, logits=logits, hidden_states=x, cache=cache)

    def _pass(self, hidden_states, inputs_embeds, attention_mask, position_ids, cache, use_cache, logits_to_keep):
        x = self.fc(torch.cat([hidden_states.to(inputs_embeds.dtype), inputs_embeds], dim=-1))
        mask = create_causal_mask(config=self.config, inputs_embeds=x, attention_mask=attention_mask, cache=cache,
                                  position_ids=position_ids)
        rope = self.rotary_emb(x, position_ids=position_ids)
        for layer in self.layers:
            x = layer(x, attention_mask=mask, position_ids=position_ids, cache=cache, use_cache=use_cache,
                      position_embeddings=rope)
        keep = slice(-logits_to_keep, None) if logits_to_keep else slice(None)
        return x, self.lm_head(self.norm(x[:, keep]))

    def _loss(self, x, logits, labels, target_hidden) -> torch.Tensor:
        loss = x.new_zeros(())
        if labels is not None and self.config.token_loss_weight:
            loss = loss + self.config.token_loss_weight * nn.functional.cross_entropy(
                logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        if target_hidden is not None and self.config.feature_loss_weight:
            valid = (labels != -100)[..., None] if labels is not None else torch.ones_like(x[..., :1])
            diff = nn.functional.smooth_l1_loss(x.float(), target_hidden.float(), reduction="none")
            loss = loss + self.config.feature_loss_weight * (diff * valid).sum() / (valid.sum() * x.shape[-1])
        return loss


def eagle_config_for(target: PreTrainedModel, num_layers: int, draft_vocab_size: int,
                     target_name: str | None = None, **overrides) -> EagleDraftConfig:
    """A draft config with the target's widths (hidden, heads, head_dim, MLP) and ``num_layers`` layers."""
    t = target.config.get_text_config()
    heads = t.num_attention_heads
    kw = dict(
        hidden_size=t.hidden_size,
        intermediate_size=getattr(t, "intermediate_size", None) or getattr(t, "ffn_dim", 4 * t.hidden_size),
        num_attention_heads=heads,
        num_key_value_heads=getattr(t, "num_key_value_heads", None) or heads,
        head_dim=getattr(t, "head_dim", None) or t.hidden_size // heads,
        num_hidden_layers=num_layers,
        max_position_embeddings=max(getattr(t, "max_position_embeddings", 2048) or 2048, 2048),
        rms_norm_eps=1e-6,
        vocab_size=t.vocab_size,
        target_vocab_size=t.vocab_size,
        draft_vocab_size=draft_vocab_size,
        target_model=target_name or getattr(t, "_name_or_path", None) or None,
        pad_token_id=None, bos_token_id=None, eos_token_id=None, tie_word_embeddings=False,
    )
    kw.update(overrides)
    return EagleDraftConfig(**kw)


def _make_card(model: EagleDraftModel) -> str:
    c = model.config
    target = c.target_model or "its target model"
    link = f"https://huggingface.co/{target}" if target.count("/") == 1 and not target.startswith((".", "/")) else "#"
    data = ModelCardData(base_model=target if link != "#" else None, library_name="transformers",
                         tags=["hf-ext", "speculative-decoding", "eagle", "draft-model"])
    return str(ModelCard.from_template(
        data, template_str="---\n{{ card_data }}\n---\n" + _CARD, model_name=getattr(c, "_name_or_path", "") or
        "eagle-draft", target=target, target_link=link, layers=c.num_hidden_layers, hidden=c.hidden_size,
        draft_vocab=c.draft_vocab_size, target_vocab=c.target_vocab_size, data=c.training_data or "not recorded"))


# The real class takes the place of the stand-in that `import hf_ext` registers (see .eagle_config)
AutoConfig.register(EagleDraftConfig.model_type, EagleDraftConfig, exist_ok=True)
AutoModel.register(EagleDraftConfig, EagleDraftModel, exist_ok=True)
