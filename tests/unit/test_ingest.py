"""Ingest: records → store in one transaction per batch; bad records dead-lettered;
records below the applied offsets never applied twice; the bound on what is owed."""

from __future__ import annotations

from consumer.changes.mapping import Mapping
from consumer.ingest import Ingest, OwedBound
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from schemas.debezium import RawRecord
from schemas.entities import Kind
from testkit.poison import customer, key, schemaless

TOPIC = "shop.public.customers"


def _ingest() -> tuple[Ingest, list[tuple[RawRecord, str]]]:
    letters: list[tuple[RawRecord, str]] = []
    obligations = Obligations(StateStore(":memory:"))
    ingest = Ingest(
        obligations, Mapping.load(None), dead_letter=lambda r, why: letters.append((r, why))
    )
    return ingest, letters


def _record(offset: int, cid: int, **changes: object) -> RawRecord:
    return RawRecord(TOPIC, 0, offset, key(cid), schemaless(customer(cid, **changes)))


def test_a_batch_writes_rows_offsets_and_what_it_owes_together() -> None:
    ingest, letters = _ingest()
    assert ingest.ingest([_record(0, 1), _record(1, 2)]) == 2
    store = ingest.obligations.store
    assert store.applied_offsets() == {(TOPIC, 0): 2}
    assert store.live(Kind.CUSTOMER, "1") is not None
    assert ingest.obligations.owed_count() == 2 and letters == []


def test_a_bad_record_is_dead_lettered_with_its_reason_and_the_batch_goes_on() -> None:
    ingest, letters = _ingest()
    bad = RawRecord(TOPIC, 0, 1, key(9), b"{not json")
    assert ingest.ingest([_record(0, 1), bad, _record(2, 2)]) == 2
    assert [(r.offset, "JSON" in why) for r, why in letters] == [(1, True)]
    assert ingest.obligations.store.applied_offsets() == {(TOPIC, 0): 3}


def test_records_below_the_applied_offset_are_not_applied_twice_bad_ones_dead_lettered() -> None:
    ingest, letters = _ingest()
    ingest.ingest([_record(0, 1, first_name="Ada"), _record(1, 1, first_name="Bea")])
    bad = RawRecord(TOPIC, 0, 2, key(9), b"{not json")
    ingest.ingest([bad])
    letters.clear()
    # A restart reads again from an older committed offset: the store is ahead.
    ingest.ingest([_record(0, 1, first_name="Ada"), bad])
    row = ingest.obligations.store.live(Kind.CUSTOMER, "1")
    assert row is not None and row.fields["firstName"] == "Bea"
    assert [r.offset for r, _ in letters] == [2]


def test_a_replay_of_what_another_instance_committed_forgets_what_was_accepted() -> None:
    ingest, _ = _ingest()
    ingest.ingest([_record(0, 1)], owe=False)
    store = ingest.obligations.store
    store.set_accepted({(Kind.CUSTOMER, "1"): "h"})
    ingest.ingest([_record(1, 1, newsletter=False)], owe=False, forget_accepted=True)
    assert store.accepted_hash((Kind.CUSTOMER, "1")) is None
    assert ingest.obligations.owed_count() == 0  # rows only: nothing owed


def test_reading_pauses_above_the_bound_and_resumes_below_ninety_percent() -> None:
    ingest, _ = _ingest()
    now = [0.0]
    bound = OwedBound(ingest.obligations, 10, clock=lambda: now[0])
    held: list[bool] = []
    ingest.ingest([_record(i, i) for i in range(11)])
    bound.apply(held.append)
    assert held == [True]
    store = ingest.obligations.store
    store.db.execute("DELETE FROM owed WHERE key IN ('0', '1')")  # 9 owed: 90 %
    bound.apply(held.append)
    assert held == [True]  # counted at most once a second
    now[0] += 1.0
    bound.apply(held.append)
    assert held == [True, False]
