"""Undecodable records raise BadRecord with a reason a person can act on."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.changes.decode import decode_record, parse_hint
from consumer.errors import BadRecord
from schemas.debezium import Position
from testkit.debezium import field, record, struct, with_schema

SOURCE = {"connector": "postgresql", "ts_ms": 1, "db": "shop", "schema": "public", "table": "t"}


def reason_of(raw: Any, hints: dict[str, Any] | None = None) -> str:
    with pytest.raises(BadRecord) as caught:
        decode_record(raw, hints)
    assert caught.value.position == Position("shop.public.orders", 0, 7)
    return caught.value.reason


def test_value_that_is_not_json_says_where_not_what() -> None:
    # a record may hold personal data: the reason gives positions, never content
    reason = reason_of(record(None, {"id": 1}, raw_value=b"<order id='1'>" + b"x" * 100))
    assert reason == "value is not JSON: Expecting value at character 0 of 114"
    truncated = b'{"before":null,"after":{"id":1,"email":"ada@example.com"'
    reason = reason_of(record(None, {"id": 1}, raw_value=truncated))
    assert reason == f"value is not JSON: Expecting ',' delimiter at character {len(truncated)}" + (
        f" of {len(truncated)}"
    )


def test_key_that_is_not_json() -> None:
    raw = record({"id": 1, "status": "paid"})
    raw = type(raw)(raw.topic, raw.partition, raw.offset, b"id=1", raw.value)
    assert reason_of(raw) == "key is not JSON: Expecting value at character 0 of 4"


def test_unknown_op() -> None:
    value = {"before": None, "after": {"id": 1}, "source": SOURCE, "op": "x", "ts_ms": 1}
    assert reason_of(record(value, {"id": 1})) == "unknown op 'x'"
    assert reason_of(record({"id": 1, "__op": "z"}, {"id": 1})) == "unknown op 'z'"


def test_decimal_without_scale_parameter_names_the_column() -> None:
    schema = struct(
        "x.Value", [field("amount", "bytes", name="org.apache.kafka.connect.data.Decimal")]
    )
    reason = reason_of(record(with_schema(schema, {"amount": "AQ=="}), {"id": 1}))
    assert reason == "column amount: Decimal without scale parameter"


def test_wrong_value_type_names_column_and_type_not_value() -> None:
    schema = struct(
        "x.Value",
        [
            field("created_at", "int64", name="io.debezium.time.MicroTimestamp"),
        ],
    )
    reason = reason_of(record(with_schema(schema, {"created_at": "abc"}), {"id": 1}))
    assert (
        reason
        == "column created_at: MicroTimestamp expects an integer, got a string of 3 characters"
    )


def test_bad_value_through_a_hint_names_the_column() -> None:
    hints = {"created_at": parse_hint("epoch_micros")}
    reason = reason_of(record({"id": 1, "created_at": "abc"}, {"id": 1}), hints)
    assert (
        reason
        == "column created_at: MicroTimestamp expects an integer, got a string of 3 characters"
    )
    hints = {"amount": parse_hint("decimal(2)")}
    reason = reason_of(record({"id": 1, "amount": "@@@@"}, {"id": 1}), hints)
    assert reason == "column amount: Decimal expects base64 bytes, got a string of 4 characters"


def test_bad_key_column_says_it_is_in_the_key() -> None:
    hints = {"created_at": parse_hint("zoned_timestamp")}
    raw = record({"id": 1}, {"created_at": "yesterday"})
    assert (
        reason_of(raw, hints)
        == "key column created_at: ZonedTimestamp is not ISO-8601: a string of 9 characters"
    )


def test_value_that_is_not_an_object() -> None:
    assert reason_of(record([1, 2], {"id": 1})) == "value is a JSON list, not an object"


def test_tombstone_without_key() -> None:
    assert "tombstone without a key" in reason_of(record(None, None))


def test_schema_registry_wire_format_without_a_registry_says_which_key_to_set() -> None:
    reason = reason_of(record(None, {"id": 1}, raw_value=b"\x00\x00\x00\x00\x01\x02"))
    assert "set kafka.schema_registry.url" in reason


def test_a_value_that_starts_with_a_control_byte_is_neither_json_nor_avro() -> None:
    reason = reason_of(record(None, {"id": 1}, raw_value=b"\x01\x00\x00\x00\x01\x02"))
    assert reason.startswith("value starts with byte 0x01: neither JSON nor")


def test_timestamp_out_of_range() -> None:
    hints = {"t": parse_hint("epoch_micros")}
    reason = reason_of(record({"t": 9223372036854775807}, {"id": 1}), hints)
    assert reason == "column t: MicroTimestamp is out of the datetime range"
