"""Commits: the offsets whose records were applied and whose obligations were met.

A partition's commit floor comes from the store (:meth:`Obligations.commit_floors`):
its applied offset, lowered to the first record any obligation still holds
back. Dead letters are acknowledged by the broker before any offset past them
is committed: the dead letters counted before the floors were read are
flushed first (those written meanwhile wait for the next commit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from consumer.state.obligations import Obligations

__all__ = ["Committer"]

log = logging.getLogger(__name__)

PartitionId = tuple[str, int]


class CommitTarget(Protocol):
    def assignment(self) -> set[PartitionId]: ...

    async def commit(self, offsets: Mapping[PartitionId, int]) -> None: ...


class DeadLetterLog(Protocol):
    count: int

    def flush(self, timeout: float = 10.0) -> None: ...


class Committer:
    def __init__(
        self,
        obligations: Obligations,
        *,
        dead_letters: Callable[[], DeadLetterLog | None],
    ) -> None:
        self._obligations = obligations
        self._dead_letters = dead_letters
        self._flushed = 0  # dead letters acknowledged so far
        self.committed: dict[PartitionId, int] = {}
        self.commits = 0
        self.last_commit_at: float | None = None

    def due(self, partitions: set[PartitionId]) -> dict[PartitionId, int]:
        """The floors of these partitions that moved past the last commit."""
        floors = self._obligations.commit_floors(partitions)
        return {tp: o for tp, o in floors.items() if o > self.committed.get(tp, -1)}

    async def flush_dead_letters(self) -> None:
        """Wait until the broker acknowledged every dead letter written so far."""
        letters = self._dead_letters()
        if letters is None or letters.count == self._flushed:
            return
        counted = letters.count
        await asyncio.to_thread(letters.flush)
        self._flushed = max(self._flushed, counted)

    async def commit(self, target: CommitTarget) -> dict[PartitionId, int]:
        """Commit what is due for the partitions the target owns; returns it."""
        offsets = self.due(target.assignment())
        if not offsets:
            return {}
        await self.flush_dead_letters()
        await target.commit(offsets)
        self.mark_committed(offsets)
        return offsets

    def mark_committed(self, offsets: Mapping[PartitionId, int]) -> None:
        for tp, offset in offsets.items():
            self.committed[tp] = max(offset, self.committed.get(tp, -1))
        self.commits += 1
        self.last_commit_at = time.time()

    def forget(self, partitions: list[PartitionId]) -> None:
        """Partitions gone to another member: their next owner commits them."""
        for tp in partitions:
            self.committed.pop(tp, None)
