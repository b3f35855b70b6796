"""The standby's follower: a warm store, ready to take over.

A standby holds no partition of the group, but it keeps its store in step by
reading every partition outside the group (no commits), from the store's
applied offsets. It applies records as the active does, obligations
included, but sends nothing and writes no dead letters. Every few seconds it
reads the group's committed offsets: the active commits an offset only once
what the records below it owed was accepted, so an obligation whose records
are all below the committed offsets was met by the active, and is dropped.

When the standby becomes active, its store holds the rows up to about now and
owes exactly what records beyond the active's last commit touched: that goes
out first. The follower also forgets the accepted hashes of the documents it
touches, since the other instance may have sent them since.
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

from consumer.errors import BrokerUnavailable
from consumer.ingest import Ingest
from consumer.source import replay
from consumer.source.thread import PartitionId, broker_errors, consumer_config, raw_record
from consumer.state.obligations import Obligations
from schemas.debezium import RawRecord

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
                    self._ingest.ingest(records, dead_letters=False, follower=True)
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

    async def _prune(self) -> None:
        try:
            committed = await asyncio.to_thread(self._committed)
        except BrokerUnavailable as exc:
            log.warning("follower: cannot read the group's offsets (%s)", exc)
            return
        self.pruned += self._obligations.drop_delivered(committed)

    def _committed(self) -> dict[PartitionId, int]:
        parts = replay.partitions_of(self._bootstrap, self._topics, extra=self._extra)
        found = replay.committed_offsets(self._bootstrap, self._group, parts, extra=self._extra)
        return {tp: offset for tp, offset in found.items() if offset is not None}

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
