"""Commit bookkeeping: which offset of each partition may be committed.

An offset may be committed only when every record at or below it in its
partition was handled: its effect accepted by the API, or it needed no request.
Records finish out of order (a customer's merge may be accepted before an
earlier order's import), so the tracker keeps, per partition, the tracked
offsets still outstanding in read order and commits the contiguous run of done
ones from the start (faust's acked offsets, Quix's checkpoint).

Offsets may have gaps (compacted topics, transaction markers): only tracked
offsets count, an offset never tracked blocks nothing.

Pure: no Kafka import. Every operation is amortized O(1) per record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

__all__ = ["OffsetTracker"]

TopicPartition = tuple[str, int]


class _Partition:
    """The bookkeeping of one partition."""

    __slots__ = ("committed", "done_early", "last_tracked", "next_commit", "outstanding", "unread")

    def __init__(self) -> None:
        # Tracked offsets not yet passed by the commit point, in read order.
        self.unread: deque[int] = deque()
        # The same offsets as a set, for O(1) lookups in done().
        self.outstanding: set[int] = set()
        # Done, but behind an earlier offset that is not done yet.
        self.done_early: set[int] = set()
        self.last_tracked = -1
        self.next_commit: int | None = None
        self.committed: int | None = None

    def advance(self) -> None:
        while self.unread and self.unread[0] in self.done_early:
            offset = self.unread.popleft()
            self.done_early.discard(offset)
            self.outstanding.discard(offset)
            self.next_commit = offset + 1


class OffsetTracker:
    """Offsets read and offsets done, per (topic, partition); what may be committed."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._pending = 0

    def track(self, topic: str, partition: int, offset: int) -> None:
        """A record was read. Offsets must increase within a partition."""
        state = self._partitions.get((topic, partition))
        if state is None:
            state = self._partitions[(topic, partition)] = _Partition()
        if offset <= state.last_tracked:
            raise ValueError(
                f"{topic}[{partition}]: offset {offset} tracked after {state.last_tracked}; "
                "offsets must increase (revoke the partition before reading it again)"
            )
        state.last_tracked = offset
        state.unread.append(offset)
        state.outstanding.add(offset)
        self._pending += 1

    def done(self, topic: str, partition: int, offset: int) -> None:
        """The record's effect was accepted by the API, or it needed no request.

        Calling it again, or for a partition revoked meanwhile, changes nothing:
        a request accepted after a rebalance must not fail the service.
        """
        state = self._partitions.get((topic, partition))
        if state is None or offset not in state.outstanding or offset in state.done_early:
            return
        state.done_early.add(offset)
        self._pending -= 1
        state.advance()

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, the next offset to commit, where it advanced since the last commit."""
        return {
            tp: state.next_commit
            for tp, state in self._partitions.items()
            if state.next_commit is not None
            and (state.committed is None or state.next_commit > state.committed)
        }

    def mark_committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Kafka accepted these commits (partitions revoked meanwhile are ignored)."""
        for tp, offset in offsets.items():
            state = self._partitions.get(tp)
            if state is not None and (state.committed is None or offset > state.committed):
                state.committed = offset

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget these partitions (a rebalance took them away)."""
        for tp in partitions:
            state = self._partitions.pop(tp, None)
            if state is not None:
                self._pending -= len(state.outstanding) - len(state.done_early)

    def pending(self) -> int:
        """Records tracked but not done yet, over every partition."""
        return self._pending

    def pending_in(self, topic: str, partition: int) -> int:
        """Records of one partition tracked but not done yet."""
        state = self._partitions.get((topic, partition))
        return 0 if state is None else len(state.outstanding) - len(state.done_early)
