"""A Debezium change event, decoded: the input contract of the pipeline.

The decoder (``consumer.changes.decode``) turns a Kafka record of any supported wire
form into a :class:`ChangeEvent` or a :class:`Skipped` note. Column values are
already plain Python: ``Decimal`` for decimals (never float), timezone-aware
UTC ``datetime`` for timestamps, ``date``/``time`` for dates and times,
``bool``, ``int``, ``str``, ``dict``/``list`` for JSON columns. A column whose
value Debezium could not read (an unchanged TOASTed column) holds
:data:`UNAVAILABLE`, which means "the stored value stands".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, NamedTuple


class Op(StrEnum):
    """What happened to the row (Debezium's ``op`` field)."""

    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot read: an upsert like a create


class _Unavailable:
    """The type of :data:`UNAVAILABLE`; a single, falsy, comparable marker."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNAVAILABLE"

    def __bool__(self) -> bool:
        return False


UNAVAILABLE: Final = _Unavailable()
"""Placeholder for a column Debezium did not read (``__debezium_unavailable_value``)."""

Row = dict[str, Any]

PartitionId = tuple[str, int]
"""A topic's partition: (topic, partition number)."""


class Position(NamedTuple):
    """Where a record sits in Kafka: what the dead-letter headers and commits name.

    A named tuple, not a frozen dataclass: one is built per record, and this
    is several times cheaper to build and hash."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A Kafka record as the source hands it over: bytes, not yet decoded."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int | None = None

    @property
    def position(self) -> Position:
        return Position(self.topic, self.partition, self.offset)


@dataclass(slots=True)
class ChangeEvent:
    """One row change.

    ``key`` holds the primary-key columns from the Kafka record key (or, when
    the key is absent, is None). ``before``/``after`` are the row images;
    ``after`` is None for a delete, ``before`` may be None or hold only key
    columns (PostgreSQL REPLICA IDENTITY DEFAULT). ``tombstone`` is True when
    the delete was only signalled by a Kafka null value or a flattened
    tombstone: then both images are None and the key says which row is gone.
    Not frozen, since one is built per record and frozen dataclasses cost
    several times more to build; nothing mutates it after decoding.
    """

    position: Position
    key: Row | None
    op: Op
    before: Row | None
    after: Row | None
    ts_ms: int | None = None  # when Debezium processed the change
    source_ts_ms: int | None = None  # when the change was committed in the database
    tombstone: bool = False
    headers: tuple[tuple[str, bytes | None], ...] = field(default=())

    @property
    def is_delete(self) -> bool:
        return self.op is Op.DELETE


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record that is not a row change we act on (heartbeat, truncate, ...).

    ``kind`` is a short stable word for counting (``heartbeat``,
    ``schema_change``, ``transaction``, ``truncate``, ``message``,
    ``redundant_tombstone``); ``detail`` is for the log line.
    """

    position: Position
    kind: str
    detail: str = ""


Decoded = ChangeEvent | Skipped
