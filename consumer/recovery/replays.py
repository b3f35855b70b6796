"""Replayed dead letters: every instance applies the dead-letter topic's replay markers.

``rfmcube-cdc dead-letters replay`` decides letters by writing markers in the
dead-letter topic (:mod:`consumer.source.letters`). Each instance, active or
standing by, reads the markers from where its store last stopped and applies
those that say ``replay``, through the service's own path, once its store has
no gap (``ready``):

- a record's copy is decoded and mapped with the configuration and the
  mapping the instance runs now, applied to the store and owed to the API, as
  ingest applies a record; what waits on it is the marker (its position in the
  dead-letter topic), never a source partition, whose commits lie past it.
  Still bad: the active dead-letters it again, with the new reason;
- an entity's document is owed again, built from the store as it is now.

The marker says up to which offset of the record's partition the command
found no later record of its key. Where this store applied more than that
since, a row that changed at or after the record's source time is newer, and
the record is not applied. The active owes what it applied and sends it; a
standby owes it too, forgetting what it took Rfmcube to hold, as its follower
does, so that a takeover sends it if the active could not. The letters
applied and the offsets read are written in the same transaction as their
effects (:mod:`consumer.state.replays`): each marker is applied at most once
by each store, and a crash applies it wholly or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from consumer.errors import BadRecord, BrokerUnavailable
from consumer.ingest import Ingest
from consumer.source.base import broker_errors, consumer_config, raw_record
from consumer.source.letters import MARKER, Letter, parse
from consumer.state.batch import open_batch
from consumer.state.obligations import Obligations
from consumer.state.replays import Replays
from schemas.debezium import Position, RawRecord
from schemas.entities import DocRef, EntityChange, Kind

__all__ = ["ReplayApplier"]

log = logging.getLogger(__name__)

_POLL_MS = 500
_QUEUED_BATCHES = 2
_RESTART_SECONDS = 10.0


class ReplayApplier:
    def __init__(
        self,
        ingest: Ingest,
        obligations: Obligations,
        replays: Replays,
        *,
        bootstrap_servers: str,
        extra: Mapping[str, Any],
        active: Callable[[], bool],
        ready: Callable[[], bool],
        dead_letter: Callable[[RawRecord, str], None],
        owed: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ingest = ingest
        self._obligations = obligations
        self._store = obligations.store
        self._replays = replays
        self._bootstrap = bootstrap_servers
        self._extra = dict(extra)
        self._active = active
        self._ready = ready
        self._dead_letter = dead_letter
        self._owed = owed
        self._clock = clock
        self.applied = 0  # letters applied by this process
        self.superseded = 0
        self.still_bad = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Read and apply markers until ``stopping``; a reader that fails starts again."""
        while not stopping.is_set():
            await self._follow(stopping)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), _RESTART_SECONDS)

    async def _follow(self, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        batches: asyncio.Queue[tuple[list[RawRecord], dict[int, int]]] = asyncio.Queue(
            _QUEUED_BATCHES
        )
        stop = threading.Event()
        reader = threading.Thread(
            target=self._read, args=(loop, batches, stop), name="replays", daemon=True
        )
        reader.start()
        try:
            while not stopping.is_set() and reader.is_alive():
                with contextlib.suppress(TimeoutError):
                    records, read_to = await asyncio.wait_for(batches.get(), 0.5)
                    # Only on a store with no gap: what it applies must not be undone.
                    while not self._ready():
                        if stopping.is_set():
                            return
                        await asyncio.sleep(0.5)
                    self.apply(records, read_to)
        finally:
            stop.set()
            while not batches.empty():
                batches.get_nowait()
            await asyncio.to_thread(reader.join, 5.0)

    def _read(
        self,
        loop: asyncio.AbstractEventLoop,
        batches: asyncio.Queue[tuple[list[RawRecord], dict[int, int]]],
        stop: threading.Event,
    ) -> None:
        """The reader thread: the dead-letter topic from where the store stopped."""
        topic = self._replays.topic
        try:
            with broker_errors(f"reading replay markers from {topic}"):
                consumer = KafkaConsumer(
                    **consumer_config(
                        self._bootstrap,
                        None,
                        self._extra,
                        client_id="rfmcube-cdc-replays",
                        auto_offset_reset="earliest",
                        allow_auto_create_topics=False,
                    )
                )
        except BrokerUnavailable as exc:
            log.warning("replays: %s", exc)
            return
        try:
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(partitions)
            start = self._replays.next_offsets()
            for tp in partitions:
                consumer.seek(tp, start.get(tp.partition, 0))
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=_POLL_MS)
                if not polled:
                    continue
                records = [raw_record(m) for messages in polled.values() for m in messages]
                read_to = {tp.partition: consumer.position(tp) for tp in polled}
                future = asyncio.run_coroutine_threadsafe(batches.put((records, read_to)), loop)
                while not stop.is_set():
                    try:
                        future.result(timeout=0.5)
                        break
                    except TimeoutError:
                        continue
        except Exception:
            log.exception("replays: reading the dead-letter topic failed; trying again")
        finally:
            consumer.close(autocommit=False)

    def apply(self, records: Sequence[RawRecord], read_to: Mapping[int, int]) -> int:
        """Apply the markers among these dead-letter records (see the module's
        docstring); returns how many letters were applied."""
        markers: dict[tuple[int, int], Letter] = {}
        for record in records:
            letter = parse(record)
            if letter.kind == MARKER and letter.outcome == "replay" and letter.replay_of:
                markers.setdefault(letter.replay_of, letter)
        done = self._replays.applied(markers)
        fresh = [m for of, m in markers.items() if of not in done]
        active = self._active()
        changes: list[EntityChange] = []
        refs: list[DocRef] = []
        for marker in fresh:
            if marker.replay_kind == "entity":
                ref = _ref_of(marker.key)
                if ref is not None:
                    refs.append(ref)
                continue
            change = self._change_of(marker, active)
            if change is not None:
                changes.append(change)
        with open_batch(self._obligations, forget_accepted=not active) as batch:
            batch.now = self._clock()
            batch.prefetch((c.kind, c.key) for c in changes)
            for change in changes:
                try:
                    batch.apply(change)
                except BadRecord as exc:
                    log.warning("replayed dead letter not applied: %s", exc)
            if refs:
                self._obligations.owe(refs)
            self._replays.record(markers, read_to, self._clock())
        applied = len(changes) + len(refs)
        self.applied += applied
        if applied:
            log.info(
                "replayed dead letters applied to the store: %d (%s)",
                applied,
                "owed to the API" if active else "owed here too, as a standby follows",
            )
            self._owed()
        return applied

    def _change_of(self, marker: Letter, active: bool) -> EntityChange | None:
        """The record's change as the service maps it now; None when it changes
        nothing, is still bad, or a later change of its row is in the store."""
        record = marker.original()
        try:
            change = self._ingest.mapped(record)
        except BadRecord as exc:
            self.still_bad += 1
            log.warning("replayed dead letter %s is still bad: %s", record.position, exc.reason)
            if active:
                self._dead_letter(record, f"replayed, still bad: {exc.reason}")
            return None
        if change is None:
            return None
        applied = self._ingest.applied.get((record.topic, record.partition), 0)
        if marker.checked is not None and applied > marker.checked:
            stored, changed_ms = self._store.changed_ms(change.kind, change.key)
            if stored and (change.ts_ms is None or (changed_ms or 0) >= change.ts_ms):
                self.superseded += 1
                log.info("replayed dead letter %s: its row changed since", record.position)
                return None
        # What waits on it is the marker, not the record's own partition.
        where = Position(self._replays.topic, marker.partition, marker.offset)
        return dataclasses.replace(change, position=where)


def _ref_of(key: bytes | None) -> DocRef | None:
    """An entity letter's document: its key is ``<kind>:<key>``."""
    kind, _, name = (key or b"").decode("utf-8", "replace").partition(":")
    try:
        return (Kind(kind), name) if name else None
    except ValueError:
        return None
