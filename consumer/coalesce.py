"""The coalescer: which documents changed since the last flush, and why.

Many changes of one document within a window become one entry; the entry
keeps every record that touched it (their offsets are committed only once the
document is accepted) and, for a customer, the deletes in the order they
happened, so that delete-then-re-create is sent as a delete, then an upsert.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from consumer.store import CustomerIdentity, DocRef, Touch
from schemas.debezium import Position


@dataclass(slots=True)
class DirtyDoc:
    """A document to bring up to date, and the records waiting on it."""

    first_seen: float
    positions: list[Position] = field(default_factory=list)
    deletes: list[CustomerIdentity] = field(default_factory=list)


class Window:
    """Dirty documents, in the order they were first touched."""

    def __init__(self) -> None:
        self._docs: dict[DocRef, DirtyDoc] = {}
        self.opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, position: Position, touches: Iterable[Touch], now: float) -> None:
        for touch in touches:
            doc = self._docs.get(touch.doc)
            if doc is None:
                doc = self._docs[touch.doc] = DirtyDoc(first_seen=now)
            doc.positions.append(position)
            if touch.deleted is not None:
                doc.deletes.append(touch.deleted)
        if self._docs and self.opened_at is None:
            self.opened_at = now

    def put_back(self, docs: dict[DocRef, DirtyDoc], now: float) -> None:
        """Return documents that could not go out yet (they keep their history)."""
        for ref, doc in docs.items():
            current = self._docs.get(ref)
            if current is None:
                self._docs[ref] = doc
            else:
                current.positions[:0] = doc.positions
                current.deletes[:0] = doc.deletes
                current.first_seen = min(current.first_seen, doc.first_seen)
        if self._docs and self.opened_at is None:
            self.opened_at = now

    def take(self) -> dict[DocRef, DirtyDoc]:
        docs, self._docs, self.opened_at = self._docs, {}, None
        return docs


class RecordAcks:
    """Counts, per record, the documents it still waits for.

    A record that touched two documents (an item moved between orders) is
    done only when both were accepted; ``done`` reports records whose count
    reached zero, for the offset tracker.
    """

    def __init__(self) -> None:
        self._waiting: dict[Position, int] = {}

    def expect(self, position: Position, documents: int) -> None:
        self._waiting[position] = self._waiting.get(position, 0) + documents

    def settle(self, positions: Iterable[Position]) -> list[Position]:
        finished: list[Position] = []
        for position in positions:
            left = self._waiting.get(position)
            if left is None:
                continue  # its partition was revoked meanwhile
            if left <= 1:
                del self._waiting[position]
                finished.append(position)
            else:
                self._waiting[position] = left - 1
        return finished

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        gone = set(partitions)
        for position in [p for p in self._waiting if (p.topic, p.partition) in gone]:
            del self._waiting[position]

    def __len__(self) -> int:
        return len(self._waiting)
