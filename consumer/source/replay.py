"""Reading the topics outside the group: store replay and offset look-ups.

At start-up the service rebuilds what its state store has not applied by
reading every partition from the store's position up to the group's
committed offset, without joining the group and without committing. Positions
are what decide "done", never record offsets: compacted topics and
transaction markers leave gaps, so the last offset below the end may not
exist.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from consumer.errors import ReplayStalled
from consumer.source.base import broker_errors, consumer_config, raw_record
from schemas.debezium import PartitionId, RawRecord

log = logging.getLogger(__name__)

_POLL_TIMEOUT_MS = 500


def _consumer(bootstrap_servers: str, group_id: str | None, extra: Mapping[str, Any]) -> Any:
    config = consumer_config(
        bootstrap_servers,
        group_id,
        extra,
        client_id="rfmcube-cdc-replay",
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
    )
    return KafkaConsumer(**config)


def partitions_of(
    bootstrap_servers: str, topics: Sequence[str], *, extra: Mapping[str, Any] | None = None
) -> list[PartitionId]:
    """All partitions of the topics (a topic that does not exist has none)."""
    with (
        broker_errors("listing partitions"),
        closing(_consumer(bootstrap_servers, None, extra or {})) as consumer,
    ):
        return sorted(
            (topic, partition)
            for topic in topics
            for partition in consumer.partitions_for_topic(topic)
        )


def end_offsets(
    bootstrap_servers: str,
    partitions: Sequence[PartitionId],
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[PartitionId, int]:
    """The offset the next record of each partition will get (its log end)."""
    if not partitions:
        return {}
    with (
        broker_errors("reading end offsets"),
        closing(_consumer(bootstrap_servers, None, extra or {})) as consumer,
    ):
        ends = consumer.end_offsets([TopicPartition(*tp) for tp in partitions])
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


def committed_offsets(
    bootstrap_servers: str,
    group_id: str,
    partitions: Sequence[PartitionId],
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[PartitionId, int | None]:
    """The group's committed offsets (None where it never committed).

    Asks through a consumer of the group that never subscribes, so it does
    not join the group nor disturb its members."""
    if not partitions:
        return {}
    with (
        broker_errors("reading committed offsets"),
        closing(_consumer(bootstrap_servers, group_id, extra or {})) as consumer,
    ):
        return {tp: consumer.committed(TopicPartition(*tp)) for tp in partitions}


def committed_marks(
    bootstrap_servers: str,
    group_id: str,
    partitions: Sequence[PartitionId],
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[PartitionId, tuple[int, str] | None]:
    """The group's commits with their metadata (None where it never committed), asked
    as :func:`committed_offsets` asks."""
    if not partitions:
        return {}
    with (
        broker_errors("reading committed offsets"),
        closing(_consumer(bootstrap_servers, group_id, extra or {})) as consumer,
    ):
        found = {tp: consumer.committed(TopicPartition(*tp), metadata=True) for tp in partitions}
        return {
            tp: None if c is None else (int(c.offset), str(c.metadata or ""))
            for tp, c in found.items()
        }


def replay(
    bootstrap_servers: str,
    start: Mapping[PartitionId, int],
    end: Mapping[PartitionId, int],
    *,
    extra: Mapping[str, Any] | None = None,
    batch_size: int = 5000,
    stall_timeout_s: float = 60.0,
) -> Iterator[list[RawRecord]]:
    """Yield the records of every partition in ``end`` from ``start`` (or the
    beginning) up to, not including, its end offset, in batches.

    Records are in offset order within a partition. No group, no commits.
    Raises :class:`ReplayStalled` when no partition advanced for
    ``stall_timeout_s`` (an end offset beyond the log end, say)."""
    todo = {tp: stop for tp, stop in end.items() if start.get(tp, 0) < stop}
    if not todo:
        return
    with broker_errors("replaying"):
        yield from _replay(bootstrap_servers, start, todo, extra, batch_size, stall_timeout_s)


def _replay(
    bootstrap_servers: str,
    start: Mapping[PartitionId, int],
    todo: dict[PartitionId, int],
    extra: Mapping[str, Any] | None,
    batch_size: int,
    stall_timeout_s: float,
) -> Iterator[list[RawRecord]]:
    consumer = _consumer(bootstrap_servers, None, extra or {})
    try:
        consumer.assign([TopicPartition(*tp) for tp in todo])
        for tp in todo:
            if tp in start:
                consumer.seek(TopicPartition(*tp), start[tp])
            else:
                consumer.seek_to_beginning(TopicPartition(*tp))
        yield from _read_until(consumer, todo, batch_size, stall_timeout_s)
    finally:
        consumer.close(autocommit=False)


def _read_until(
    consumer: Any, todo: dict[PartitionId, int], batch_size: int, stall_timeout_s: float
) -> Iterator[list[RawRecord]]:
    batch: list[RawRecord] = []
    last_progress = time.monotonic()
    while todo:
        room = max(1, batch_size - len(batch))
        polled = consumer.poll(timeout_ms=_POLL_TIMEOUT_MS, max_records=room)
        for kafka_tp, messages in polled.items():
            stop = todo.get((kafka_tp.topic, kafka_tp.partition))
            if stop is None:
                continue  # finished and paused; a buffered fetch may still arrive
            batch.extend(raw_record(m) for m in messages if m.offset < stop)
        if polled:
            last_progress = time.monotonic()
        for tp, stop in list(todo.items()):
            kafka_tp = TopicPartition(*tp)
            # Position, not the last offset seen: gaps are skipped by the fetcher.
            if consumer.position(kafka_tp) >= stop:
                consumer.pause(kafka_tp)
                del todo[tp]
                last_progress = time.monotonic()
        if len(batch) >= batch_size or (batch and not todo):
            yield batch
            batch = []
        if todo and time.monotonic() - last_progress > stall_timeout_s:
            raise ReplayStalled(f"replay made no progress for {stall_timeout_s:.0f}s on {todo}")
    if batch:
        yield batch
