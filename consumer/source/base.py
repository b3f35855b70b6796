"""What every placement of the Kafka source shares: its contract and its helpers.

The service reads Kafka through a :class:`Source`: a consumer of the group in
a thread of the service (:mod:`consumer.source.thread`) or in a child process
(:mod:`consumer.source.process`), chosen at start-up
(:mod:`consumer.source.placement`). Both hand over the same
:class:`~schemas.debezium.RawRecord` batches, take the same commands and call
the same rebalance callbacks (see :class:`consumer.source.thread.KafkaSource`
for their rules).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumer.errors import BrokerUnavailable, ConfigError
from schemas.debezium import PartitionId, RawRecord

__all__ = [
    "CommitOffset",
    "MiB",
    "OnAssign",
    "OnLost",
    "OnRevoke",
    "Source",
    "SourceSettings",
    "batch_bytes",
    "broker_errors",
    "consumer_config",
    "raw_record",
    "record_bytes",
    "take_batches",
    "to_kafka_offsets",
]

# An offset to commit, alone (with the source's own metadata) or with its metadata.
CommitOffset = int | tuple[int, str]
OnRevoke = Callable[[list[PartitionId]], Mapping[PartitionId, CommitOffset]]
OnAssign = Callable[[list[PartitionId]], Mapping[PartitionId, int] | None]
OnLost = Callable[[list[PartitionId]], None]

MiB: Final = 1024 * 1024

# Consumer settings the service relies on; `extra` may not change them.
_FORCED_CONSUMER_KEYS: Final = ("bootstrap_servers", "group_id", "enable_auto_commit")


@contextmanager
def broker_errors(what: str) -> Iterator[None]:
    """Turn kafka-python's errors into :class:`BrokerUnavailable` at the edge."""
    try:
        yield
    except KafkaError as exc:
        raise BrokerUnavailable(f"{what}: {exc}") from exc


@dataclass(frozen=True)
class SourceSettings:
    bootstrap_servers: str
    group_id: str
    topics: tuple[str, ...]
    client_id: str = "rfmcube-cdc"
    max_pending_bytes: int = 64 * MiB  # pause above this, resume below half
    # A command (a commit) waits for the poll in progress: kafka-python's poll has no
    # wake-up and loops until its timer ends.
    poll_timeout_ms: int = 50
    max_poll_records: int = 2000
    commit_timeout_ms: int = 30_000
    commit_metadata: str = ""  # written with every commit (the service: its instance id)
    extra: Mapping[str, Any] = field(default_factory=dict)  # security settings etc.
    # Every partition to one member of the group; the others stand by (consumer/source/assignor.py).
    single_active: bool = True


def take_batches(ready: deque[list[RawRecord]], max_records: int | None) -> list[RawRecord]:
    """The first ``max_records`` records of the batches in ``ready`` (all without a
    bound), in order; what is left of a batch cut short stays at the front."""
    taken: list[RawRecord] = []
    while ready and (max_records is None or len(taken) < max_records):
        batch = ready.popleft()
        room = len(batch) if max_records is None else max_records - len(taken)
        if len(batch) > room:
            ready.appendleft(batch[room:])
            batch = batch[:room]
        taken.extend(batch)
    return taken


def record_bytes(record: RawRecord) -> int:
    """The size the memory bound counts for one record: key, value and headers."""
    size = len(record.key or b"") + len(record.value or b"")
    for name, value in record.headers:
        size += len(name) + len(value or b"")
    return size


def batch_bytes(records: Iterable[RawRecord]) -> int:
    """What to pass to :meth:`KafkaSource.release` once a batch is done with."""
    return sum(record_bytes(r) for r in records)


def raw_record(message: Any) -> RawRecord:
    """A kafka-python ``ConsumerRecord`` as the pipeline's :class:`RawRecord`."""
    return RawRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=tuple((name, value) for name, value in message.headers or ()),
        timestamp_ms=message.timestamp if message.timestamp is not None else None,
    )


def consumer_config(
    bootstrap_servers: str, group_id: str | None, extra: Mapping[str, Any], **ours: Any
) -> dict[str, Any]:
    """KafkaConsumer keyword arguments: ``ours`` as defaults, ``extra`` on top,
    except for the keys the service relies on, which ``extra`` may not change."""
    for key in _FORCED_CONSUMER_KEYS:
        if key in extra:
            raise ConfigError(
                f"kafka.extra.{key}", "is set by the service and cannot be overridden"
            )
    return {
        **ours,
        **extra,
        "bootstrap_servers": bootstrap_servers,
        "group_id": group_id,
        "enable_auto_commit": False,
    }


def to_kafka_offsets(
    offsets: Mapping[PartitionId, CommitOffset], metadata: str = ""
) -> dict[Any, Any]:
    """kafka-python's commit argument; ``metadata`` where an offset comes alone."""
    committed = {}
    for (topic, partition), offset in offsets.items():
        number, text = offset if isinstance(offset, tuple) else (offset, metadata)
        committed[TopicPartition(topic, partition)] = OffsetAndMetadata(number, text, -1)
    return committed


class Source(Protocol):
    """The Kafka source as the service uses it, in either placement."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Join the group and start reading; records arrive through :meth:`get`."""

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop reading and leave the group, committing nothing, ``timeout`` s at most."""

    async def get(self, max_records: int | None = None) -> list[RawRecord]:
        """The records read since the last call, at most ``max_records`` (waits for one)."""

    def release(self, nbytes: int) -> None:
        """The service is done with records of this many bytes (the memory bound)."""

    def hold(self, held: bool) -> None:
        """Pause every partition while ``held`` (the service owes too much)."""

    async def commit(self, offsets: Mapping[PartitionId, CommitOffset]) -> None:
        """Commit "next offset to read" per owned partition (with its metadata, or the
        source's own), once the broker confirmed."""

    async def committed(self, partitions: Iterable[PartitionId]) -> dict[PartitionId, int | None]:
        """The group's committed offsets (None where nothing was committed)."""

    async def committed_marks(
        self, partitions: Iterable[PartitionId]
    ) -> dict[PartitionId, tuple[int, str] | None]:
        """The group's commits of these partitions with their metadata (None: never)."""

    def highwaters(self) -> dict[PartitionId, int]:
        """The log end offset of each owned partition, as the last fetch saw it."""

    def role(self) -> str:
        """``active``, ``standby`` or ``joining``."""

    def revoking(self) -> bool:
        """Whether a revocation is being handled."""

    def waiting_records(self) -> int:
        """Records read and not yet taken by :meth:`get`."""

    def assignment(self) -> set[PartitionId]:
        """The partitions this member owns."""

    def is_active(self) -> bool:
        """Whether this member may act for its partitions right now (its lease)."""

    def active_until(self) -> float | None:
        """The lease's deadline while owning partitions."""
