"""Ingest: records → store, one transaction per batch.

Each record is decoded and mapped; the batch's rows, its partitions' applied
offsets and the obligations it creates are written in one SQLite transaction
(:func:`consumer.state.batch.open_batch`). A record that cannot be decoded, mapped or stored
is dead-lettered with its reason and position; the batch goes on.

Records below a partition's applied offset are already in the store (a
restart reads again from the group's committed offset): they are not applied
twice, since the store holds what they owe. They are decoded again only so
that a bad one is dead-lettered again (its dead letter may not have reached
the broker before the crash).

``owe=False`` is the restore: records the group already committed, whose
obligations were met before; only rows and offsets are written.

Avro records need their schemas from the registry: :meth:`Ingest.prefetch`
(on the event loop) or :meth:`Ingest.prefetch_blocking` (in a thread) gets
them before a batch is ingested, waiting out a registry that cannot answer,
and hands :meth:`Ingest.ingest` the batch's reader; decoding does no I/O.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumer.changes.decode import AvroReader, parse_hint
from consumer.changes.limits import RecordLimits
from consumer.changes.mapping import Mapping
from consumer.changes.records import change_of
from consumer.errors import BadRecord
from consumer.registry import Registry
from consumer.state.batch import open_batch
from consumer.state.obligations import Obligations
from schemas.debezium import PartitionId, RawRecord, Skipped
from schemas.entities import EntityChange

__all__ = ["NO_SCHEMAS", "Ingest", "IngestStats", "OwedBound", "Schemas"]

log = logging.getLogger(__name__)

DeadLetter = Callable[[RawRecord, str], None]


@dataclass(frozen=True, slots=True)
class Schemas:
    """What a batch's records need to be decoded: its Avro reader (None: no registry)."""

    avro: AvroReader | None


NO_SCHEMAS = Schemas(None)


@dataclass(slots=True)
class IngestStats:
    records: int = 0
    restored: int = 0
    followed: int = 0  # applied by a standby's follower
    already_applied: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    touches: int = 0


class Ingest:
    def __init__(
        self,
        obligations: Obligations,
        mapping: Mapping,
        *,
        dead_letter: DeadLetter,
        limits: RecordLimits | None = None,
        clock: Callable[[], float] = time.time,
        registry: Registry | None = None,
    ) -> None:
        self.obligations = obligations
        store = obligations.store
        self.mapping = mapping
        self._limits = limits or RecordLimits()
        self.stats = IngestStats()
        self._dead_letter = dead_letter
        self._clock = clock
        self.registry = registry
        self._hints = {
            topic: {col: parse_hint(h) for col, h in mapping.hints_for(topic).items()}
            for topic in mapping.topics()
        }
        # Read by the Kafka thread too (a dict replaced whole, never mutated).
        self.applied: dict[PartitionId, int] = store.applied_offsets()

    async def prefetch(
        self, records: Sequence[RawRecord], stopped: Callable[[], bool]
    ) -> Schemas | None:
        """The schemas of the batch's Avro records, fetched off the loop; waits while
        the registry cannot answer. None: ``stopped()`` turned true meanwhile."""
        if self.registry is None:
            return NO_SCHEMAS
        reader = await self.registry.prefetch(records, stopped)
        return None if reader is None else Schemas(reader)

    def prefetch_blocking(
        self, records: Sequence[RawRecord], stopped: Callable[[], bool]
    ) -> Schemas | None:
        """:meth:`prefetch` for a caller in a thread."""
        if self.registry is None:
            return NO_SCHEMAS
        reader = self.registry.prefetch_blocking(records, stopped)
        return None if reader is None else Schemas(reader)

    def mapped(self, record: RawRecord, avro: AvroReader | None = None) -> EntityChange | None:
        """The mapped change of one record, checked for the store (the safety net
        of :mod:`consumer.changes.records`); None when it changes no entity. Raises
        BadRecord, or RegistryUnavailable when ``avro`` lacks a schema it names."""
        change = change_of(record, self._hints.get(record.topic), self.mapping, self._limits, avro)
        if isinstance(change, Skipped):
            self.stats.skipped[change.kind] += 1
            if change.kind in ("truncate", "message"):
                log.info("skipped %s record at %s", change.kind, change.position)
            return None
        if change is None:
            self.stats.skipped["unmapped"] += 1
        return change

    def _bad(self, record: RawRecord, reason: str) -> None:
        log.warning("dead-lettered record %s: %s", record.position, reason)
        self.stats.dead_letters += 1
        self._dead_letter(record, reason)

    def _bad_left_to_the_active(self, record: RawRecord, reason: str) -> None:
        log.debug("bad record %s (the active dead-letters it): %s", record.position, reason)

    def ingest(
        self,
        records: Sequence[RawRecord],
        *,
        owe: bool = True,
        dead_letters: bool = True,
        follower: bool = False,
        forget_accepted: bool = False,
        rebuild: bool = False,
        schemas: Schemas | None = None,
    ) -> int:
        """Apply a batch; returns how many documents it made owed.

        ``schemas`` is what :meth:`prefetch` returned for the batch; without it, the
        schemas the cache lacks are fetched here, once (blocking: raises
        RegistryUnavailable, with nothing applied, when the registry cannot answer).

        A standby's follower (``follower``) writes no dead letters (the active
        does) and forgets the accepted hashes of what it touches (the active may
        have sent them since), as ``forget_accepted`` does for a replay of what
        another instance committed. ``rebuild`` applies records again below the
        applied offsets (a new mapping maps them differently)."""
        bad = self._bad if dead_letters else self._bad_left_to_the_active
        if schemas is not None:
            avro = schemas.avro
        else:
            avro = None if self.registry is None else self.registry.reader(records)
        applied = self.applied
        fresh: list[RawRecord] = []
        for record in records:
            if not rebuild and record.offset < applied.get((record.topic, record.partition), 0):
                self.stats.already_applied += 1
                try:
                    self.mapped(record, avro)
                except BadRecord as exc:
                    bad(record, exc.reason)
            else:
                fresh.append(record)
        if not fresh:
            return 0
        changes: list[tuple[RawRecord, EntityChange]] = []
        for record in fresh:
            try:
                change = self.mapped(record, avro)
            except BadRecord as exc:
                bad(record, exc.reason)
                continue
            if change is not None:
                changes.append((record, change))
        touches = 0
        with open_batch(
            self.obligations,
            owe=owe,
            forget_accepted=follower or forget_accepted,
            guests_follow_deletes=self.mapping.customer_delete.policy == "delete",
        ) as batch:
            batch.now = self._clock()
            batch.prefetch((c.kind, c.key) for _, c in changes)
            for record, change in changes:
                try:
                    touches += len(batch.apply(change))
                except BadRecord as exc:
                    bad(record, exc.reason)
            batch.set_offsets(_next_offsets(fresh))
        self.applied = {
            **applied,
            **{tp: max(o, applied.get(tp, 0)) for tp, o in _next_offsets(fresh).items()},
        }
        if follower:
            self.stats.followed += len(fresh)
        elif owe:
            self.stats.records += len(fresh)
            self.stats.touches += touches
        else:
            self.stats.restored += len(fresh)
        return touches


def _next_offsets(records: Sequence[RawRecord]) -> dict[PartitionId, int]:
    offsets: dict[PartitionId, int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets


class OwedBound:
    """Pause reading while more documents are owed than the bound (an API outage of
    hours); resume below 90 % of it. Counting is a scan: once a second at most."""

    def __init__(
        self,
        obligations: Obligations,
        bound: int,
        *,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._obligations = obligations
        self._bound = bound
        self._every = every
        self._clock = clock
        self._checked_at = float("-inf")

    def apply(self, hold: Callable[[bool], None]) -> None:
        now = self._clock()
        if now - self._checked_at < self._every:
            return
        self._checked_at = now
        owed = self._obligations.owed_count()
        if owed > self._bound:
            hold(True)
        elif owed <= self._bound * 0.9:
            hold(False)
