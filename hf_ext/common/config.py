"""One ``to_dict`` / ``from_dict`` and field-type check for hf-ext's plain dataclass configs.

Quantization configs derive :class:`hf_ext.common.quantizer.HfExtQuantizationConfig` (transformers' mixin); every
other config (attacks, SaMIA, speculative decoding, ...) derives :class:`ConfigMixin`. Both reject unknown keys in
``from_dict`` with the list of known ones, and both reject a float or a bool where a field is declared ``int``
(``num_samples=2.5`` used to fail as a ``TypeError`` deep inside a run).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

_INT_TYPES: dict[type, tuple[str, ...]] = {}


def int_fields(cls: type) -> tuple[str, ...]:
    """Names of the fields of dataclass ``cls`` declared ``int`` or ``int | None`` (cached per class)."""
    if cls not in _INT_TYPES:
        hints = typing.get_type_hints(cls)
        names = []
        for f in dataclasses.fields(cls):
            hint = hints.get(f.name)
            args = set(typing.get_args(hint)) or {hint}
            if int in args and not args - {int, type(None)}:
                names.append(f.name)
        _INT_TYPES[cls] = tuple(names)
    return _INT_TYPES[cls]


def check_int_fields(config: Any) -> None:
    """Raise ``ValueError`` naming the first ``int`` field that holds a float, bool or string."""
    for name in int_fields(type(config)):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{type(config).__name__}.{name} must be an integer, got {value!r}.")


def unknown_keys_error(cls: type, unknown: set[str], known: set[str]) -> ValueError:
    return ValueError(f"Unknown {cls.__name__} field(s) {sorted(unknown)}; known fields: {sorted(known)}.")


class ConfigMixin:
    """``to_dict`` / ``from_dict`` (unknown keys rejected) and the int-field check for a ``@dataclass`` config.

    A subclass calls :meth:`check_types` first in its ``__post_init__``.
    """

    def check_types(self) -> None:
        check_int_fields(self)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        data = {**config_dict, **kwargs}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise unknown_keys_error(cls, unknown, known)
        for f in dataclasses.fields(cls):
            if f.name in data and isinstance(data[f.name], list) and isinstance(f.default, tuple):
                data[f.name] = tuple(data[f.name])
        return cls(**data)
