"""The same change through both converters decodes to the same ChangeEvent.

Hypothesis draws a table (columns of every Connect and Debezium type the
decoder knows, optional or not), a row change (snapshot read, create, update,
delete, tombstone) and a framing; the change is written as the JsonConverter
writes it (schemas on) and as the Avro converter does (testkit.avro, whose
schemas equal the registry's of real captures: test_decode_avro_capture.py),
and both must decode to equal ChangeEvents.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.changes.decode import AvroReader, AvroSchema, decode_record
from consumer.changes.decode.logical import PLACEHOLDER, PLACEHOLDER_BYTES
from schemas.debezium import ChangeEvent, RawRecord
from testkit.avro import LocalRegistry, avro_twin, json_bytes
from testkit.debezium import envelope_schema, field, struct, unscaled_bytes

TOPIC = "prop.public.things"
KEY_SCHEMA = struct(
    "prop.public.things.Key", [field("id", "int64", optional=False)], optional=False
)
SOURCE = {
    "version": "3.6.1.Final",
    "connector": "postgresql",
    "name": "prop",
    "ts_ms": 1717430400123,
    "snapshot": "false",
    "db": "shop",
    "schema": "public",
    "table": "things",
    "lsn": 24023928,
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _zoned(moment: datetime, digits: int) -> str:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}"[:digits]
    return text + (f".{fraction}" if digits else "") + "Z"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
moments = st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
)
nano_moments = st.datetimes(  # what an int64 of nanoseconds holds
    min_value=datetime(1678, 1, 1), max_value=datetime(2262, 1, 1), timezones=st.just(UTC)
)
float32_texts = st.builds(
    lambda digits, exponent, negative: Decimal(f"{'-' if negative else ''}{digits}E{exponent}"),
    st.integers(0, 999_999),
    st.integers(-30, 30),
    st.booleans(),
)


@st.composite
def column(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], st.SearchStrategy[Any]]:
    """A column's Connect schema and a strategy of its JsonConverter values."""
    kind = draw(
        st.sampled_from(
            [
                "int8", "int16", "int32", "int64", "boolean", "string", "bytes", "float32",
                "float64", "decimal", "variable", "date", "time", "microtime", "nanotime",
                "timestamp", "microtimestamp", "nanotimestamp", "zoned", "zonedtime", "json",
                "enum", "uuid", "tinyint1", "ints", "texts", "map", "point",
            ]
        )
    )  # fmt: skip
    optional = draw(st.booleans())
    simple: dict[str, tuple[dict[str, Any], st.SearchStrategy[Any]]] = {
        "int8": (field(name, "int8"), st.integers(-(2**7), 2**7 - 1)),
        "int16": (field(name, "int16"), st.integers(-(2**15), 2**15 - 1)),
        "int32": (field(name, "int32"), st.integers(-(2**31), 2**31 - 1)),
        "int64": (field(name, "int64"), st.integers(-(2**63), 2**63 - 1)),
        "boolean": (field(name, "boolean"), st.booleans()),
        "string": (field(name, "string"), st.text(max_size=20) | st.just(PLACEHOLDER)),
        "bytes": (
            field(name, "bytes"),
            (st.binary(max_size=20) | st.just(PLACEHOLDER_BYTES)).map(_b64),
        ),
        "float32": (field(name, "float32"), float32_texts),
        "float64": (
            field(name, "float64"),
            st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Decimal(repr(f))),
        ),
        "variable": (
            struct(
                "io.debezium.data.VariableScaleDecimal",
                [field("scale", "int32", optional=False), field("value", "bytes", optional=False)],
                doc="Variable scaled decimal",
                version=1,
            )
            | {"field": name},
            st.builds(
                lambda scale, unscaled: {"scale": scale, "value": _b64(unscaled_bytes(unscaled))},
                st.integers(0, 20),
                st.integers(-(10**30), 10**30),
            ),
        ),
        "date": (
            field(name, "int32", name="io.debezium.time.Date", version=1),
            st.integers(-700_000, 2_900_000),
        ),
        "time": (
            field(name, "int32", name="io.debezium.time.Time", version=1),
            st.integers(0, 86_399_999),
        ),
        "microtime": (
            field(name, "int64", name="io.debezium.time.MicroTime", version=1),
            st.integers(0, 86_400_000_000),
        ),
        "nanotime": (
            field(name, "int64", name="io.debezium.time.NanoTime", version=1),
            st.integers(0, 86_399_999_999_999),
        ),
        "timestamp": (
            field(name, "int64", name="io.debezium.time.Timestamp", version=1),
            moments.map(lambda m: (m - EPOCH) // timedelta(milliseconds=1)),
        ),
        "microtimestamp": (
            field(name, "int64", name="io.debezium.time.MicroTimestamp", version=1),
            moments.map(lambda m: (m - EPOCH) // timedelta(microseconds=1)),
        ),
        "nanotimestamp": (
            field(name, "int64", name="io.debezium.time.NanoTimestamp", version=1),
            nano_moments.map(lambda m: (m - EPOCH) // timedelta(microseconds=1) * 1000 + 7),
        ),
        "zoned": (
            field(name, "string", name="io.debezium.time.ZonedTimestamp", version=1),
            st.builds(_zoned, moments, st.integers(0, 6)),
        ),
        "zonedtime": (
            field(name, "string", name="io.debezium.time.ZonedTime", version=1),
            moments.map(lambda m: m.strftime("%H:%M:%S.%fZ")),
        ),
        "json": (
            field(name, "string", name="io.debezium.data.Json", version=1),
            json_values.map(json.dumps),
        ),
        "enum": (
            field(
                name,
                "string",
                name="io.debezium.data.Enum",
                version=1,
                parameters={"allowed": "pending,paid,shipped"},
            ),
            st.sampled_from(["pending", "paid", "shipped"]),
        ),
        "uuid": (
            field(name, "string", name="io.debezium.data.Uuid", version=1),
            st.uuids().map(str) | st.just(str(uuid.UUID(int=0))),
        ),
        "tinyint1": (
            field(
                name,
                "int16",
                parameters={
                    "__debezium.source.column.type": "TINYINT",
                    "__debezium.source.column.length": "1",
                },
            ),
            st.sampled_from([0, 1]),
        ),
        "ints": (
            {"type": "array", "items": {"type": "int32", "optional": True}, "field": name},
            st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), max_size=4),
        ),
        "texts": (
            {"type": "array", "items": {"type": "string", "optional": False}, "field": name},
            st.lists(st.text(max_size=5), max_size=4) | st.just([PLACEHOLDER]),
        ),
        "map": (
            {
                "type": "map",
                "keys": {"type": "string", "optional": False},
                "values": {"type": "int64", "optional": True},
                "field": name,
            },
            st.dictionaries(st.text(max_size=5), st.none() | st.integers(0, 99), max_size=3),
        ),
        "point": (
            struct(
                "io.debezium.data.geometry.Point",
                [
                    field("x", "float64", optional=False),
                    field("y", "float64", optional=False),
                    field("wkb", "bytes"),
                    field("srid", "int32"),
                ],
                version=1,
            )
            | {"field": name},
            st.fixed_dictionaries(
                {
                    "x": st.floats(-180, 180).map(lambda f: Decimal(repr(f))),
                    "y": st.floats(-90, 90).map(lambda f: Decimal(repr(f))),
                    "wkb": st.none() | st.binary(min_size=1, max_size=8).map(_b64),
                    "srid": st.none() | st.integers(0, 9999),
                }
            ),
        ),
    }
    if kind == "decimal":
        scale = draw(st.integers(-2, 12))
        schema = field(
            name,
            "bytes",
            name="org.apache.kafka.connect.data.Decimal",
            version=1,
            parameters={"scale": str(scale), "connect.decimal.precision": "40"},
        )
        values: st.SearchStrategy[Any] = st.integers(-(10**35), 10**35).map(
            lambda unscaled: _b64(unscaled_bytes(unscaled))
        ) | st.just(_b64(PLACEHOLDER_BYTES))
    else:
        schema, values = simple[kind]
    schema = {**schema, "optional": optional}
    return schema, (st.none() | values) if optional else values


@st.composite
def changes(draw: st.DrawFn) -> tuple[RawRecord, str]:
    count = draw(st.integers(1, 6))
    columns = [draw(column(f"c{i}")) for i in range(count)]
    row_fields = [field("id", "int64", optional=False), *(schema for schema, _ in columns)]

    def row(row_id: int) -> dict[str, Any]:
        values = {"id": row_id}
        for schema, strategy in columns:
            values[schema["field"]] = draw(strategy)
        return values

    row_id = draw(st.integers(0, 2**40))
    op = draw(st.sampled_from(["r", "c", "u", "d", "tombstone"]))
    key = json_bytes({"schema": KEY_SCHEMA, "payload": {"id": row_id}})
    if op == "tombstone":
        value = None
    else:
        before = row(row_id) if op in ("u", "d") else None
        after = row(row_id) if op != "d" else None
        payload = {
            "before": before,
            "after": after,
            "source": SOURCE,
            "transaction": None,
            "op": op,
            "ts_ms": 1717430400200,
        }
        schema = envelope_schema("prop.public.things", row_fields, "postgresql")
        value = json_bytes({"schema": schema, "payload": payload})
    framing = draw(st.sampled_from(["confluent", "apicurio"]))
    return RawRecord(TOPIC, 2, 40, key, value), framing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes())
def test_a_change_decodes_to_the_same_event_from_json_and_from_avro(
    change: tuple[RawRecord, str],
) -> None:
    record, framing = change
    registry = LocalRegistry()
    twin = avro_twin(record, registry, framing)
    schemas = {i: AvroSchema(i, text) for i, text in registry.by_id.items()}
    from_json = decode_record(record)
    from_avro = decode_record(twin, None, AvroReader(framing, schemas))  # type: ignore[arg-type]
    assert isinstance(from_json, ChangeEvent) and isinstance(from_avro, ChangeEvent)
    # Apicurio's framing adds its ids in headers: everything else is the same
    assert replace(from_avro, headers=from_json.headers) == from_json
    # the Avro record is the smaller, whatever the row
    assert len(twin.value or b"") < len(record.value or b"x")
