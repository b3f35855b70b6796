"""What a decode worker runs, and the compact wire form between it and the service.

    RecordDecoder(mapping).result_of(record) -> Result   # decode + map one record
    to_wire(record); result_to_wire(result); result_from_wire(wire, record)
    decode_chunk(wires) -> wire results                  # a worker's task

A result is an :class:`~schemas.entities.EntityChange`, a
:class:`~schemas.debezium.Skipped`, a :class:`Rejected` (the reason of the
:class:`~consumer.errors.BadRecord` the decoder or the mapper raised), or None
(the mapping does not map the event). ``RecordDecoder.result_of`` is the one
place that decides it, inline or in a worker (:mod:`consumer.parallel`).

The wire form was chosen by measurement (bench/README.md, "The parallel
path"): a record travels as a plain tuple (pickling a ``RawRecord`` costs
twice as much), a result as a tagged tuple without its position (the caller
has the record), rebuilt into objects by the caller: 11 µs a record in the
service's process against 14 µs for unpickling ``EntityChange`` objects
(4.8 against 7.4 µs with the garbage collector's thresholds raised).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any, Final

from consumer.decode import ColumnHint, decode_record, parse_hint
from consumer.errors import BadRecord
from consumer.mapping import Mapping
from schemas.debezium import ChangeEvent, Position, RawRecord, Skipped
from schemas.entities import EntityChange, Kind, MappedRow


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the decoder or the mapper refused: dead-letter it with ``reason``."""

    reason: str


Result = EntityChange | Skipped | Rejected | None
"""Per record: the change, a skip note, why it was refused, or None (not mapped)."""

# -- the wire form ------------------------------------------------------------------------
#
# To the workers, a record is a tuple (topic, partition, offset, key, value,
# headers, timestamp_ms). Back, a result is None or a tuple tagged by its first
# item; positions are not sent back (the caller has the records).

_CHANGE: Final = 0  # (0, kind, key, row, before, ts_ms); row/before: see _row_wire
_SKIPPED: Final = 1  # (1, kind, detail)
_REJECTED: Final = 2  # (2, reason)

WireRecord = tuple[str, int, int, bytes | None, bytes | None, tuple[Any, ...], int | None]
WireRow = tuple[str, dict[str, Any], str | None, str | None, tuple[str, ...]] | None
WireResult = tuple[Any, ...] | None

_KINDS: Final = {kind.value: kind for kind in Kind}
_NOTHING_UNAVAILABLE: Final[frozenset[str]] = frozenset()


def to_wire(record: RawRecord) -> WireRecord:
    return (
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        record.headers,
        record.timestamp_ms,
    )


def _row_wire(row: MappedRow | None) -> WireRow:
    if row is None:
        return None
    unavailable = tuple(row.unavailable) if row.unavailable else ()
    return (row.key, row.fields, row.parent, row.email, unavailable)


def _row_from_wire(kind: Kind, wire: WireRow) -> MappedRow | None:
    if wire is None:
        return None
    key, fields, parent, email, unavailable = wire
    gone = frozenset(unavailable) if unavailable else _NOTHING_UNAVAILABLE
    return MappedRow(kind, key, fields, parent, email, gone)


def result_to_wire(result: Result) -> WireResult:
    if result is None:
        return None
    if isinstance(result, EntityChange):
        return (
            _CHANGE,
            result.kind.value,
            result.key,
            _row_wire(result.row),
            _row_wire(result.before),
            result.ts_ms,
        )
    if isinstance(result, Skipped):
        return (_SKIPPED, result.kind, result.detail)
    return (_REJECTED, result.reason)


def result_from_wire(wire: WireResult, record: RawRecord) -> Result:
    """Rebuild one result; ``record`` is the record it belongs to (for positions)."""
    if wire is None:
        return None
    tag = wire[0]
    position = Position(record.topic, record.partition, record.offset)
    if tag == _CHANGE:
        kind = _KINDS[wire[1]]
        return EntityChange(
            kind,
            wire[2],
            position,
            _row_from_wire(kind, wire[3]),
            _row_from_wire(kind, wire[4]),
            wire[5],
        )
    if tag == _SKIPPED:
        return Skipped(position, wire[1], wire[2])
    return Rejected(wire[1])


# -- what a worker runs --------------------------------------------------------------------


class RecordDecoder:
    """Decode and map one record at a time; the same code inline or in a worker."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.hints: dict[str, dict[str, ColumnHint]] = {
            topic: {column: parse_hint(h) for column, h in mapping.hints_for(topic).items()}
            for topic in mapping.topics()
        }

    def result_of(self, record: RawRecord) -> Result:
        try:
            decoded = decode_record(record, self.hints.get(record.topic))
            if not isinstance(decoded, ChangeEvent):
                return decoded
            return self.mapping.map_event(decoded)
        except BadRecord as exc:
            return Rejected(exc.reason)


_worker_decoder: RecordDecoder | None = None


def init_worker(mapping_text: str, mapping_source: str) -> None:
    global _worker_decoder
    # The service owns its workers and stops them: a Ctrl-C sent to the whole
    # process group must not kill them first. SIGTERM stays: the executor
    # terminates the workers of a broken pool with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_decoder = RecordDecoder(Mapping.from_text(mapping_text, source=mapping_source))
    # A worker waits on its task queue, whose write end it holds itself, so it
    # would never see the service die (SIGKILL, OOM): watch the parent instead.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent.sentinel,), name="parent-watch", daemon=True
        ).start()


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def ready() -> int:
    """Warm-up task: proves the worker started and compiled the mapping."""
    assert _worker_decoder is not None
    return multiprocessing.current_process().pid or 0


def decode_chunk(wire: list[WireRecord]) -> list[WireResult]:
    """A worker's task: decode and map a chunk of records."""
    decoder = _worker_decoder
    assert decoder is not None, "the worker was not initialized"
    return [
        result_to_wire(decoder.result_of(RawRecord(t, p, o, k, v, h, ts)))
        for t, p, o, k, v, h, ts in wire
    ]
