"""Whatever bytes arrive, change_of gives a change, a Skipped note, None or a BadRecord;
and a change it gives can always be stored, read back and written as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.changes.decode import ColumnHint, parse_hint
from consumer.changes.limits import RecordLimits
from consumer.changes.mapping import Mapping
from consumer.changes.records import change_of
from consumer.errors import BadRecord
from consumer.state.batch import open_batch
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from schemas.debezium import RawRecord, Skipped
from schemas.entities import EntityChange
from schemas.rfmcube import dumps
from testkit.poison import _SLOT, customer, item, key, order, schemaless, with_schema

MAPPING = Mapping.load(None)
HINTS: dict[str, dict[str, ColumnHint]] = {
    topic: {column: parse_hint(hint) for column, hint in MAPPING.hints_for(topic).items()}
    for topic in MAPPING.topics()
}
ROWS = {"customers": customer, "orders": order, "order_items": item}
FUZZ = settings(
    max_examples=300,
    deadline=None,  # a shared machine: time is checked by the bench, not here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateStore]:
    state = StateStore(Path(tmp_path_factory.mktemp("fuzz")) / "state.db")
    yield state
    state.close()


def outcome_is_sound(
    store: StateStore, topic: str, record_key: bytes | None, value: bytes | None
) -> None:
    record = RawRecord(topic, 0, 11, record_key, value)
    try:
        change = change_of(record, HINTS.get(topic), MAPPING, RecordLimits())
    except BadRecord as exc:
        assert exc.reason and len(exc.reason) <= 300
        exc.reason.encode("utf-8")  # fit for a Kafka header
        return
    assert change is None or isinstance(change, EntityChange | Skipped)
    if isinstance(change, EntityChange):
        with open_batch(
            Obligations(store)
        ) as batch:  # what the service does: a failure here stops the stream
            batch.apply(change)
        stored = store.get(change.kind, change.key)
        if change.row is not None:
            assert stored is not None
            dumps(stored.row.fields)  # documents are written from what is read back


# -- any bytes --------------------------------------------------------------------------

TOPICS = st.sampled_from([*MAPPING.topics(), "shop.public.unmapped", "__debezium-heartbeat.shop"])
VALID = schemaless(order(1))


@FUZZ
@given(TOPICS, st.none() | st.binary(max_size=64), st.none() | st.binary(max_size=256))
def test_any_bytes_as_key_and_value(
    store: StateStore, topic: str, record_key: bytes | None, value: bytes | None
) -> None:
    outcome_is_sound(store, topic, record_key, value)


@FUZZ
@given(st.integers(0, len(VALID)), st.binary(max_size=64))
def test_a_valid_record_cut_anywhere_and_followed_by_any_bytes(
    store: StateStore, cut: int, tail: bytes
) -> None:
    outcome_is_sound(store, "shop.public.orders", key(1), VALID[:cut] + tail)


# -- any JSON shape in any column ----------------------------------------------------------

SCALARS = st.one_of(
    st.integers().map(str),
    st.integers(0, 6000).map(lambda n: "9" * n or "0"),
    st.tuples(st.integers(0, 10**6), st.integers(-(10**9), 10**9)).map(lambda t: f"{t[0]}e{t[1]}"),
    st.integers(0, 3000).map(lambda n: "0." + "0" * n + "1"),
    st.integers(0, 3000).map(lambda n: "1" * n + ".5"),
    st.text(max_size=20).map(json.dumps),
    st.sampled_from(
        [
            "NaN",
            "-Infinity",
            "null",
            "true",
            "1.5",
            "-0",
            "1e5000",
            '"__debezium_unavailable_value"',
            '"2024-06-03T14:20:11Z"',
            '"AQ=="',
            '"²"',
            '"\\ud800"',
            '"a\\udc00b"',
            '{"\\ud800": 1}',
            '""',
        ]
    ),
)


def nested(inner: str, depth: int, shape: str) -> str:
    if shape == "[":
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


JSON_TEXTS = st.builds(
    nested, SCALARS, st.integers(0, 3) | st.integers(0, 1500), st.sampled_from(["[", "{"])
)


@st.composite
def hostile_records(draw: st.DrawFn) -> tuple[str, bytes, bytes]:
    table = draw(st.sampled_from(sorted(ROWS)))
    row = ROWS[table](900_100)
    column = draw(st.sampled_from([*row, "extra_column"]))
    row[column] = _SLOT
    slot = draw(JSON_TEXTS).encode()
    # with schemas, a column the schema does not name is passed on as parsed
    value = schemaless(row, slot) if draw(st.booleans()) else with_schema(table, row, slot)
    record_key = key(900_100)
    if column == "id" or draw(st.integers(0, 9)) == 0:
        record_key = b'{"id":' + slot + b"}"
    return f"shop.public.{table}", record_key, value


@FUZZ
@given(hostile_records())
def test_any_json_in_any_column(store: StateStore, case: tuple[str, bytes, bytes]) -> None:
    outcome_is_sound(store, *case)


@FUZZ
@given(
    st.sampled_from(["", "-"]),
    st.text("0123456789", min_size=1, max_size=40),
    st.integers(-60, 30),
    st.integers(1, 50),
    st.integers(0, 50),
)
def test_a_decimal_is_kept_exactly_when_within_the_limits(
    store: StateStore, sign: str, digits: str, exponent: int, max_digits: int, max_scale: int
) -> None:
    text = f"{sign}{digits.lstrip('0') or '0'}E{exponent}"  # JSON: no leading zeros
    number = Decimal(text)
    _sign, kept, exp = number.as_tuple()
    assert isinstance(exp, int)
    within = len(kept) <= max_digits and (
        -exp <= max_scale if exp < 0 else kept == (0,) or -(2**63) <= int(number) < 2**64
    )
    value = schemaless(order(900_200, amount=_SLOT), text.encode())
    limits = RecordLimits(max_number_digits=max_digits, max_decimal_scale=max_scale)
    record = RawRecord("shop.public.orders", 0, 5, key(900_200), value)
    if not within:
        with pytest.raises(BadRecord, match="column amount: "):
            change_of(record, HINTS["shop.public.orders"], MAPPING, limits)
        return
    change = change_of(record, HINTS["shop.public.orders"], MAPPING, limits)
    assert isinstance(change, EntityChange) and change.row is not None
    assert change.row.fields["amount"] == number
    with open_batch(Obligations(store)) as batch:
        batch.apply(change)
    stored = store.get(change.kind, change.key)
    assert stored is not None and stored.row.fields["amount"] == number
