"""Restore: the store brought up to the group's commits from the topics, with no API call.

At start-up, and again when this instance takes the active role, the store
may lack records the group committed: a new or lost disk, a power loss that
dropped the last transactions, records another instance committed while this
one was down or standing by behind. They are read again from the topics and
applied before anything is planned, sent or committed (:meth:`Restorer.catch_up`):
below the commits' floor (:class:`consumer.checkpoint.CommitMark`), rows and
offsets only, since Rfmcube holds their documents; from the floor to the
committed offset, what they touch is owed again, since imports that carried
it may not have completed. Either way, the accepted hashes of what they
touch are forgotten: whoever committed them may have sent those documents
since this store last saw them accepted.

A changed mapping rebuilds every row first, then compares every document
with what Rfmcube holds (a resync that forgets nothing), so exactly the
documents whose content changed go out.

Runs in a thread (it blocks on Kafka); :attr:`Restorer.progress` is what
``/metrics`` reports, and a stop request ends it at the next batch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping

from consumer.changes.mapping import Mapping as ShopMapping
from consumer.changes.mapping.fingerprint import changes, fingerprint, rows_differ
from consumer.checkpoint import CommitMark
from consumer.config import KafkaConfig
from consumer.delivery.resync import Resync
from consumer.ingest import Ingest
from consumer.source import replay
from consumer.state.store import StateStore
from schemas.debezium import PartitionId

__all__ = ["Restorer"]

log = logging.getLogger(__name__)

_PROGRESS_LOG_SECONDS = 10.0
# How a replayed record is applied (see the module's docstring).
_REBUILD = "rebuild"  # a new mapping: rows again, nothing owed or forgotten
_DELIVERED = "delivered"  # below the floor: rows, hashes forgotten
_OWED = "owed"  # from the floor: rows, hashes forgotten, owed again


class Restorer:
    def __init__(
        self,
        kafka: KafkaConfig,
        mapping: ShopMapping,
        store: StateStore,
        ingest: Ingest,
        resync: Resync,
        *,
        stop_requested: threading.Event,
    ) -> None:
        self._kafka = kafka
        self._mapping = mapping
        self._store = store
        self._ingest = ingest
        self._resync = resync
        self._stop_requested = stop_requested
        self._new_mapping: dict[str, object] | None = None  # to record once the store has it
        self.progress = 0.0

    def restore(self) -> int:
        """At start-up: replay into the store what the group committed but the store
        lacks (no API call); after a mapping change, every record the store applied
        first. Returns how many records were replayed."""
        kafka = self._kafka
        parts = replay.partitions_of(
            kafka.bootstrap_servers, self._mapping.topics(), extra=kafka.extra
        )
        marks = replay.committed_marks(
            kafka.bootstrap_servers, kafka.group_id, parts, extra=kafka.extra
        )
        if self._mapping_changed():
            log.info("rebuilding the store's rows from the topics with the new mapping")
            applied = self._store.applied_offsets()
            self._replay({p: 0 for p in applied}, dict(applied), how=_REBUILD)
        committed = {tp: mark[0] for tp, mark in marks.items() if mark is not None}
        floors = {
            tp: CommitMark.decode(mark[1]).floor_at(mark[0])
            for tp, mark in marks.items()
            if mark is not None
        }
        restored = self.catch_up(committed, floors)
        if self._new_mapping is not None and not self._stop_requested.is_set():
            # Every document compared with what Rfmcube holds: what changed goes out.
            state, _ = self._resync.start(None, forget=False)
            self._store.set_meta("mapping", json.dumps(self._new_mapping))
            log.info(
                "the new mapping: %d documents to compare with what Rfmcube holds (resync %s)",
                state.documents,
                state.id,
            )
        return restored

    def _mapping_changed(self) -> bool:
        """Compare the mapping with the one the store's rows were built with; log what
        changed. True when the rows must be rebuilt from the topics."""
        current = self._mapping.describe()
        raw = self._store.meta("mapping")
        if raw is None:
            self._store.set_meta("mapping", json.dumps(current))
            return False
        previous = json.loads(raw)
        if fingerprint(previous) == fingerprint(current):
            return False
        for line in changes(previous, current) or ["details only"]:
            log.info("the mapping changed: %s", line)
        self._new_mapping = current
        return rows_differ(previous, current)

    def catch_up(
        self, committed: Mapping[PartitionId, int], floors: Mapping[PartitionId, int]
    ) -> int:
        """Apply what the store lacks up to the group's committed offsets: below each
        floor, rows only; from it, what is owed again too (see the module's
        docstring). Returns how many records were replayed."""
        applied = self._store.applied_offsets()
        start = {
            tp: applied.get(tp, 0) for tp, end in committed.items() if end > applied.get(tp, 0)
        }
        if not start:
            self.progress = 1.0
            return 0
        below = {tp: min(committed[tp], floors.get(tp, committed[tp])) for tp in start}
        replayed = self._replay(start, below, how=_DELIVERED)
        if self._stop_requested.is_set():
            return replayed
        start = {tp: max(start[tp], below[tp]) for tp in start}
        return replayed + self._replay(start, {tp: committed[tp] for tp in start}, how=_OWED)

    def _replay(
        self, start: dict[PartitionId, int], end: dict[PartitionId, int], *, how: str
    ) -> int:
        kafka = self._kafka
        end = {p: o for p, o in end.items() if o > start.get(p, 0)}
        if not end:
            self.progress = 1.0
            return 0
        total = sum(end[p] - start[p] for p in end)
        log.info(
            "restoring the store from the topics: %d records in %d partitions", total, len(end)
        )
        restored = 0
        last_log = time.monotonic()
        for records in replay.replay(kafka.bootstrap_servers, start, end, extra=kafka.extra):
            # Avro schemas first: an unavailable registry holds the restore here
            schemas = self._ingest.prefetch_blocking(records, self._stop_requested.is_set)
            if schemas is None or self._stop_requested.is_set():
                log.info(
                    "restore interrupted after %d records: it resumes at the next start", restored
                )
                return restored
            if how == _REBUILD:
                self._ingest.ingest(records, owe=False, rebuild=True, schemas=schemas)
            elif how == _DELIVERED:
                self._ingest.ingest(records, owe=False, forget_accepted=True, schemas=schemas)
            else:  # as a standby's follower applies them: owed, no dead letters
                self._ingest.ingest(records, dead_letters=False, follower=True, schemas=schemas)
            restored += len(records)
            self.progress = min(1.0, restored / total)
            if time.monotonic() - last_log >= _PROGRESS_LOG_SECONDS:
                last_log = time.monotonic()
                log.info(
                    "restoring: %d of %d records (%.0f %%)", restored, total, 100 * self.progress
                )
        self.progress = 1.0
        log.info("store restored: %d records replayed", restored)
        return restored
