"""Per-column hints for values that arrive without a schema.

With ``value.converter.schemas.enable=false`` a record says nothing about its
columns: a Connect Decimal is just a base64 string, a timestamp just an
integer. The mapping file names what each such column really is, with the
words parsed here (``decimal(2)``, ``epoch_micros``, ``json``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from schemas.debezium import UNAVAILABLE, Row

from . import logical
from .exactjson import InexactFloat, contains_float
from .logical import ColumnError, Converter, ValueDecodeError, describe, unexpected


@dataclass(frozen=True, slots=True)
class ColumnHint:
    """What a schemaless column holds: ``text`` is the hint as written."""

    text: str
    decode: Converter = field(compare=False, repr=False)

    def __str__(self) -> str:
        return self.text


def _string(value: Any) -> str:
    cls = value.__class__
    if cls is str:
        return value  # type: ignore[no-any-return]
    if cls is bool:
        return "true" if value else "false"
    if cls is int or cls is Decimal:
        return str(value)
    raise ValueDecodeError(f"string expects a string or a number, got {describe(value)}")


# Kafka Connect's widest integer is int64; 20 digits also bound the work of
# int() on a string or on a Decimal such as 1E+999999999 (a gigabyte of digits).
_MAX_INT_DIGITS = 20


def _integer(value: Any) -> int:
    cls = value.__class__
    if cls is int:
        return value  # type: ignore[no-any-return]
    if cls is str:
        digits = value.strip().removeprefix("-")
        # isdecimal, not isdigit: '²' is a digit that int() refuses
        if digits.isdecimal() and len(digits) <= _MAX_INT_DIGITS:
            return int(value)
    elif cls is Decimal and value.is_finite() and value == value.to_integral_value():
        if value.adjusted() < _MAX_INT_DIGITS:
            return int(value)
        raise ValueDecodeError(f"int expects an integer of at most {_MAX_INT_DIGITS} digits")
    raise ValueDecodeError(f"int expects an integer, got {describe(value)}")


_SIMPLE_HINTS: dict[str, Converter] = {
    "decimal": logical.variable_scale_decimal,
    "epoch_millis": logical.epoch_millis,
    "epoch_micros": logical.epoch_micros,
    "epoch_nanos": logical.epoch_nanos,
    "date_days": logical.date_days,
    "time_millis": logical.time_millis,
    "time_micros": logical.time_micros,
    "time_nanos": logical.time_nanos,
    "zoned_timestamp": logical.zoned_timestamp,
    "json": logical.json_document,
    "bool": logical.boolean,
    "string": _string,
    "int": _integer,
}
_FIXED_DECIMAL = re.compile(r"decimal\(\s*(-?\d+)\s*\)")
HINT_NAMES = ("decimal(N)", *_SIMPLE_HINTS)


def parse_hint(text: str) -> ColumnHint:
    """Read one hint word; raise ValueError naming the known hints when it is not one."""
    word = text.strip()
    simple = _SIMPLE_HINTS.get(word)
    if simple is not None:
        return ColumnHint(word, simple)
    fixed = _FIXED_DECIMAL.fullmatch(word)
    if fixed is not None:
        return ColumnHint(f"decimal({int(fixed[1])})", logical.fixed_scale_decimal(int(fixed[1])))
    raise ValueError(f"unknown column hint {text!r}: expected one of {', '.join(HINT_NAMES)}")


def decode_schemaless_row(
    row: Row, hints: Mapping[str, ColumnHint] | None, prefix: str = "column"
) -> Row:
    """Decode a row without a schema, in place: placeholders, exact numbers, hints.

    Raises InexactFloat when orjson produced a float anywhere in the row.
    """
    values = row.values()
    kinds = set(map(type, values))  # C-level passes instead of a Python loop per column
    if float in kinds:
        raise InexactFloat
    if list in kinds or dict in kinds:
        _containers_and_placeholders(row)
    elif not logical.PLACEHOLDER_STRINGS.isdisjoint(values):
        for name, value in row.items():
            if value.__class__ is str and value in logical.PLACEHOLDER_STRINGS:
                row[name] = UNAVAILABLE
    if not hints:
        return row
    name = ""
    try:
        if len(hints) <= len(row):
            for name, hint in hints.items():
                value = row.get(name)
                if value is not None and value is not UNAVAILABLE:
                    row[name] = hint.decode(value)
        else:
            for name, value in row.items():
                maybe_hint = hints.get(name)
                if maybe_hint is not None and value is not None and value is not UNAVAILABLE:
                    row[name] = maybe_hint.decode(value)
    except ValueDecodeError as exc:
        raise ColumnError(name, str(exc), prefix=prefix) from None
    except InexactFloat:
        raise
    except Exception as exc:  # a fault of ours or of a library: still this column's record
        raise ColumnError(name, unexpected(exc), prefix=prefix) from None
    return row


def _containers_and_placeholders(row: Row) -> None:
    for name, value in row.items():
        cls = value.__class__
        if cls is str:
            if value in logical.PLACEHOLDER_STRINGS:
                row[name] = UNAVAILABLE
        elif cls is list or cls is dict:
            if logical.is_unavailable_container(value):
                row[name] = UNAVAILABLE
            elif contains_float(value):
                raise InexactFloat
