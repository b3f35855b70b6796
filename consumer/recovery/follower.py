"""The standby's follower: a warm store, ready to take over.

A standby holds no partition of the group, but it keeps its store in step by
reading every partition outside the group (no commits), from the store's
applied offsets. It applies records as the active does, obligations
included, but sends nothing and writes no dead letters. Every few seconds it
reads the group's commits: below a commit's floor
(:class:`consumer.checkpoint.CommitMark`), what the records owed is in
Rfmcube for sure (imports completed), so an obligation whose records are all
below the floors was met by the active, and is dropped. The same reading
says whether the store has caught up with the commits (:attr:`Follower.caught_up`,
what the standby's readiness reports).

When the standby becomes active, its store holds the rows up to about now and
owes what records beyond the active's floors touched: that goes out first
(the role fills any gap first: :mod:`consumer.recovery.standby`). The
follower also forgets the accepted hashes of the documents it touches, since
the other instance may have sent them since.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import TopicPartition

from consumer.checkpoint import CommitMark
from consumer.errors import BrokerUnavailable
from consumer.ingest import Ingest
from consumer.source import replay
from consumer.source.base import broker_errors, consumer_config, raw_record
from consumer.state.obligations import Obligations
from schemas.debezium import PartitionId, RawRecord

__all__ = ["Follower"]

log = logging.getLogger(__name__)

_POLL_MS = 300
_QUEUED_BATCHES = 4  # batches read ahead of the store: a bound on memory


class Follower:
    def __init__(
        self,
        ingest: Ingest,
        obligations: Obligations,
        *,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        extra: Mapping[str, Any],
        prune_every: float = 5.0,
    ) -> None:
        self._ingest = ingest
        self._obligations = obligations
        self._bootstrap = bootstrap_servers
        self._group = group_id
        self._topics = list(topics)
        self._extra = dict(extra)
        self._prune_every = prune_every
        self.records = 0
        self.pruned = 0
        self.behind = -1  # records the store lacks below the group's commits (-1: unknown)
        self.checked_at: float | None = None  # when ``behind`` was read (time.monotonic)

    async def run(self, keep_following: Callable[[], bool]) -> None:
        """Follow until ``keep_following()`` turns false (the role arrived, or a stop)."""
        loop = asyncio.get_running_loop()
        batches: asyncio.Queue[list[RawRecord]] = asyncio.Queue(_QUEUED_BATCHES)
        stop = threading.Event()
        reader = threading.Thread(
            target=self._read, args=(loop, batches, stop), name="follower", daemon=True
        )
        reader.start()
        log.info("standing by: following the topics into the store")
        next_prune = 0.0
        try:
            while keep_following() and reader.is_alive():
                with contextlib.suppress(TimeoutError):
                    records = await asyncio.wait_for(batches.get(), 0.5)
                    # Avro schemas, off the loop; an unavailable registry holds the batch
                    schemas = await self._ingest.prefetch(records, lambda: not keep_following())
                    if schemas is None:
                        break
                    self._ingest.ingest(records, dead_letters=False, follower=True, schemas=schemas)
                    self.records += len(records)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + self._prune_every
                    await self._prune()
        finally:
            stop.set()
            # Unblock a reader waiting on a full queue, then let it close its consumer.
            while not batches.empty():
                batches.get_nowait()
            await asyncio.to_thread(reader.join, 5.0)

    async def prune(self) -> None:
        """Drop what the group's commits show delivered (also once more at takeover)."""
        await self._prune()

    def caught_up(self, within: float) -> bool:
        """Whether the store held every record below the group's commits when they
        were last read, no longer than ``within`` seconds ago."""
        return (
            self.behind == 0
            and self.checked_at is not None
            and time.monotonic() - self.checked_at <= within
        )

    async def _prune(self) -> None:
        try:
            committed, floors = await asyncio.to_thread(self._commits)
        except BrokerUnavailable as exc:
            log.warning("follower: cannot read the group's offsets (%s)", exc)
            return
        self.pruned += self._obligations.drop_delivered(floors)
        applied = self._ingest.applied
        behind = sum(max(0, offset - applied.get(tp, 0)) for tp, offset in committed.items())
        if behind and self.behind == 0:
            log.info("standing by: %d records behind the active's commits", behind)
        self.behind, self.checked_at = behind, time.monotonic()

    def _commits(self) -> tuple[dict[PartitionId, int], dict[PartitionId, int]]:
        """The group's committed offsets, and the floor of each (see CommitMark)."""
        parts = replay.partitions_of(self._bootstrap, self._topics, extra=self._extra)
        found = replay.committed_marks(self._bootstrap, self._group, parts, extra=self._extra)
        committed = {tp: mark[0] for tp, mark in found.items() if mark is not None}
        floors = {
            tp: CommitMark.decode(mark[1]).floor_at(mark[0])
            for tp, mark in found.items()
            if mark is not None
        }
        return committed, floors

    def _read(
        self,
        loop: asyncio.AbstractEventLoop,
        batches: asyncio.Queue[list[RawRecord]],
        stop: threading.Event,
    ) -> None:
        """The reader thread: every partition from the store's applied offsets."""
        from kafka import KafkaConsumer

        try:
            with broker_errors("following the topics"):
                consumer = KafkaConsumer(
                    **consumer_config(
                        self._bootstrap,
                        None,
                        self._extra,
                        client_id="rfmcube-cdc-follower",
                        auto_offset_reset="earliest",
                        allow_auto_create_topics=False,
                    )
                )
        except BrokerUnavailable as exc:
            log.warning("follower: %s", exc)
            return
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in self._topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(partitions)
            applied = self._ingest.applied
            for tp in partitions:
                offset = applied.get((tp.topic, tp.partition))
                if offset is None:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=_POLL_MS)
                records = [raw_record(m) for messages in polled.values() for m in messages]
                if records:
                    future = asyncio.run_coroutine_threadsafe(batches.put(records), loop)
                    while not stop.is_set():
                        try:
                            future.result(timeout=0.5)
                            break
                        except TimeoutError:
                            continue
        except Exception:
            log.exception("follower: reading failed; the standby's store stops following")
        finally:
            consumer.close(autocommit=False)
