"""The replay buffer of the continual trainer: reservoir and class-balanced sampling, or none.

After each task the trainer offers that task's training examples to the buffer; while training the next task, the
whole buffer is added to its training set (our choice: the paper does not say how replay is mixed in, so the
replay ratio is ``size / train_size``). Sampling is seeded and deterministic.

- ``"reservoir"``: Vitter's algorithm R over the stream of every example offered so far: each has the same chance
  ``size / seen`` to be in the buffer.
- ``"class_balanced"``: one reservoir per class (``class_key`` column, the tool version by default), the capacity
  split evenly over the classes seen so far (the first ``size % classes`` classes get one more); when a new class
  arrives, over-full classes drop random examples (Avalanche's ``ClassBalancedBuffer`` idea).
- ``"none"`` (or ``size=0``): no replay.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields

STRATEGIES = ("reservoir", "class_balanced", "none")


@dataclass
class ReplayConfig:
    """Settings of the replay buffer.

    Args:
        size: examples kept in the buffer (0 = no replay).
        strategy: ``"reservoir"``, ``"class_balanced"`` or ``"none"``.
        class_key: example column that defines a class for ``"class_balanced"`` (default: the tool version, our
            choice; ``"task_id"`` balances over tasks).
        seed: sampling seed.
    """

    size: int = field(default=200, metadata={"help": "Examples kept in the buffer (0 = no replay)."})
    strategy: str = field(default="reservoir", metadata={"help": "reservoir | class_balanced | none."})
    class_key: str = field(default="tool", metadata={"help": "Column defining a class for class_balanced."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"size must be a non-negative integer, got {self.size!r}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}.")
        if not isinstance(self.class_key, str) or not self.class_key:
            raise ValueError(f"class_key must be a column name, got {self.class_key!r}.")

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.strategy != "none"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ReplayConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Unknown ReplayConfig keys: {sorted(unknown)}.")
        return cls(**d)


class ReplayBuffer:
    """A seeded replay buffer (see the module docstring for the strategies)."""

    def __init__(self, config: ReplayConfig | None = None):
        self.config = config or ReplayConfig()
        self._rng = random.Random(f"replay/{self.config.seed}")
        self._items: list[dict] = []  # reservoir
        self._classes: dict[object, list[dict]] = {}  # class_balanced, in order of first appearance
        self._seen: dict[object, int] = {}
        self.seen = 0

    def __len__(self) -> int:
        return len(self.examples())

    def examples(self) -> list[dict]:
        """The buffer's content (a new list)."""
        if self.config.strategy == "class_balanced":
            return [x for items in self._classes.values() for x in items]
        return list(self._items)

    def add(self, examples) -> None:
        """Offer ``examples`` (dicts, or a ``datasets.Dataset``) to the buffer, in order."""
        if not self.config.enabled:
            return
        for ex in examples:
            self.seen += 1
            if self.config.strategy == "reservoir":
                self._reservoir_add(ex)
            else:
                self._balanced_add(dict(ex))

    def _reservoir_add(self, ex) -> None:
        if len(self._items) < self.config.size:
            self._items.append(dict(ex))
            return
        k = self._rng.randrange(self.seen)  # keep with probability size / seen
        if k < self.config.size:
            self._items[k] = dict(ex)

    def _quotas(self) -> dict[object, int]:
        n = len(self._classes)
        base, extra = divmod(self.config.size, n)
        return {c: base + (i < extra) for i, c in enumerate(self._classes)}

    def _balanced_add(self, ex: dict) -> None:
        if self.config.class_key not in ex:
            raise ValueError(f"class_balanced replay needs column {self.config.class_key!r}; the example has "
                             f"{sorted(ex)}.")
        c = ex[self.config.class_key]
        if c not in self._classes:
            self._classes[c] = []
            self._seen[c] = 0
            for cls, quota in self._quotas().items():  # a new class: shrink the others to their new quota
                items = self._classes[cls]
                while len(items) > quota:
                    items.pop(self._rng.randrange(len(items)))
        self._seen[c] += 1
        items, quota = self._classes[c], self._quotas()[c]
        if quota == 0:
            return
        if len(items) < quota:
            items.append(ex)
            return
        k = self._rng.randrange(self._seen[c])  # per-class reservoir
        if k < quota:
            items[k] = ex
