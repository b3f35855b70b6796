"""Encoders that follow Kafka Connect's rules, and builders of Debezium records.

They produce what Debezium + the JsonConverter would put on the wire, so the
tests compare the decoder against an independent statement of the format.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from schemas.debezium import RawRecord

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unscaled_bytes(unscaled: int) -> bytes:
    """Java's BigInteger.toByteArray(): minimal big-endian two's complement, >= 1 byte."""
    bit_length = unscaled.bit_length() if unscaled >= 0 else (-unscaled - 1).bit_length()
    return unscaled.to_bytes(bit_length // 8 + 1, "big", signed=True)


def encode_decimal(value: Decimal, scale: int) -> str:
    """Connect's Decimal in the JsonConverter (decimal.format=BASE64)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int) and exponent + scale >= 0, "more digits than the scale"
    magnitude = int("".join(map(str, digits)) or "0") * 10 ** (exponent + scale)
    unscaled = -magnitude if sign else magnitude
    return base64.b64encode(unscaled_bytes(unscaled)).decode()


def encode_micros(moment: datetime) -> int:
    """MicroTimestamp: microseconds since the epoch, integer arithmetic only."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def record(
    value: Any,
    key: Any = None,
    *,
    topic: str = "shop.public.orders",
    offset: int = 7,
    headers: tuple[tuple[str, bytes | None], ...] = (),
    raw_value: bytes | None = None,
) -> RawRecord:
    """A RawRecord with JSON-serialised key and value (None stays a Kafka null)."""
    return RawRecord(
        topic=topic,
        partition=0,
        offset=offset,
        key=None if key is None else dumps(key),
        value=raw_value if raw_value is not None else (None if value is None else dumps(value)),
        headers=headers,
    )


def dumps(value: Any) -> bytes:
    """JSON like Jackson writes it: compact, Decimals as their exact text."""
    return orjson.dumps(value, default=_exact_decimal)


def _exact_decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(type(value))


def with_schema(schema: dict[str, Any], payload: Any) -> dict[str, Any]:
    return {"schema": schema, "payload": payload}


def field(column: str, kind: str, *, optional: bool = True, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "optional": optional, "field": column, **extra}


def struct(
    name: str, fields: list[dict[str, Any]], *, optional: bool = True, **extra: Any
) -> dict[str, Any]:
    return {"type": "struct", "fields": fields, "optional": optional, "name": name, **extra}


def envelope_schema(
    prefix: str, row_fields: list[dict[str, Any]], connector: str
) -> dict[str, Any]:
    """The schema Debezium gives a table's topic: before/after/source/op/ts_ms/transaction."""
    value = struct(f"{prefix}.Value", row_fields)
    source = struct(
        f"io.debezium.connector.{connector}.Source",
        [
            field("version", "string", optional=False),
            field("connector", "string", optional=False),
            field("name", "string", optional=False),
            field("ts_ms", "int64", optional=False),
            field(
                "snapshot",
                "string",
                name="io.debezium.data.Enum",
                version=1,
                parameters={"allowed": "true,last,false,incremental"},
                default="false",
            ),
            field("db", "string", optional=False),
            field("schema" if connector == "postgresql" else "table", "string", optional=False),
            field("table", "string", optional=False),
            field("lsn" if connector == "postgresql" else "pos", "int64"),
        ],
        optional=False,
    )
    transaction = struct(
        "event.block",
        [
            field("id", "string", optional=False),
            field("total_order", "int64", optional=False),
            field("data_collection_order", "int64", optional=False),
        ],
        version=1,
    )
    return struct(
        f"{prefix}.Envelope",
        [
            {**value, "field": "before"},
            {**value, "field": "after"},
            {**source, "field": "source"},
            field("op", "string", optional=False),
            field("ts_ms", "int64"),
            {**transaction, "field": "transaction"},
        ],
        optional=False,
        version=1,
    )
