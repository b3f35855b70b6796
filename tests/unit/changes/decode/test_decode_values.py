"""Column values: logical types from schemas, hints for schemaless columns, and the traps."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest

from consumer.changes.decode import decode_record, parse_hint
from schemas.debezium import UNAVAILABLE, ChangeEvent
from testkit.debezium import encode_decimal, field, record, struct, with_schema

PLACEHOLDER = "__debezium_unavailable_value"


def decode_column(schema_field: dict[str, Any], value: Any) -> Any:
    """Decode one column sent in a flattened row with a schema."""
    schema = struct("shop.public.t.Value", [field("id", "int64", optional=False), schema_field])
    raw = record(with_schema(schema, {"id": 1, schema_field["field"]: value}), {"id": 1})
    event = decode_record(raw)
    assert isinstance(event, ChangeEvent) and event.after is not None
    return event.after[schema_field["field"]]


def decode_hinted(hint: str | None, value: Any, raw_value: bytes | None = None) -> Any:
    """Decode one column sent without a schema, with or without a hint."""
    hints = {} if hint is None else {"c": parse_hint(hint)}
    event = decode_record(record({"id": 1, "c": value}, {"id": 1}, raw_value=raw_value), hints)
    assert isinstance(event, ChangeEvent) and event.after is not None
    return event.after["c"]


def decimal_field(scale: str = "2") -> dict[str, Any]:
    return field(
        "c",
        "bytes",
        name="org.apache.kafka.connect.data.Decimal",
        parameters={"scale": scale, "connect.decimal.precision": "12"},
    )


def logical(name: str, kind: str) -> dict[str, Any]:
    return field("c", kind, name=name, version=1)


# --- decimals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        ("IY0=", Decimal("85.89")),
        ("AA==", Decimal("0.00")),
        ("/w==", Decimal("-0.01")),
        ("AIA=", Decimal("1.28")),
        ("/4A=", Decimal("-1.28")),
    ],
)
def test_connect_decimal_base64_is_exact(encoded: str, expected: Decimal) -> None:
    assert decode_column(decimal_field(), encoded) == expected
    assert str(decode_column(decimal_field(), encoded)) == str(expected)


def test_connect_decimal_as_json_number_with_numeric_format_stays_exact() -> None:
    raw = (
        b'{"schema":{"type":"struct","name":"x.Value","fields":[{"type":"int64","field":"id"},'
        b'{"type":"bytes","field":"c","name":"org.apache.kafka.connect.data.Decimal",'
        b'"parameters":{"scale":"2"}}]},"payload":{"id":1,"c":85.85}}'
    )
    event = decode_record(record(None, {"id": 1}, raw_value=raw))
    assert isinstance(event, ChangeEvent) and event.after is not None
    assert event.after["c"] == Decimal("85.85") and isinstance(event.after["c"], Decimal)


def test_variable_scale_decimal_struct() -> None:
    schema_field = field(
        "c",
        "struct",
        name="io.debezium.data.VariableScaleDecimal",
        fields=[field("scale", "int32", optional=False), field("value", "bytes", optional=False)],
    )
    value = {
        "scale": 3,
        "value": base64.b64encode((-123456).to_bytes(3, "big", signed=True)).decode(),
    }
    assert decode_column(schema_field, value) == Decimal("-123.456")
    assert decode_hinted("decimal", value) == Decimal("-123.456")


def test_string_decimal_mode_passes_through_as_str_without_a_hint() -> None:
    assert decode_column(field("c", "string"), "1234.50") == "1234.50"
    assert decode_hinted(None, "1234.50") == "1234.50"
    assert decode_hinted("decimal(2)", "1234.50") == Decimal("1234.50")


def test_double_mode_and_plain_json_floats_become_decimals_of_their_text() -> None:
    assert decode_column(field("c", "float64"), Decimal("85.85")) == Decimal("85.85")
    precise = Decimal("12345678901234567.891")  # more digits than a binary float holds
    assert decode_column(field("c", "float64"), precise) == precise
    result = decode_hinted(None, Decimal("0.1"))
    assert result == Decimal("0.1") and isinstance(result, Decimal)


def test_decimal_hint_reads_base64_number_and_string() -> None:
    assert decode_hinted("decimal(2)", encode_decimal(Decimal("85.85"), 2)) == Decimal("85.85")
    assert decode_hinted("decimal(2)", Decimal("85.85")) == Decimal("85.85")
    assert decode_hinted("decimal(2)", 85) == Decimal(85)
    assert decode_hinted("decimal(0)", "1234") == Decimal(1234)
    assert decode_hinted("decimal(2)", "-0.50") == Decimal("-0.50")


def test_integers_beyond_64_bits_stay_exact() -> None:
    raw = b'{"id":1,"c":123456789012345678901234567890}'
    assert decode_hinted(None, None, raw_value=raw) == 123456789012345678901234567890


# --- dates and times ------------------------------------------------------------------

MOMENT = datetime(2024, 6, 3, 14, 20, 11, 482913, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "kind", "value", "expected"),
    [
        ("io.debezium.time.Date", "int32", 19877, date(2024, 6, 3)),
        ("io.debezium.time.Time", "int32", 51_611_482, time(14, 20, 11, 482000)),
        ("io.debezium.time.MicroTime", "int64", 51_611_482_913, time(14, 20, 11, 482913)),
        ("io.debezium.time.NanoTime", "int64", 51_611_482_913_999, time(14, 20, 11, 482913)),
        ("io.debezium.time.Timestamp", "int64", 1717424411482, MOMENT.replace(microsecond=482000)),
        ("io.debezium.time.MicroTimestamp", "int64", 1717424411482913, MOMENT),
        ("io.debezium.time.NanoTimestamp", "int64", 1717424411482913789, MOMENT),
        ("io.debezium.time.ZonedTimestamp", "string", "2024-06-03T14:20:11.482913Z", MOMENT),
        ("io.debezium.time.ZonedTime", "string", "16:20:11.5+02:00", time(14, 20, 11, 500000, UTC)),
        (
            "org.apache.kafka.connect.data.Timestamp",
            "int64",
            1717424411482,
            MOMENT.replace(microsecond=482000),
        ),
        ("org.apache.kafka.connect.data.Date", "int32", 0, date(1970, 1, 1)),
        ("org.apache.kafka.connect.data.Time", "int32", 0, time(0, 0)),
        (
            "io.debezium.time.MicroTimestamp",
            "int64",
            -1,
            datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ),
    ],
)
def test_temporal_logical_types(name: str, kind: str, value: Any, expected: Any) -> None:
    decoded = decode_column(logical(name, kind), value)
    assert decoded == expected
    if isinstance(expected, datetime):
        assert decoded.tzinfo is UTC  # a UTC wall clock, never the machine's local time


@pytest.mark.parametrize("digits", range(10))
@pytest.mark.parametrize("zone", ["Z", "+02:00", "-05:30"])
def test_zoned_timestamp_with_0_to_9_fractional_digits(digits: int, zone: str) -> None:
    fraction = "." + "123456789"[:digits] if digits else ""
    text = f"2024-06-03T14:20:11{fraction}{zone}"
    offsets = {"Z": (0, 0), "+02:00": (-2, 0), "-05:30": (5, 30)}
    hours, minutes = offsets[zone]
    micro = int(("123456789"[:digits] + "000000")[:6])
    wall = datetime(2024, 6, 3, 14 + hours, 20 + minutes, 11, micro, tzinfo=UTC)  # in UTC
    assert decode_column(logical("io.debezium.time.ZonedTimestamp", "string"), text) == wall
    assert decode_hinted("zoned_timestamp", text) == wall


@pytest.mark.parametrize(
    ("hint", "value", "expected"),
    [
        ("epoch_millis", 1717424411482, MOMENT.replace(microsecond=482000)),
        ("epoch_micros", 1717424411482913, MOMENT),
        ("epoch_nanos", 1717424411482913000, MOMENT),
        ("date_days", 19877, date(2024, 6, 3)),
        ("time_millis", 86_399_999, time(23, 59, 59, 999000)),
        ("time_micros", 0, time(0)),
        ("time_nanos", 1_000, time(0, 0, 0, 1)),
        ("bool", 1, True),
        ("bool", 0, False),
        ("bool", True, True),
        ("bool", "false", False),
        ("string", 42, "42"),
        ("int", "42", 42),
        ("json", '{"a": [1, 2.50]}', {"a": [1, Decimal("2.50")]}),
        ("json", {"a": 1}, {"a": 1}),
    ],
)
def test_hints(hint: str, value: Any, expected: Any) -> None:
    decoded = decode_hinted(hint, value)
    assert decoded == expected and type(decoded) is type(expected)


def test_unknown_hint_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown column hint 'decimal\(x\)'.*epoch_micros"):
        parse_hint("decimal(x)")
    assert str(parse_hint(" decimal( 2 ) ")) == "decimal(2)"


# --- MySQL booleans, JSON columns ---------------------------------------------------------

TINYINT_ONE = {"__debezium.source.column.type": "TINYINT", "__debezium.source.column.length": "1"}


@pytest.mark.parametrize("kind", ["int8", "int16"])
def test_mysql_tinyint1_is_a_boolean(kind: str) -> None:
    assert decode_column(field("c", kind, parameters=TINYINT_ONE), 1) is True
    assert decode_column(field("c", kind, parameters=TINYINT_ONE), 0) is False
    assert decode_column(field("c", "boolean"), True) is True
    # a tinyint(4) is a number
    params = {**TINYINT_ONE, "__debezium.source.column.length": "4"}
    assert decode_column(field("c", kind, parameters=params), 1) == 1


def test_json_column_arrives_as_a_string_holding_json() -> None:
    json_field = logical("io.debezium.data.Json", "string")
    text = '{"tags": ["vip"], "score": 9.75, "n": null}'
    assert decode_column(json_field, text) == {"tags": ["vip"], "score": Decimal("9.75"), "n": None}
    assert decode_column(json_field, "[1, 2]") == [1, 2]


# --- the unavailable (unchanged TOAST) placeholder ------------------------------------


def test_unchanged_toast_placeholder_becomes_unavailable_in_every_form() -> None:
    as_base64 = base64.b64encode(PLACEHOLDER.encode()).decode()
    cases = [
        (field("c", "string"), PLACEHOLDER),
        (logical("io.debezium.data.Json", "string"), PLACEHOLDER),
        (field("c", "bytes"), as_base64),  # bytea: the placeholder's bytes, base64 in JSON
        (field("c", "array", items={"type": "string"}), [PLACEHOLDER]),
        (field("c", "array", items={"type": "int32"}), list(PLACEHOLDER.encode())),
        (
            field("c", "map", keys={"type": "string"}, values={"type": "string"}),
            {PLACEHOLDER: PLACEHOLDER},
        ),
        (logical("io.debezium.data.Uuid", "string"), "b68a35a7-17ad-35b3-af2a-ae46edb4545a"),
    ]
    for schema_field, value in cases:
        assert decode_column(schema_field, value) is UNAVAILABLE, schema_field
        assert decode_hinted(None, value) is UNAVAILABLE
    assert decode_hinted("json", PLACEHOLDER) is UNAVAILABLE
    assert decode_column(field("c", "string"), "an ordinary text") == "an ordinary text"
