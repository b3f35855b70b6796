"""Avro's native values as the JsonConverter path has them, column by column.

The Avro reader gives bytes where the JsonConverter gives base64 text, binary floats
where it gives JSON numbers (read exactly, as Decimals), ``{scale, value}``
records with bytes where it gives base64. These converters close the gap, so
that an Avro record decodes to the very ChangeEvent of its JSON twin; the
values both forms share (integers, strings, booleans) go to the same
:mod:`.logical` decoders untouched.
"""

from __future__ import annotations

import binascii
import struct
from decimal import Decimal
from typing import Any

from schemas.debezium import UNAVAILABLE

from . import logical
from .logical import Converter, ValueDecodeError, describe

_FLOAT32 = struct.Struct("<f")


def bytes_text(raw: Any) -> Any:
    """Bytes as the JsonConverter leaves them: base64 text (the API takes JSON); the
    placeholder's bytes are the unavailable value, as their base64 text is there."""
    if raw.__class__ is not bytes:
        raise ValueDecodeError(f"bytes expected, got {describe(raw)}")
    if raw == logical.PLACEHOLDER_BYTES:
        return UNAVAILABLE
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def double(value: Any) -> Any:
    """A float64 column: the Decimal of its shortest text, as Java writes it in JSON."""
    if value.__class__ is not float:
        raise ValueDecodeError(f"double expected, got {describe(value)}")
    return Decimal(repr(value))


def single(value: Any) -> Any:
    """A float32 column: the shortest text that reads back as the same float32, as
    Java's Float.toString writes it (0.1f is 0.1, not 0.10000000149011612)."""
    if value.__class__ is not float:
        raise ValueDecodeError(f"float expected, got {describe(value)}")
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if _FLOAT32.unpack(_FLOAT32.pack(float(text)))[0] == value:
            return Decimal(text)
    return Decimal(repr(value))  # NaN


def native(value: Any) -> Any:
    """A value of a union of several types (no Connect schema makes one): by its own
    Python type."""
    cls = value.__class__
    if cls is bytes:
        return bytes_text(value)
    if cls is float:
        return double(value)
    if cls is str:
        return UNAVAILABLE if value in logical.PLACEHOLDER_STRINGS else value
    if cls is dict:
        return {k: None if v is None else native(v) for k, v in value.items()}
    if cls is list:
        return [None if v is None else native(v) for v in value]
    return value


def decimal(scale: int) -> Converter:
    def convert(raw: Any) -> Any:
        if raw.__class__ is not bytes:
            raise ValueDecodeError(f"Decimal expects bytes, got {describe(raw)}")
        if raw == logical.PLACEHOLDER_BYTES:
            return UNAVAILABLE
        return logical.decimal_from_bytes(raw, scale)

    return convert


def variable_scale_decimal(value: Any) -> Decimal:
    if value.__class__ is dict:
        scale, raw = value.get("scale"), value.get("value")
        if scale.__class__ is int and raw.__class__ is bytes:
            return logical.decimal_from_bytes(raw, scale, "VariableScaleDecimal")
    raise ValueDecodeError(f"VariableScaleDecimal expects {{scale, value}}, got {describe(value)}")


def pairs(key: Converter | None, value: Converter | None) -> Converter:
    """A Connect map with keys that are not strings: Avro's array of {key, value}
    records, the JsonConverter's array of [key, value] pairs."""

    def convert(entries: Any) -> Any:
        if entries.__class__ is not list:
            raise ValueDecodeError(f"map expects a list of entries, got {describe(entries)}")
        out = []
        for entry in entries:
            k, v = entry.get("key"), entry.get("value")
            out.append(
                [
                    k if k is None or key is None else key(k),
                    v if v is None or value is None else value(v),
                ]
            )
        return out

    return convert


# Avro's own logical types, for schemas that no Connect converter wrote (no connect.name).
AVRO_LOGICAL: dict[str, Converter] = {
    "date": logical.date_days,
    "time-millis": logical.time_millis,
    "time-micros": logical.time_micros,
    "timestamp-millis": logical.epoch_millis,
    "timestamp-micros": logical.epoch_micros,
    "local-timestamp-millis": logical.epoch_millis,
    "local-timestamp-micros": logical.epoch_micros,
}
