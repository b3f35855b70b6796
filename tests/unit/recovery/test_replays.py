"""An instance applies replay markers once, through ingest's own mapping, into its store.

Pure logic: the store in memory, markers built as the command writes them."""

from __future__ import annotations

import json
from typing import Any

from consumer.changes.mapping import Mapping
from consumer.ingest import Ingest
from consumer.recovery.replays import ReplayApplier
from consumer.source.deadletter import _position_headers
from consumer.source.letters import _marker_headers, parse
from consumer.state.obligations import Obligations, Settlement
from consumer.state.replays import Replays
from consumer.state.store import StateStore
from schemas.debezium import Position, RawRecord
from schemas.entities import Kind

TOPIC = "shop.public.customers"
DLQ = "shop.dead-letters"


def customer_record(offset: int, cid: int, email: str, ts_ms: int, **extra: Any) -> RawRecord:
    after = {
        "id": cid,
        "email": email,
        "created_at": "2026-01-05T09:00:00Z",
        "updated_at": "2026-01-05T09:00:00Z",
        **extra,
    }
    value = {"before": None, "after": after, "op": "c", "source": {"ts_ms": ts_ms}, "ts_ms": ts_ms}
    return RawRecord(TOPIC, 0, offset, json.dumps({"id": cid}).encode(), json.dumps(value).encode())


class Instance:
    def __init__(self, *, active: bool = True) -> None:
        self.store = StateStore(":memory:")
        self.obligations = Obligations(self.store)
        self.ingest = Ingest(self.obligations, Mapping.load(None), dead_letter=self._dead)
        self.dead: list[tuple[RawRecord, str]] = []
        self.owed = 0
        self.replays = Replays(self.store, DLQ)
        self.applier = ReplayApplier(
            self.ingest,
            self.obligations,
            self.replays,
            bootstrap_servers="unused:9092",
            extra={},
            active=lambda: active,
            ready=lambda: True,
            dead_letter=lambda record, reason: self.dead.append((record, reason)),
            owed=self._owed,
        )
        self._dlq_offset = 0

    def _dead(self, record: RawRecord, reason: str) -> None:
        self.dead.append((record, reason))

    def _owed(self) -> None:
        self.owed += 1

    def markers(
        self, *records: RawRecord, kind: str = "record", checked: int | None = None
    ) -> list[RawRecord]:
        """For each record: its letter, then the marker that replays it."""
        out = []
        for record in records:
            headers = (*record.headers, *_position_headers(record.position, "bad", kind))
            letter = RawRecord(DLQ, 0, self._dlq_offset, record.key, record.value, headers, 1)
            decided = parse(letter)
            mark = RawRecord(
                DLQ,
                0,
                self._dlq_offset + 1,
                record.key,
                record.value,
                tuple(_marker_headers(decided, "replay", checked)),
                2,
            )
            out += [letter, mark]
            self._dlq_offset += 2
        return out

    def email_of(self, cid: int) -> str | None:
        row = self.store.live(Kind.CUSTOMER, str(cid))
        return None if row is None else row.email


def test_a_replayed_record_is_applied_and_owed_once_whatever_its_markers() -> None:
    node = Instance()
    markers = node.markers(customer_record(3, 1, "a@x.it", 1_000))
    assert node.applier.apply(markers, {0: 2}) == 1
    assert node.email_of(1) == "a@x.it"
    (owed,) = node.obligations.take(10)
    assert owed.ref == (Kind.CUSTOMER, "1") and node.owed == 1
    # What waits on it is the marker in the dead-letter topic, never the record's
    # partition, whose commits lie past it.
    assert node.obligations.position_of(owed.ref) == Position(DLQ, 0, 1)
    assert node.obligations.commit_floors([(TOPIC, 0)]) == {}
    # The same markers again (a reader that started over, a second replay): nothing.
    assert node.applier.apply(markers, {0: 2}) == 0
    assert node.obligations.owed_count() == 1
    assert node.replays.next_offsets() == {0: 2}


def test_a_record_still_bad_is_dead_lettered_again_by_the_active_only() -> None:
    bad = customer_record(3, 1, "a@x.it", 1_000, newsletter="maybe")
    active = Instance()
    assert active.applier.apply(active.markers(bad), {0: 2}) == 0
    ((record, reason),) = active.dead
    assert record.position == bad.position and reason.startswith("replayed, still bad: column")
    standby = Instance(active=False)
    standby.applier.apply(standby.markers(bad), {0: 2})
    assert standby.dead == []


def test_a_row_changed_since_the_command_looked_is_not_undone() -> None:
    node = Instance()
    newer = customer_record(9, 1, "new@x.it", 5_000)
    node.ingest.ingest([newer])  # applied past what the command looked at (offset 5)
    old = customer_record(3, 1, "old@x.it", 1_000)
    assert node.applier.apply(node.markers(old, checked=5), {0: 2}) == 0
    assert node.email_of(1) == "new@x.it"
    assert node.applier.superseded == 1


def test_an_entity_letter_owes_its_document_again_as_the_store_holds_it() -> None:
    node = Instance()
    node.ingest.ingest([customer_record(3, 1, "a@x.it", 1_000)])
    # The API rejected the document: its obligation was met by the dead letter.
    node.obligations.settle(Settlement(done=node.obligations.take(10)))
    assert node.obligations.owed_count() == 0
    entity = RawRecord(TOPIC, 0, 3, b"customer:1", b'{"rejected": "document"}')
    assert node.applier.apply(node.markers(entity, kind="entity"), {0: 2}) == 1
    (owed,) = node.obligations.take(10)
    assert owed.ref == (Kind.CUSTOMER, "1")
