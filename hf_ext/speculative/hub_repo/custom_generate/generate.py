"""hf-ext speculative decoding as a ``custom_generate`` folder (the layout transformers loads from the Hub).

``model.generate(**inputs, custom_generate=hf_ext.speculative.CUSTOM_GENERATE_DIR, trust_remote_code=True,
draft_model=draft, num_draft_tokens="auto", streamer=..., tokenizer=..., stop_strings=[...])``. transformers copies
this file into its module cache, so it imports hf_ext absolutely (relative imports are not resolved there).
"""

from hf_ext.speculative.entry import generate_from_folder


def generate(model, **kwargs):
    return generate_from_folder(model, **kwargs)
