"""The plain values of the obligations (re-exported by
:mod:`consumer.state.obligations`, which stores them): what a batch of records
makes owed for one document, an owed document as a page holds it and as an
object, and what a flush met.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.debezium import PartitionId, Position
from schemas.entities import CustomerIdentity, DocRef, Kind

__all__ = ["BatchObligation", "OwedDoc", "OwedRow", "Settlement", "owed_doc"]

_KIND = {kind.value: kind for kind in Kind}  # Kind(value) costs a few µs


@dataclass(slots=True)
class BatchObligation:
    """What one batch of records makes owed for one document: its newest number,
    the records waiting on it per partition (first and last offset), the
    customer deletes that must go out before it, in order, and the source time
    of its oldest change (ms; None: unknown)."""

    seq: int
    marks: dict[PartitionId, list[int]] = field(default_factory=dict)  # [first, last]
    deletes: list[tuple[int, CustomerIdentity]] = field(default_factory=list)
    source_ms: int | None = None

    def mark(self, position: Position, source_ms: int | None = None) -> None:
        if source_ms is not None and (self.source_ms is None or source_ms < self.source_ms):
            self.source_ms = source_ms
        span = self.marks.get((position.topic, position.partition))
        if span is None:
            self.marks[(position.topic, position.partition)] = [position.offset, position.offset]
        else:
            span[0] = min(span[0], position.offset)
            span[1] = max(span[1], position.offset)


OwedRow = tuple[str, str, int, float, tuple[tuple[int, str | None, str | None], ...], int | None]
"""An owed document as a page of
:meth:`~consumer.state.obligations.Obligations.take_rows` holds it: its kind (the
value) and key, its number, since when it is owed, the deletes that must precede it
(number, id, email), in order, and the source time of its oldest change (ms)."""


@dataclass(slots=True)
class OwedDoc:
    """A document owed to the API, with the deletes that must precede it."""

    ref: DocRef
    seq: int
    since: float
    deletes: list[tuple[int, CustomerIdentity]] = field(default_factory=list)
    source_ms: int | None = None  # the source time of the oldest change it carries

    @property
    def delete_seq(self) -> int:
        return max((seq for seq, _ in self.deletes), default=0)


def owed_doc(row: OwedRow) -> OwedDoc:
    kind, key, seq, since, deletes, source_ms = row
    return OwedDoc(
        (_KIND[kind], key),
        seq,
        since,
        [(d, CustomerIdentity(i, e)) for d, i, e in deletes],
        source_ms,
    )


@dataclass(slots=True)
class Settlement:
    """What merges, deletes and plans met, written in one transaction (imports are
    settled in pages: :mod:`consumer.state.settling`)."""

    done: list[OwedDoc] = field(default_factory=list)  # obligations met (or given up)
    accepted: dict[DocRef, str] = field(default_factory=dict)  # hashes Rfmcube now holds
    deleted: dict[DocRef, CustomerIdentity] = field(default_factory=dict)  # deletes accepted
