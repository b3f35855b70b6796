"""Reading dead letters back and choosing what a replay decides: pure logic."""

from __future__ import annotations

from consumer.source.deadletter import _position_headers
from consumer.source.letters import Letter, _marker_headers, parse, select
from schemas.debezium import Position, RawRecord

SOURCE = Position("shop.public.customers", 2, 41)


def letter(
    offset: int,
    reason: str = "column newsletter: boolean expects true/false",
    *,
    kind: str = "record",
    source: Position = SOURCE,
    at: int = 1_000,
    extra: tuple[tuple[str, bytes], ...] = (),
) -> Letter:
    headers = (("trace", b"t-1"), *_position_headers(source, reason, kind), *extra)
    return parse(RawRecord("dlq", 0, offset, b'{"id":7}', b"{...}", headers, at))


def marker(of: Letter, outcome: str = "replay", offset: int = 100) -> Letter:
    headers = tuple(_marker_headers(of, outcome, 55))
    return parse(RawRecord("dlq", of.partition, offset, of.key, of.value, headers, 2_000))


def test_a_letter_reads_back_with_its_reason_position_and_the_records_own_headers() -> None:
    found = letter(5)
    assert (found.kind, found.reason, found.source) == (
        "record",
        "column newsletter: boolean expects true/false",
        SOURCE,
    )
    assert found.carried == (("trace", b"t-1"),)  # not ours, not Connect's
    assert found.original() == RawRecord(
        "shop.public.customers", 2, 41, b'{"id":7}', b"{...}", (("trace", b"t-1"),), 1_000
    )


def test_a_marker_names_the_letter_it_decides_and_carries_its_record() -> None:
    decided = marker(letter(5))
    assert (decided.kind, decided.replay_of, decided.outcome) == ("replay", (0, 5), "replay")
    assert (decided.replay_kind, decided.checked) == ("record", 55)
    assert decided.original().position == SOURCE
    assert decided.original().headers == (("trace", b"t-1"),)


def test_a_replay_chooses_by_reason_and_time_and_never_a_letter_decided_before() -> None:
    mapping = letter(1)
    limit = letter(2, "record of 12624 bytes, more than 8000", source=Position("t", 0, 9))
    old = letter(3, "column amount: not a decimal", source=Position("t", 0, 1), at=10)
    entity = letter(4, "import rejected: 422", kind="entity", source=Position("", -1, -1))
    letters = [mapping, limit, old, entity, marker(limit)]
    assert select(letters).chosen == [mapping, old, entity]
    assert [x.id for x in select(letters).decided] == [limit.id]
    assert select(letters, reason="COLUMN").chosen == [mapping, old]
    assert select(letters, since_ms=500).chosen == [mapping, entity]


def test_one_record_dead_lettered_twice_is_replayed_once() -> None:
    first, second = letter(1, "first reason"), letter(2, "read again")
    found = select([first, second])
    assert found.chosen == [second] and found.duplicates == [first]


def test_a_letter_cut_to_fit_cannot_be_replayed() -> None:
    cut = letter(1, extra=(("rfmcube.truncated", b"value"),))
    assert select([cut]).cut == [cut] and select([cut]).chosen == []
