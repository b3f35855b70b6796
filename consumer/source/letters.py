"""Reading the dead-letter topic back: what was dead-lettered, and its replays.

A *letter* is what :mod:`consumer.source.deadletter` wrote: a record that could
not be decoded or mapped (``record``: its original key, value and headers), or
a document the API or the planner refused (``entity``: the document, keyed
``<kind>:<key>``). A *replay marker* is what ``rfmcube-cdc dead-letters
replay`` writes beside a letter, in the same topic and partition, once, to
decide it:

- ``replay``: the letter goes back through the service's own path. Every
  instance reads the markers (:mod:`consumer.recovery.replays`) and applies a
  record's copy as ingest applies a record (decoded and mapped with the
  configuration and mapping it runs now, into its store, owed to the API), or
  owes an entity's document again (built from the store as it is now);
- ``superseded``: a later record of the same key follows the letter's record in
  its partition (an update, a delete, a tombstone): that record holds the row
  as it is, and applying the old one would undo it;
- ``duplicate``: another letter of the same record is replayed by the same
  command (a record is dead-lettered again when it is read again: a restart
  before its commit, a store rebuilt for a new mapping).

A letter with a marker is never decided again: each is replayed at most once.
Two replays running at once could both mark one letter; an instance applies a
letter once, whatever its markers (:mod:`consumer.state.replays`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumer.errors import BrokerUnavailable
from consumer.source import replay
from consumer.source.base import broker_errors, consumer_config
from consumer.source.deadletter import (
    CONNECT_PREFIX,
    KIND,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    TRUNCATED,
    producer_extra,
)
from schemas.debezium import PartitionId, Position, RawRecord

__all__ = [
    "REPLAY_CHECKED",
    "REPLAY_OF",
    "REPLAY_OUTCOME",
    "Letter",
    "LetterId",
    "Selection",
    "read_letters",
    "select",
    "superseded",
    "write_markers",
]

MARKER = "replay"  # rfmcube.kind of a replay marker
REPLAY_OF = "rfmcube.replay.of"  # the letter it decides: "<partition>:<offset>"
REPLAY_OUTCOME = "rfmcube.replay.outcome"  # "replay", "superseded" or "duplicate"
REPLAY_KIND = "rfmcube.replay.kind"  # the letter's kind: "record" or "entity"
# The end offset of the record's partition when the command looked for later records
# of its key: what an instance applied beyond it was not looked at.
REPLAY_CHECKED = "rfmcube.replay.checked"
_OURS = "rfmcube."

LetterId = tuple[int, int]  # (partition, offset) in the dead-letter topic


@dataclass(frozen=True, slots=True)
class Letter:
    """A record of the dead-letter topic: a letter, or a replay marker."""

    partition: int
    offset: int
    timestamp_ms: int | None
    kind: str  # "record", "entity" or "replay"
    reason: str
    source: Position  # where the record came from (an entity's: its last record)
    key: bytes | None
    value: bytes | None
    carried: tuple[tuple[str, bytes | None], ...]  # the original record's own headers
    truncated: bool = False
    replay_of: LetterId | None = None  # a marker: the letter it decides
    outcome: str = ""  # a marker: "replay" or "superseded"
    replay_kind: str = ""  # a marker: the letter's kind
    checked: int | None = None  # a marker: see REPLAY_CHECKED

    @property
    def id(self) -> LetterId:
        return (self.partition, self.offset)

    def original(self) -> RawRecord:
        """The record a record letter (or its marker) holds, where it came from."""
        return RawRecord(
            topic=self.source.topic,
            partition=self.source.partition,
            offset=self.source.offset,
            key=self.key,
            value=self.value,
            headers=self.carried,
            timestamp_ms=self.timestamp_ms,
        )


def parse(record: RawRecord) -> Letter:
    """A record of the dead-letter topic as a letter (any record: one we did not
    write reads as a letter of kind "")."""
    headers: dict[str, str] = {}
    carried = []
    for name, value in record.headers:
        if name.startswith(_OURS) or name.startswith(CONNECT_PREFIX):
            headers.setdefault(name, (value or b"").decode("utf-8", "replace"))
        else:
            carried.append((name, value))
    of = headers.get(REPLAY_OF, "")
    partition, _, offset = of.partition(":")
    return Letter(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp_ms,
        kind=headers.get(KIND, ""),
        reason=headers.get(REASON, ""),
        source=Position(
            headers.get(SOURCE_TOPIC, ""),
            _int(headers.get(SOURCE_PARTITION), -1),
            _int(headers.get(SOURCE_OFFSET), -1),
        ),
        key=record.key,
        value=record.value,
        carried=tuple(carried),
        truncated=TRUNCATED in headers,
        replay_of=(int(partition), int(offset)) if of else None,
        outcome=headers.get(REPLAY_OUTCOME, ""),
        replay_kind=headers.get(REPLAY_KIND, ""),
        checked=_int(headers.get(REPLAY_CHECKED), None),
    )


def _int(text: str | None, default: int | None) -> Any:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


# -- reading ------------------------------------------------------------------------


def _start_offsets(
    bootstrap_servers: str,
    parts: Sequence[PartitionId],
    since_ms: int | None,
    extra: Mapping[str, Any],
) -> dict[PartitionId, int]:
    """Where each partition's records at or after ``since_ms`` start (0: all)."""
    if since_ms is None:
        return dict.fromkeys(parts, 0)
    config = consumer_config(bootstrap_servers, None, extra, client_id="rfmcube-cdc-letters")
    with (
        broker_errors("looking up the dead letters' times"),
        closing(KafkaConsumer(**config)) as consumer,
    ):
        found = consumer.offsets_for_times({TopicPartition(*tp): since_ms for tp in parts})
        ends = consumer.end_offsets([TopicPartition(*tp) for tp in parts])
    return {
        tp: found[TopicPartition(*tp)].offset
        if found.get(TopicPartition(*tp)) is not None
        else ends[TopicPartition(*tp)]
        for tp in parts
    }


def read_letters(
    bootstrap_servers: str,
    topic: str,
    *,
    extra: Mapping[str, Any],
    since_ms: int | None = None,
) -> list[Letter]:
    """Every record of the dead-letter topic up to its end now (from ``since_ms``,
    by the time they were written): letters and markers, in each partition's order.
    A topic that does not exist is BrokerUnavailable, naming it."""
    parts = replay.partitions_of(bootstrap_servers, [topic], extra=extra)
    if not parts:
        raise BrokerUnavailable(
            f"the dead-letter topic {topic} does not exist (kafka.dead_letter_topic)"
        )
    ends = replay.end_offsets(bootstrap_servers, parts, extra=extra)
    start = _start_offsets(bootstrap_servers, parts, since_ms, extra)
    return [
        parse(record)
        for batch in replay.replay(bootstrap_servers, start, ends, extra=extra)
        for record in batch
    ]


# -- choosing what to replay ----------------------------------------------------------


@dataclass(slots=True)
class Selection:
    """What a replay found among the letters it was asked for."""

    chosen: list[Letter] = field(default_factory=list)  # no marker yet: to decide now
    duplicates: list[Letter] = field(default_factory=list)  # of a record chosen once
    decided: list[Letter] = field(default_factory=list)  # a marker decided them before
    cut: list[Letter] = field(default_factory=list)  # cut to fit: cannot go back

    def by_reason(self) -> Counter[str]:
        return Counter(letter.reason for letter in self.chosen)


def select(
    letters: Iterable[Letter], *, reason: str | None = None, since_ms: int | None = None
) -> Selection:
    """The letters a replay asks for: their reason contains ``reason`` (any case),
    written at ``since_ms`` or later."""
    letters = list(letters)
    marked = {m.replay_of for m in letters if m.kind == MARKER}
    found = Selection()
    for letter in letters:
        if letter.kind not in ("record", "entity"):
            continue
        if reason is not None and reason.lower() not in letter.reason.lower():
            continue
        if since_ms is not None and (letter.timestamp_ms or 0) < since_ms:
            continue
        if letter.id in marked:
            found.decided.append(letter)
        elif letter.truncated:
            found.cut.append(letter)
        else:
            found.chosen.append(letter)
    # One letter per record: the last written (its reason is the newest).
    last: dict[Position, Letter] = {}
    for letter in found.chosen:
        if letter.kind == "record" and letter.source.topic:
            last[letter.source] = letter
    kept = set(map(id, last.values()))
    found.duplicates = [
        c for c in found.chosen if c.kind == "record" and c.source.topic and id(c) not in kept
    ]
    found.chosen = [c for c in found.chosen if c not in found.duplicates]
    return found


def superseded(
    bootstrap_servers: str, letters: Sequence[Letter], *, extra: Mapping[str, Any]
) -> tuple[set[LetterId], dict[PartitionId, int]]:
    """The record letters whose key has a later record in the record's partition,
    read from the source topics; and each partition's end offset, read up to it."""
    wanted: dict[PartitionId, dict[bytes, list[Letter]]] = {}
    for letter in letters:
        if letter.kind == "record" and letter.key is not None and letter.source.topic:
            tp = (letter.source.topic, letter.source.partition)
            wanted.setdefault(tp, {}).setdefault(letter.key, []).append(letter)
    if not wanted:
        return set(), {}
    ends = replay.end_offsets(bootstrap_servers, list(wanted), extra=extra)
    start = {
        tp: min(letter.source.offset for found in keys.values() for letter in found) + 1
        for tp, keys in wanted.items()
    }
    later: set[LetterId] = set()
    for batch in replay.replay(bootstrap_servers, start, ends, extra=extra):
        for record in batch:
            found = wanted[(record.topic, record.partition)].get(record.key or b"")
            for letter in found or ():
                if record.offset > letter.source.offset:
                    later.add(letter.id)
    return later, ends


# -- deciding -------------------------------------------------------------------------


def write_markers(
    bootstrap_servers: str,
    topic: str,
    decisions: Sequence[tuple[Letter, str, int | None]],
    *,
    extra: Mapping[str, Any],
    timeout: float = 30.0,
) -> None:
    """One marker per (letter, outcome, checked end offset), in the letter's partition,
    each acknowledged by the broker (acks=all) before this returns."""
    if not decisions:
        return
    config = {
        "client_id": "rfmcube-cdc-replay",
        **producer_extra(extra),
        "bootstrap_servers": bootstrap_servers,
        "acks": "all",
    }
    with broker_errors(f"writing replay markers to {topic}"):
        producer = KafkaProducer(**config)
        try:
            futures = [
                producer.send(
                    topic,
                    key=letter.key,
                    value=letter.value if outcome == "replay" else None,
                    headers=_marker_headers(letter, outcome, checked),
                    partition=letter.partition,
                )
                for letter, outcome, checked in decisions
            ]
            producer.flush(timeout=timeout)
            deadline = time.monotonic() + timeout
            for future in futures:
                future.get(timeout=max(0.1, deadline - time.monotonic()))
        finally:
            producer.close(timeout=timeout)


def _marker_headers(letter: Letter, outcome: str, checked: int | None) -> list[tuple[str, bytes]]:
    headers = (
        [(name, value or b"") for name, value in letter.carried] if outcome == "replay" else []
    )
    headers += [
        (REASON, letter.reason.encode("utf-8", "backslashreplace")),
        (SOURCE_TOPIC, letter.source.topic.encode("utf-8", "backslashreplace")),
        (SOURCE_PARTITION, str(letter.source.partition).encode("ascii")),
        (SOURCE_OFFSET, str(letter.source.offset).encode("ascii")),
        (KIND, MARKER.encode("ascii")),
        (REPLAY_OF, f"{letter.partition}:{letter.offset}".encode("ascii")),
        (REPLAY_OUTCOME, outcome.encode("ascii")),
        (REPLAY_KIND, letter.kind.encode("ascii")),
    ]
    if checked is not None:
        headers.append((REPLAY_CHECKED, str(checked).encode("ascii")))
    return headers
