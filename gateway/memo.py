"""A bounded memo for verdicts on values clients repeat (Host, Accept, a policy item, ...).

The hot path asks the same few questions on every request; the first answer is kept, up to
``size`` distinct values. Beyond that nothing is evicted and new values are simply worked out each
time: a client that sends endless distinct values pays only for its own, and cannot push out
anyone else's.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V], Generic[K, V]):
    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def keep(self, key: K, value: V) -> V:
        """Remember ``value`` for ``key`` while there is room; returns ``value``."""
        if len(self) < self.size:
            self[key] = value
        return value
