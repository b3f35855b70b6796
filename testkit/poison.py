"""Hostile records of the reference shop's topics, one per known way to break a record.

Each :class:`Poison` is one Kafka record (key and value bytes) that must become
a dead letter whose reason holds ``reason``, and ``neighbour``: the same
record without its poison, which must map to a change. Ids start at 900001
so that none names a row of a synthetic shop (testkit.shop).

:func:`hostile_but_valid` turns a valid customer record into records that
look hostile but hold the poison only in a column the mapping never sends:
they must map to the same change as the original.

The cases come from issue 9 (and a review of the decoder, the mapper and the
store): numbers that expand or overflow, JSON nested past every parser's
depth, text that is not UTF-8, records over the size limit, and the plain
malformed records Debezium users meet (truncated JSON, a key that is not
JSON, a timestamp of the wrong type).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.changes.limits import RecordLimits
from schemas.debezium import RawRecord
from testkit.avro import Registry, avro_twin
from testkit.shop import COLUMNS

TABLES = ("customers", "orders", "order_items")
CREATED = "2026-01-05T09:00:00Z"
# Replaced in the JSON text by a value orjson cannot write (nested past 254 levels)
_SLOT = "@@poison@@"


@dataclass(frozen=True)
class Poison:
    name: str
    table: str  # customers, orders or order_items
    key: bytes | None
    value: bytes | None
    reason: str  # a fragment of the dead-letter reason
    neighbour_key: bytes  # the same record without the poison: a valid change
    neighbour_value: bytes | None

    def topic(self, prefix: str = "shop") -> str:
        return f"{prefix}.public.{self.table}"


def decimal_base64(unscaled: int) -> str:
    """Connect's Decimal bytes: big-endian two's complement of the unscaled value."""
    size = (unscaled.bit_length() if unscaled >= 0 else (-unscaled - 1).bit_length()) // 8 + 1
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


def customer(row_id: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": row_id,
        "email": f"poison{row_id}@example.com",
        "first_name": "Ada",
        "last_name": "Poison",
        "phone": "555-0100",
        "password_hash": "x",
        "newsletter": True,
        "notes": None,
        "created_at": CREATED,
        "updated_at": CREATED,
        **changes,
    }


def order(row_id: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": row_id,
        "customer_id": None,
        "customer_email": f"guest{row_id}@example.com",
        "status": "10",
        "status_label": "Pending",
        "amount": decimal_base64(1250),
        "currency": "EUR",
        "delivery_province": "MI",
        "created_at": CREATED,
        "updated_at": CREATED,
        **changes,
    }


def item(row_id: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": row_id,
        "order_id": row_id,
        "product_id": 7,
        "sku": "SKU-7",
        "brand": "nike",
        "quantity": 1,
        "unit_price": decimal_base64(1250),
        **changes,
    }


def _envelope(row: dict[str, Any]) -> dict[str, Any]:
    source = {"connector": "postgresql", "db": "shop", "schema": "public", "ts_ms": 1}
    return {"before": None, "after": row, "source": source, "op": "c", "ts_ms": 2}


def _schema(table: str, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    row = {
        "type": "struct",
        "optional": True,
        "name": f"shop.public.{table}.Value",
        "fields": [
            {**schema, **overrides.get(name, {}), "field": name} for name, schema in COLUMNS[table]
        ],
    }
    return {
        "type": "struct",
        "optional": False,
        "name": f"shop.public.{table}.Envelope",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {"type": "struct", "optional": False, "field": "source", "fields": []},
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
    }


def schemaless(row: dict[str, Any], slot: bytes | None = None) -> bytes:
    """The JSON converter without schemas; ``slot`` replaces the placeholder text."""
    return _fill(orjson.dumps(_envelope(row)), slot)


def with_schema(
    table: str, row: dict[str, Any], slot: bytes | None = None, **overrides: dict[str, Any]
) -> bytes:
    """The JSON converter with schemas; ``overrides`` change a column's schema."""
    value = {"schema": _schema(table, overrides), "payload": _envelope(row)}
    return _fill(orjson.dumps(value), slot)


def _fill(data: bytes, slot: bytes | None) -> bytes:
    if slot is None:
        return data
    marker = orjson.dumps(_SLOT)
    assert marker in data  # the row schema is there twice: before and after
    return data.replace(marker, slot)


def key(row_id: int) -> bytes:
    return orjson.dumps({"id": row_id})


def nested_arrays(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def nested_struct_fields(depth: int) -> bytes:
    """The JSON text of a struct's ``fields``: a struct in a struct... ``depth`` deep,
    around a Decimal (written by hand: orjson stops at 254 levels)."""
    text = (
        b'[{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal",'
        b'"parameters":{"scale":"2"},"field":"amount"}]'
    )
    for _ in range(depth):
        text = b'[{"type":"struct","optional":true,"field":"inner","fields":' + text + b"}]"
    return text


# with_schema(..., slot, notes=STRUCT_COLUMN): the notes column as a nested struct
STRUCT_COLUMN = {"type": "struct", "optional": True, "fields": _SLOT}


def _surrogate(row: dict[str, Any]) -> bytes:
    # json (not orjson) writes a lone surrogate, as the \ud800 escape any JSON writer may emit
    return json.dumps(_envelope(row)).encode()


def _cases() -> list[Poison]:
    cases: list[Poison] = []

    def add(
        name: str,
        table: str,
        value: bytes | None,
        reason: str,
        neighbour: bytes | None,
        record_key: bytes | None = None,
    ) -> None:
        row_id = 900_001 + len(cases)
        plain_key = key(row_id)
        poison_key = plain_key if record_key is None else record_key
        cases.append(Poison(name, table, poison_key, value, reason, plain_key, neighbour))

    def next_id() -> int:
        return 900_001 + len(cases)

    n = next_id()
    add(
        "int hint: a superscript digit",
        "order_items",
        schemaless(item(n, quantity="²")),
        "column quantity: int expects an integer",
        schemaless(item(n, quantity="2")),
    )
    n = next_id()
    add(
        "int hint: 5,000 digits",
        "order_items",
        schemaless(item(n, quantity="9" * 5000)),
        "column quantity: int expects an integer",
        schemaless(item(n, quantity="9")),
    )
    n = next_id()
    add(
        "Connect Decimal of 4,400 digits with a scale",
        "orders",
        with_schema("orders", order(n, amount=decimal_base64(10**4400))),
        "column amount: Decimal of more than 4300 digits",
        with_schema("orders", order(n)),
    )
    n = next_id()
    add(
        "decimal(2) hint: base64 of 4,400 digits",
        "orders",
        schemaless(order(n, amount=decimal_base64(10**4400))),
        "column amount: Decimal of more than 4300 digits",
        schemaless(order(n)),
    )
    n = next_id()
    add(
        "a JSON array nested 2,000 deep in the payload",
        "customers",
        schemaless(customer(n, notes=_SLOT), nested_arrays(2000)),
        "value is not JSON: nested too deeply",
        schemaless(customer(n, notes=_SLOT), nested_arrays(20)),
    )
    n = next_id()
    add(
        "a descriptor nested 300 deep",
        "customers",
        schemaless(customer(n, phone=_SLOT), nested_arrays(300)),
        "column phone: JSON nested deeper than 64 levels (limits.max_json_depth)",
        schemaless(customer(n, phone=_SLOT), nested_arrays(60)),
    )
    n = next_id()
    add(
        "a descriptor nested 500 deep around a float",
        "customers",
        schemaless(customer(n, phone=_SLOT), nested_arrays(500, b"1.5")),
        "column phone: JSON nested deeper than 64 levels (limits.max_json_depth)",
        schemaless(customer(n, phone=_SLOT), nested_arrays(5, b"1.5")),
    )
    n = next_id()
    add(
        "a lone surrogate in a sent column",
        "customers",
        _surrogate(customer(n, first_name="Ada\ud800")),
        "column first_name: text with a lone surrogate",
        _surrogate(customer(n, first_name="Ad\u00e0")),
    )
    n = next_id()
    add(
        "a lone surrogate in the email",
        "customers",
        _surrogate(customer(n, email="a\udc00@example.com")),
        "column email: text with a lone surrogate",
        _surrogate(customer(n)),
    )
    n = next_id()
    add(
        "a lone surrogate in a guest's email (not a field)",
        "orders",
        _surrogate(order(n, customer_email="g\udc00@example.com")),
        "email: text with a lone surrogate",
        _surrogate(order(n)),
    )
    n = next_id()
    add(
        "a tombstone whose key holds a lone surrogate",
        "customers",
        None,
        "key: text with a lone surrogate",
        None,
        record_key=json.dumps({"id": f"c{n}\ud800"}).encode(),
    )
    n = next_id()
    add(
        "an integer-valued Decimal of 5,001 digits (1e5000)",
        "customers",
        schemaless(customer(n, phone=_SLOT), b"1e5000"),
        "column phone: an integer outside the 64-bit range",
        schemaless(customer(n, phone=_SLOT), b"1e3"),
    )
    n = next_id()
    add(
        "an integer of 30 digits in a descriptor",
        "customers",
        schemaless(customer(n, phone=_SLOT), b"123456789012345678901234567890"),
        "column phone: an integer outside the 64-bit range",
        schemaless(customer(n, phone=_SLOT), b"1234567890123456789"),
    )
    n = next_id()
    add(
        "an exponent near 10^9 (1e999999999)",
        "order_items",
        schemaless(item(n, unit_price=_SLOT), b"1e999999999"),
        "column unit_price: an integer outside the 64-bit range",
        schemaless(item(n, unit_price=_SLOT), b"1e1"),
    )
    n = next_id()
    add(
        "a Connect Decimal scale near 10^9",
        "orders",
        with_schema(
            "orders",
            order(n),
            amount={"parameters": {"scale": "999999999", "connect.decimal.precision": "12"}},
        ),
        "column amount: a number with 999999999 decimal places, more than 1000 "
        "(limits.max_decimal_scale)",
        with_schema("orders", order(n), amount={"parameters": {"scale": "3"}}),
    )
    n = next_id()
    add(
        "a Connect Decimal scale near -10^9",
        "orders",
        with_schema("orders", order(n), amount={"parameters": {"scale": "-999999999"}}),
        "column amount: an integer outside the 64-bit range",
        with_schema("orders", order(n), amount={"parameters": {"scale": "-1"}}),
    )
    n = next_id()
    add(
        "a key column 1e999999999 (the id as text)",
        "customers",
        schemaless(customer(n, id=_SLOT), b"1e999999999"),
        "key ['id']: expected text or an integer, got a number of more than 100 digits",
        schemaless(customer(n)),
        record_key=orjson.dumps({"id": _SLOT}).replace(orjson.dumps(_SLOT), b"1e999999999"),
    )
    n = next_id()
    add(
        "a number with 2,000 decimal places",
        "order_items",
        schemaless(item(n, unit_price=_SLOT), b"0." + b"0" * 1999 + b"1"),
        "column unit_price: a number with 2000 decimal places, more than 1000"
        " (limits.max_decimal_scale)",
        schemaless(item(n, unit_price=_SLOT), b"0." + b"0" * 19 + b"1"),
    )
    n = next_id()
    add(
        "a number of 1,201 digits",
        "order_items",
        schemaless(item(n, unit_price=_SLOT), b"1" * 1200 + b".5"),
        "column unit_price: a number of more than 1000 digits (limits.max_number_digits)",
        schemaless(item(n, unit_price=_SLOT), b"1" * 12 + b".5"),
    )
    n = next_id()
    add(
        "a number of 10 million digits",
        "order_items",
        schemaless(item(n, unit_price=_SLOT), b"1." + b"1" * 10_000_000),
        "column unit_price: a number of more than 1000 digits (limits.max_number_digits)",
        schemaless(item(n, unit_price=_SLOT), b"1." + b"1" * 900),
    )
    n = next_id()
    add(
        "NaN inside a descriptor's JSON object",
        "customers",
        schemaless(customer(n, phone=_SLOT), b'{"mobile":NaN}'),
        "column phone: not a finite number",
        schemaless(customer(n, phone=_SLOT), b'{"mobile":1}'),
    )
    n = next_id()
    add(
        "an integer literal of 5,000 digits",
        "order_items",
        schemaless(item(n, quantity=_SLOT), b"9" * 5000),
        "value is not JSON: a number of more than 4300 digits",
        schemaless(item(n, quantity=_SLOT), b"9"),
    )
    n = next_id()
    add(
        "a value schema of structs nested 500 deep",
        "customers",
        with_schema("customers", customer(n), nested_struct_fields(500), notes=STRUCT_COLUMN),
        "nested too deeply",
        with_schema("customers", customer(n), nested_struct_fields(20), notes=STRUCT_COLUMN),
    )
    # What Debezium users meet every day (issue 9's own run)
    n = next_id()
    add(
        "truncated JSON",
        "orders",
        schemaless(order(n))[:-40],
        "value is not JSON",
        schemaless(order(n)),
    )
    n = next_id()
    add(
        "a key that is not JSON",
        "customers",
        schemaless(customer(n)),
        "key is not JSON",
        schemaless(customer(n)),
        record_key=f"id={n}".encode(),
    )
    n = next_id()
    add(
        "a timestamp of the wrong type",
        "customers",
        with_schema("customers", customer(n, created_at=1767603600000)),
        "column created_at: ZonedTimestamp expects an ISO-8601 string, got an integer",
        with_schema("customers", customer(n)),
    )
    n = next_id()
    add(
        "a record over the size limit",
        "customers",
        schemaless(customer(n, notes="x" * RecordLimits().max_record_bytes)),
        "(limits.max_record_bytes)",
        schemaless(customer(n, notes="x" * 1000)),
    )
    return cases


POISON: list[Poison] = _cases()


def hostile_but_valid(value: bytes) -> list[tuple[str, bytes]]:
    """Variants of a valid customer record (either converter) whose poison sits in
    ``notes``, a column the mapping never sends: each maps to the same change."""
    document = orjson.loads(value)
    payload = document.get("payload", document)
    payload["after"]["notes"] = _SLOT
    text = orjson.dumps(document)
    marker = orjson.dumps(_SLOT)
    variants = {
        "an unsent column nested 500 deep around a float": nested_arrays(500, b"1.5"),
        "an unsent column holding [[1]]": b"[[1]]",
        "an unsent column holding a lone surrogate": b'"x\\ud800"',
        "an unsent column holding 1e999999999": b"1e999999999",
        "an unsent column holding 1e5000 in a list": b"[1e5000]",
        "an unsent column holding NaN": b"NaN",
    }
    return [(name, text.replace(marker, slot)) for name, slot in variants.items()]


# -- Avro of a schema registry (issue 19) -------------------------------------------

_MARKER = "@@poison@@"
_MARKED = b"\x14" + _MARKER.encode()  # Avro's string: zig-zag varint length 10, the bytes
UNKNOWN_SCHEMA_ID = 999_999


def _varint(value: int) -> bytes:
    """Avro's zig-zag varint (a long)."""
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def avro_poisons(registry: Registry, prefix: str = "shop") -> list[Poison]:
    """Hostile Avro records of the reference shop's topics (Confluent framing), their
    schemas registered in ``registry``: each must become a dead letter with ``reason``
    while its neighbour maps to a change."""
    cases: list[Poison] = []

    def twin(table: str, row: dict[str, Any], value: bytes | None = None) -> RawRecord:
        topic = f"{prefix}.public.{table}"
        key_json = orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": row["id"]}})
        value_json = with_schema(table, row) if value is None else value
        return avro_twin(RawRecord(topic, 0, 0, key_json, value_json), registry)

    def add(
        name: str,
        table: str,
        row: dict[str, Any],
        poison: Callable[[bytes], bytes | None],
        reason: str,
        *,
        poison_key: Callable[[bytes], bytes] | None = None,
        neighbour_row: dict[str, Any] | None = None,
    ) -> None:
        record = twin(table, row)
        plain = (
            twin(table, neighbour_row or {**row, "first_name": "Ada"})
            if table == "customers"
            else twin(table, neighbour_row or row)
        )
        assert record.key is not None and record.value is not None
        key_bytes = record.key if poison_key is None else poison_key(record.key)
        assert plain.key is not None
        cases.append(
            Poison(
                f"Avro: {name}",
                table,
                key_bytes,
                poison(record.value),
                reason,
                plain.key,
                plain.value,
            )
        )

    def marked(replacement: bytes) -> Callable[[bytes], bytes]:
        def apply(value: bytes) -> bytes:
            assert value.count(_MARKED) == 1, "the marker must sit once in the body"
            return value.replace(_MARKED, replacement)

        return apply

    def n() -> int:
        return 910_001 + len(cases)

    add(
        "the body cut short",
        "orders",
        order(n()),
        lambda value: value[:-9],
        "value is cut short: its Avro body (schema 2) declares more bytes than it holds",
    )
    add(
        "bytes left over after the body",
        "orders",
        order(n()),
        lambda value: value + b"\x00\x02",
        "2 bytes left over after its Avro body",
    )
    add(
        "a wrong magic byte",
        "orders",
        order(n()),
        lambda value: b"\x01" + value[1:],
        "value starts with byte 0x01: neither JSON nor",
    )
    add(
        "a schema id the registry does not know",
        "orders",
        order(n()),
        lambda value: b"\x00" + UNKNOWN_SCHEMA_ID.to_bytes(4, "big") + value[5:],
        f"value: schema {UNKNOWN_SCHEMA_ID} is not in the registry",
    )
    add(
        "the schema id cut short",
        "orders",
        order(n()),
        lambda value: value[:3],
        "its 4-byte schema id is cut short",
    )
    add(
        "a string declaring 2^62 bytes",
        "customers",
        customer(n(), last_name=_MARKER),
        marked(_varint(2**62) + _MARKER.encode()),
        "declares more bytes than it holds",
    )
    add(
        "a string declaring a negative length",
        "customers",
        customer(n(), last_name=_MARKER),
        marked(_varint(-3) + _MARKER.encode()),
        "declares more bytes than it holds",
    )
    add(
        "text that is not UTF-8",
        "customers",
        customer(n(), last_name=_MARKER),
        marked(b"\x14" + b"\xff\xfe" * 5),
        "does not fit its Avro schema",
    )
    add(
        "a union branch that does not exist",
        "customers",
        customer(n(), last_name=_MARKER),
        # the union's index before the string: 4 in ["null", "string"]
        lambda value: value.replace(b"\x02" + _MARKED, b"\x08" + _MARKED),
        "does not fit its Avro schema",
    )
    add(
        "a Decimal of 4,400 digits",
        "orders",
        order(n(), amount=decimal_base64(10**4400)),
        lambda value: value,
        "column amount: Decimal of more than 4300 digits",
        neighbour_row=order(n()),
    )
    add(
        "a tombstone whose Avro key names an unknown schema",
        "customers",
        customer(n()),
        lambda value: None,
        f"key: schema {UNKNOWN_SCHEMA_ID} is not in the registry",
        poison_key=lambda key: b"\x00" + UNKNOWN_SCHEMA_ID.to_bytes(4, "big") + key[5:],
    )
    return cases


KEY_SCHEMA = {
    "type": "struct",
    "optional": False,
    "name": "shop.public.Key",
    "fields": [{"type": "int64", "optional": False, "field": "id"}],
}
