"""What the Kafka source does when the group moves partitions (part of
:class:`consumer.source.thread.KafkaSource`).

kafka-python 3.0 runs rebalance callbacks on its own IO thread and forbids
blocking consumer calls there, so the listener is the async variant. A
revocation calls ``on_revoke`` inline (heartbeats pause meanwhile: keep the
service's revoke budget well below ``session_timeout_ms``), commits the offsets
it returns by awaiting ``commit_async``, and drops the records of the revoked
partitions that were not handed over yet (remembering where each resumes, if it
comes back). A loss (an expired session, or a claim a newer generation
superseded) gets ``on_lost`` and commits nothing. An assignment gets
``on_assign``, and seeks to the positions it returns.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from kafka import AsyncConsumerRebalanceListener, TopicPartition

from consumer.source.assignor import SingleActiveAssignor
from consumer.source.base import (
    OnAssign,
    OnLost,
    OnRevoke,
    SourceSettings,
    batch_bytes,
    to_kafka_offsets,
)
from schemas.debezium import PartitionId, RawRecord

__all__ = ["RebalanceListener", "Rebalances"]

log = logging.getLogger(__name__)


class Rebalances:
    """Mixed into :class:`~consumer.source.thread.KafkaSource`, which owns this state
    (guarded by ``_lock``: shared with the consumer thread and the event loop)."""

    _settings: SourceSettings
    _lock: threading.Lock
    _ready: deque[list[RawRecord]]
    _pending_bytes: int
    _assigned: frozenset[PartitionId]
    _resume_at: dict[PartitionId, int]
    _stopping: threading.Event
    _revoking: threading.Event
    _failure: BaseException | None
    _assignor: SingleActiveAssignor | None
    _on_revoke: OnRevoke | None
    _on_assign: OnAssign | None
    _on_lost: OnLost | None

    def _drop_unsent(self, partitions: set[PartitionId]) -> None:
        """Forget records of revoked partitions that asyncio has not taken yet, and
        remember where each such partition must resume if it comes back: kafka-python
        keeps the fetch position of a partition assigned again, which would skip them."""
        with self._lock:
            kept: deque[list[RawRecord]] = deque()
            for batch in self._ready:
                keep = []
                for record in batch:
                    tp = (record.topic, record.partition)
                    if tp in partitions:
                        if record.offset < self._resume_at.get(tp, record.offset + 1):
                            self._resume_at[tp] = record.offset
                    else:
                        keep.append(record)
                self._pending_bytes -= batch_bytes(batch) - batch_bytes(keep)
                if keep:
                    kept.append(keep)
            self._ready = kept

    async def _revoked(self, consumer: Any, partitions: set[PartitionId]) -> None:
        """Runs on kafka's IO thread before the group takes partitions away."""
        self._drop_unsent(partitions)
        with self._lock:
            self._assigned = self._assigned - partitions
        if self._stopping.is_set() or self._on_revoke is None or not partitions:
            return
        self._revoking.set()
        try:
            offsets = dict(self._on_revoke(sorted(partitions)))
        except Exception:
            log.exception("on_revoke failed; committing nothing for %s", sorted(partitions))
            return
        finally:
            self._revoking.clear()
        if not offsets:
            return
        try:
            await consumer.commit_async(to_kafka_offsets(offsets, self._settings.commit_metadata))
        except Exception:
            log.exception("commit of revoked partitions failed: %s", offsets)
        else:
            log.info("committed revoked partitions: %s", offsets)

    def _lost(self, partitions: set[PartitionId], why: str) -> None:
        """Runs on kafka's IO thread when the group gave our partitions to someone else."""
        self._drop_unsent(partitions)
        with self._lock:
            self._assigned = self._assigned - partitions
        if self._stopping.is_set() or not partitions:
            return
        log.warning("lost %d partitions (%s): nothing is committed for them", len(partitions), why)
        if self._on_lost is None:
            return
        try:
            self._on_lost(sorted(partitions))
        except Exception:
            log.exception("on_lost failed for %s", sorted(partitions))

    def _superseded(self) -> bool:
        """Whether the last assignment said our claim lost to a newer generation's."""
        return self._assignor is not None and self._assignor.superseded

    def _assigned_now(self, consumer: Any, partitions: set[PartitionId]) -> None:
        """Runs on kafka's IO thread once the group gave us (more) partitions."""
        owned = frozenset((tp.topic, tp.partition) for tp in consumer.assignment())
        with self._lock:
            self._assigned = owned
            over_limit = self._pending_bytes > self._settings.max_pending_bytes
            resume, self._resume_at = self._resume_at, {}
        for tp, offset in resume.items():
            if tp in partitions:
                # Only a partition kept across the rebalance has a position to correct;
                # a new one starts from the committed offset anyway.
                consumer.seek(TopicPartition(*tp), offset)
        if over_limit and partitions:
            consumer.pause(*(TopicPartition(*tp) for tp in partitions))
        if self._assignor is not None and partitions:
            log.info(
                "active for %d partitions (generation %s)",
                len(owned),
                self._assignor.generation,
            )
        if self._on_assign is None:
            return
        try:
            positions = self._on_assign(sorted(partitions))
        except Exception:
            log.exception("on_assign failed for %s", sorted(partitions))
            return
        try:
            for (topic, partition), offset in (positions or {}).items():
                consumer.seek(TopicPartition(topic, partition), offset)
        except (TypeError, ValueError) as exc:
            # Reading from anywhere else than asked would split the store from Kafka.
            log.exception("cannot start from %s; stopping the source", positions)
            self._failure = exc
            self._stopping.set()


class RebalanceListener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """kafka-python's rebalance hooks, forwarded to the source.

    Exceptions must not escape: kafka-python would re-raise them from poll()."""

    def __init__(self, source: Rebalances, consumer: Any) -> None:
        self._source = source
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        partitions = {(tp.topic, tp.partition) for tp in revoked}
        if self._source._superseded():
            self._source._lost(partitions, "a newer generation claimed them")
        else:
            await self._source._revoked(self._consumer, partitions)

    async def on_partitions_lost(self, lost: Iterable[Any]) -> None:
        self._source._lost(
            {(tp.topic, tp.partition) for tp in lost}, "this member fell out of the group"
        )

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        self._source._assigned_now(self._consumer, {(tp.topic, tp.partition) for tp in assigned})
