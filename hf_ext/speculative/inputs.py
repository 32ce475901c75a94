"""Model inputs other than ids, mask, position ids and cache, handled as plain ``generate`` handles them.

``generate`` hands every extra model keyword to ``prepare_inputs_for_generation``, which forwards it unchanged to
each forward; a few follow the sequence (``token_type_ids`` repeats its last value for new tokens,
``mm_token_type_ids`` grows with zeros) and raw multimodal inputs (``pixel_values``, ...) go to the prefill only.
:class:`ExtraInputs` reproduces those rules for forwards that score several new tokens at once (the verifier's),
so a target that reads such inputs gives the same tokens as under plain ``generate``.
"""

from __future__ import annotations

import torch

try:  # the names transformers forwards only during the prefill
    from transformers.generation.utils import MULTIMODAL_INPUTS_TO_DROP_OUTSIDE_PREFILL as _PREFILL_ONLY
except ImportError:  # pragma: no cover - older transformers
    _PREFILL_ONLY = ("pixel_values", "pixel_values_videos", "image_sizes", "input_features", "mm_encoder_outputs")

# handled by the decoding loop itself (DecodeState, caches, logits_to_keep)
HANDLED = ("attention_mask", "position_ids", "cache", "past_key_values", "use_cache", "logits_to_keep")
# per-token inputs that grow with the sequence: name -> how new slots are filled ("last" value or "zeros")
PER_TOKEN = {"token_type_ids": "last", "mm_token_type_ids": "zeros", "moe_mm_token_type_ids": "zeros"}


class ExtraInputs:
    """The extra model keywords of one ``generate`` call, sliced per forward like plain decoding slices them."""

    def __init__(self, model_kwargs: dict) -> None:
        if model_kwargs.get("inputs_embeds") is not None:
            raise NotImplementedError(
                "hf_ext.speculative.generate needs input_ids (the draft proposes token ids); inputs_embeds is not "
                "supported. Pass input_ids, or use plain generate for embedding inputs."
            )
        self.per_token = {k: v for k, v in model_kwargs.items() if k in PER_TOKEN and v is not None}
        self.static = {k: v for k, v in model_kwargs.items()
                       if k not in HANDLED and k not in PER_TOKEN and k != "inputs_embeds" and v is not None}

    def __bool__(self) -> bool:
        return bool(self.per_token or self.static)

    def _slots(self, name: str, value: torch.Tensor, start: int, end: int) -> torch.Tensor:
        length = value.shape[-1]
        if end > length:
            fill = value[..., -1:] if PER_TOKEN[name] == "last" else torch.zeros_like(value[..., -1:])
            value = torch.cat([value, fill.expand(*value.shape[:-1], end - length)], dim=-1)
        return value[..., start:end]

    def for_forward(self, start: int, end: int) -> dict:
        """Keywords for a forward over sequence slots ``start..end-1`` (``start == 0``: the prefill)."""
        out = {k: self._slots(k, v, start, end) for k, v in self.per_token.items()}
        out.update({k: v for k, v in self.static.items() if start == 0 or k not in _PREFILL_ONLY})
        return out

    def commit(self, length: int) -> None:
        """The sequence now holds ``length`` slots: grow the per-token inputs to it (as plain decoding does)."""
        for k, v in self.per_token.items():
            if v.shape[-1] < length:
                self.per_token[k] = self._slots(k, v, 0, length)
