"""Every hostile record of the corpus is a bad record with its reason; its neighbours are not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.changes.decode import ColumnHint, parse_hint
from consumer.changes.limits import RecordLimits
from consumer.changes.mapping import Mapping
from consumer.changes.records import change_of
from consumer.errors import BadRecord
from consumer.state.batch import open_batch
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from schemas.debezium import Position, RawRecord
from schemas.entities import EntityChange
from schemas.rfmcube import dumps
from testkit.poison import (
    POISON,
    STRUCT_COLUMN,
    Poison,
    customer,
    hostile_but_valid,
    item,
    key,
    nested_struct_fields,
    order,
    schemaless,
    with_schema,
)

# Values of sent columns in the corpus: a reason must never repeat one.
COLUMN_VALUES = ("Ada", "Poison", "555-0100", "example.com", "SKU-7", "nike", "EUR", "9" * 30, "²")


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return Mapping.load(None)


@pytest.fixture(scope="module")
def hints(mapping: Mapping) -> dict[str, dict[str, ColumnHint]]:
    return {
        topic: {column: parse_hint(hint) for column, hint in mapping.hints_for(topic).items()}
        for topic in mapping.topics()
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    state = StateStore(tmp_path / "state.db")
    yield state
    state.close()


def raw(topic: str, record_key: bytes | None, value: bytes | None, offset: int = 3) -> RawRecord:
    return RawRecord(topic, 1, offset, record_key, value)


def stored_and_read_back(store: StateStore, change: EntityChange) -> None:
    """What the service does with a change: store it, read it back, write it as JSON."""
    with open_batch(Obligations(store)) as batch:
        batch.apply(change)
    assert change.row is not None
    stored = store.get(change.kind, change.key)
    assert stored is not None
    assert dumps(stored.row.fields) == dumps(change.row.fields)


@pytest.mark.parametrize("poison", POISON, ids=lambda p: p.name)
def test_each_poison_is_a_bad_record_that_says_why_and_where(
    poison: Poison, mapping: Mapping, hints: dict[str, dict[str, ColumnHint]]
) -> None:
    topic = poison.topic()
    with pytest.raises(BadRecord) as caught:
        change_of(raw(topic, poison.key, poison.value), hints.get(topic), mapping, RecordLimits())
    reason = caught.value.reason
    assert poison.reason in reason
    assert caught.value.position == Position(topic, 1, 3)
    assert len(reason) < 300
    assert not [value for value in COLUMN_VALUES if value in reason], reason


@pytest.mark.parametrize("poison", POISON, ids=lambda p: p.name)
def test_the_same_record_without_its_poison_is_stored_and_read_back(
    poison: Poison, mapping: Mapping, hints: dict[str, dict[str, ColumnHint]], store: StateStore
) -> None:
    topic = poison.topic()
    record = raw(topic, poison.neighbour_key, poison.neighbour_value)
    change = change_of(record, hints.get(topic), mapping, RecordLimits())
    assert isinstance(change, EntityChange)
    if change.row is not None:  # not a delete
        stored_and_read_back(store, change)


@pytest.mark.parametrize("converter", ["schemaless", "schemas"])
def test_poison_in_a_column_never_sent_changes_nothing(
    converter: str, mapping: Mapping, hints: dict[str, dict[str, ColumnHint]], store: StateStore
) -> None:
    topic = "shop.public.customers"
    row = customer(17)
    plain = schemaless(row) if converter == "schemaless" else with_schema("customers", row)
    expected = change_of(raw(topic, key(17), plain), hints[topic], mapping, RecordLimits())
    assert isinstance(expected, EntityChange) and expected.row is not None
    for name, value in hostile_but_valid(plain):
        change = change_of(raw(topic, key(17), value), hints[topic], mapping, RecordLimits())
        assert isinstance(change, EntityChange), name
        assert change.row == expected.row, name
    stored_and_read_back(store, expected)


def test_limits_are_configurable_and_named_in_the_reason(
    mapping: Mapping, hints: dict[str, dict[str, ColumnHint]]
) -> None:
    topic = "shop.public.customers"
    value = schemaless(customer(5, notes="x" * 2000))
    record = raw(topic, key(5), value)
    assert isinstance(change_of(record, hints[topic], mapping, RecordLimits()), EntityChange)
    with pytest.raises(BadRecord, match=r"more than 1000 \(limits.max_record_bytes\)"):
        change_of(record, hints[topic], mapping, RecordLimits(max_record_bytes=1000))
    nested = schemaless(customer(5, phone={"a": {"b": ["c"]}}))
    deep = raw(topic, key(5), nested)
    assert isinstance(change_of(deep, hints[topic], mapping, RecordLimits()), EntityChange)
    with pytest.raises(BadRecord, match=r"column phone: JSON nested deeper than 2 levels"):
        change_of(deep, hints[topic], mapping, RecordLimits(max_json_depth=2))


SECRET = "secret-4111111111111111"


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [
        ("customers", "created_at", SECRET),  # zoned_timestamp hint
        ("customers", "created_at", {"card": SECRET}),
        ("customers", "newsletter", SECRET),  # bool hint
        ("customers", "email", [SECRET]),
        ("customers", "id", {"x": SECRET}),  # the key column, as text
        ("orders", "amount", SECRET + "=="),  # decimal(2) hint: base64
        ("orders", "amount", {"scale": SECRET, "value": SECRET}),
        ("orders", "status", [SECRET]),
        ("order_items", "quantity", SECRET),  # int hint
        ("order_items", "order_id", {"x": SECRET}),
    ],
)
def test_a_reason_never_quotes_the_value_of_a_column(
    table: str,
    column: str,
    value: object,
    mapping: Mapping,
    hints: dict[str, dict[str, ColumnHint]],
) -> None:
    topic = f"shop.public.{table}"
    row = {"customers": customer, "orders": order, "order_items": item}[table](7, **{column: value})
    with pytest.raises(BadRecord) as caught:
        change_of(raw(topic, key(7), schemaless(row)), hints[topic], mapping, RecordLimits())
    assert f"column {column}" in caught.value.reason or "key" in caught.value.reason
    assert "4111" not in caught.value.reason, caught.value.reason


def test_a_schema_nested_deep_compiles_in_linear_time(
    mapping: Mapping, hints: dict[str, dict[str, ColumnHint]]
) -> None:
    # each level was compiled twice per field: 16 levels took seconds, 21 took 7 minutes
    topic = "shop.public.customers"
    value = with_schema("customers", customer(8), nested_struct_fields(16), notes=STRUCT_COLUMN)
    started = time.process_time()
    change = change_of(raw(topic, key(8), value), hints[topic], mapping, RecordLimits())
    assert time.process_time() - started < 1.0
    assert isinstance(change, EntityChange)
