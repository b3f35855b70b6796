"""Records per second through ``decode_record`` for a realistic order row.

    .venv/bin/python -m bench.decode [--records 20000] [--repeat 5]

The row is a PostgreSQL 15 ``orders`` update as Debezium 2.x emits it with
the JsonConverter: 12 columns (bigint ids, numeric(12,2) amount as Connect
Decimal base64, two timestamptz as ZonedTimestamp, text), once with schemas
and once without (the schemaless form decoded with column hints). A third
form sends the amount as a JSON number (decimal.format=NUMERIC or
decimal.handling.mode=double), which costs an exact re-parse. The fourth is
the same records (with schemas) as the Avro converter writes them, in the
Confluent framing (testkit.avro), decoded with their schemas at hand (as
after the registry's prefetch). The yardstick beside each is the bare parse
of the same values: orjson.loads, or fastavro's schemaless_reader.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson
from fastavro import parse_schema, schemaless_reader

from consumer.changes.decode import AvroReader, AvroSchema, ColumnHint, decode_record, parse_hint
from schemas.debezium import RawRecord
from testkit.avro import LocalRegistry, avro_twin
from testkit.builders import PG_SOURCE

_SOURCE = PG_SOURCE


def _decimal_base64(value: Decimal, scale: int) -> str:
    unscaled = int(value.scaleb(scale))
    size = (unscaled.bit_length() if unscaled >= 0 else (-unscaled - 1).bit_length()) // 8 + 1
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


def _row(i: int, amount: Any) -> dict[str, Any]:
    return {
        "id": 100_000 + i,
        "customer_id": 5_000 + i % 997,
        "customer_email": f"customer{i % 997}@example.com",
        "status": "paid",
        "status_label": "Paid",
        "amount": amount,
        "currency": "EUR",
        "item_count": 1 + i % 5,
        "created_at": "2024-06-03T14:20:11.482913Z",
        "updated_at": "2024-06-03T16:02:45.1Z",
        "shipping_province": "Milano",
        "notes": "leave at the door",
    }


def _field(column: str, kind: str, optional: bool = True, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "optional": optional, "field": column, **extra}


_ZONED: dict[str, Any] = {"name": "io.debezium.time.ZonedTimestamp", "version": 1}
_ROW_FIELDS = [
    _field("id", "int64", optional=False),
    _field("customer_id", "int64"),
    _field("customer_email", "string"),
    _field("status", "string"),
    _field("status_label", "string"),
    _field(
        "amount",
        "bytes",
        name="org.apache.kafka.connect.data.Decimal",
        version=1,
        parameters={"scale": "2", "connect.decimal.precision": "12"},
    ),
    _field("currency", "string"),
    _field("item_count", "int32"),
    _field("created_at", "string", **_ZONED),
    _field("updated_at", "string", **_ZONED),
    _field("shipping_province", "string"),
    _field("notes", "string"),
]
_SOURCE_FIELDS = [
    _field(name, "int64" if name in ("ts_ms", "txId", "lsn", "xmin") else "string")
    for name in _SOURCE
]


def _envelope_schema() -> dict[str, Any]:
    row = {
        "type": "struct",
        "fields": _ROW_FIELDS,
        "optional": True,
        "name": "shop.public.orders.Value",
    }
    source = {
        "type": "struct",
        "fields": _SOURCE_FIELDS,
        "optional": False,
        "name": "io.debezium.connector.postgresql.Source",
        "field": "source",
    }
    return {
        "type": "struct",
        "name": "shop.public.orders.Envelope",
        "optional": False,
        "version": 2,
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            source,
            _field("op", "string", optional=False),
            _field("ts_ms", "int64"),
            _field("ts_us", "int64"),
            _field("ts_ns", "int64"),
        ],
    }


_KEY_SCHEMA = {
    "type": "struct",
    "name": "shop.public.orders.Key",
    "optional": False,
    "fields": [_field("id", "int64", optional=False)],
}


def _payload(i: int, amount: Any) -> dict[str, Any]:
    return {
        "before": None,
        "after": _row(i, amount),
        "source": _SOURCE,
        "op": "u",
        "ts_ms": 1717430400456,
        "ts_us": 1717430400456123,
        "ts_ns": 1717430400456123000,
    }


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=lambda d: orjson.Fragment(str(d)))


def build_records(count: int, form: str) -> list[RawRecord]:
    records = []
    schema = _envelope_schema()
    for i in range(count):
        amount_decimal = Decimal(f"{(i * 7919) % 100_000}.{i % 100:02d}")
        amount: Any = amount_decimal if form == "numeric" else _decimal_base64(amount_decimal, 2)
        payload = _payload(i, amount)
        key: dict[str, Any] = {"id": 100_000 + i}
        if form == "schemas":
            value = _dumps({"schema": schema, "payload": payload})
            key_bytes = _dumps({"schema": _KEY_SCHEMA, "payload": key})
        else:
            value = _dumps(payload)
            key_bytes = _dumps(key)
        records.append(RawRecord("shop.public.orders", 0, i, key_bytes, value))
    return records


HINTS: Mapping[str, ColumnHint] = {
    "amount": parse_hint("decimal(2)"),
    "created_at": parse_hint("zoned_timestamp"),
    "updated_at": parse_hint("zoned_timestamp"),
}


def _rate(records: list[RawRecord], work: Callable[[RawRecord], Any], repeat: int) -> float:
    """Median records per CPU-second over ``repeat`` passes, after a warm-up pass.

    CPU time (not wall time) so that other processes on a shared machine
    disturb the figure less.
    """
    for record in records[:1000]:
        work(record)
    rates = []
    for _ in range(repeat):
        started = time.process_time()
        for record in records:
            work(record)
        rates.append(len(records) / (time.process_time() - started))
    return statistics.median(rates)


def avro_records(records: list[RawRecord]) -> tuple[list[RawRecord], AvroReader, Any]:
    """The Avro twins of JsonConverter records (schemas on), a reader with their schemas
    (as the registry's prefetch hands it to the decoder), and the value schema parsed."""
    registry = LocalRegistry()
    twins = [avro_twin(record, registry) for record in records]
    schemas = {i: AvroSchema(i, text) for i, text in registry.by_id.items()}
    value_id = int.from_bytes((twins[0].value or b"")[1:5], "big")
    return (
        twins,
        AvroReader("confluent", schemas),
        parse_schema(json.loads(registry.by_id[value_id])),
    )


def measure(
    records: list[RawRecord],
    hints: Mapping[str, ColumnHint] | None,
    repeat: int,
    avro: tuple[AvroReader, Any] | None = None,
) -> tuple[float, float]:
    """(decode_record rate, rate of the bare parse of the same values as a yardstick)."""
    reader = None if avro is None else avro[0]
    decoded = _rate(records, lambda record: decode_record(record, hints, reader), repeat)
    if avro is None:
        parsed = _rate(records, lambda record: orjson.loads(record.value or b"null"), repeat)
    else:
        schema = avro[1]

        def bare(record: RawRecord) -> Any:
            body = io.BytesIO(record.value or b"")
            body.seek(5)
            return schemaless_reader(body, schema, None)

        parsed = _rate(records, bare, repeat)
    return decoded, parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    forms = [
        ("schemaless + hints (Decimal base64)", "schemaless", HINTS),
        ("with schemas (Decimal base64)", "schemas", None),
        ("schemaless, amount as JSON number", "numeric", {**HINTS}),
        ("Avro, Confluent framing (same records)", "avro", None),
    ]
    print(f"{'form':40s} {'decode_record':>14s} {'µs/record':>10s} {'bare parse':>14s}")
    for label, form, hints in forms:
        records = build_records(args.records, "schemas" if form == "avro" else form)
        avro = None
        if form == "avro":
            records, reader, schema = avro_records(records)
            avro = (reader, schema)
        size = sum(len(r.value or b"") for r in records) // len(records)
        decoded, parsed = measure(records, hints, args.repeat, avro)
        print(
            f"{label:40s} {decoded:>10,.0f} r/s {1e6 / decoded:>10.1f}"
            f" {parsed:>10,.0f} r/s   ({size} bytes/value)"
        )
    print(f"(records/s per CPU-second, median of {args.repeat} passes of {args.records} records;")
    print(" bare parse: orjson.loads of the value, or fastavro's schemaless_reader of the body)")


if __name__ == "__main__":
    main()
