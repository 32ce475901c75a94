"""``to_dict`` / ``from_dict`` for plain dataclass configs (unknown keys refused), written once."""

from __future__ import annotations

import dataclasses
from typing import Any


class DictConfigMixin:
    """Mix into a ``@dataclass``: ``to_dict()`` gives its fields, ``from_dict(d)`` rebuilds it (``__post_init__``
    validates) and raises ``ValueError`` naming any key that is not a field."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} keys {sorted(unknown)}.")
        return cls(**d)
