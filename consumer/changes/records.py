"""One record in, one change out: the safety net around decoding, mapping and storing.

    change_of(record, hints, mapping, limits, avro) -> EntityChange | Skipped | None
        raises BadRecord (and RegistryUnavailable: a schema not fetched, no record's fault)

Whatever goes wrong while one record is decoded, mapped or checked for the
store is that record's fault, never the stream's: it becomes a
:class:`BadRecord` (a dead letter) whose reason names the column and the
exception class, never a column's value. Nothing that reaches the store can
fail there later: the mapped row is checked against what the store writes
(``schemas.rfmcube.dumps``, orjson) and reads back
(``json.loads(parse_float=Decimal)``):

- text must be valid UTF-8 (a lone surrogate passes JSON parsing, not orjson);
- integers, and decimals written without a point (``1E+30``), must fit in
  64 bits: orjson writes no others, and a decimal of 4301 digits or more
  would be stored and then fail every read;
- decimals are finite, with at most ``max_number_digits`` significant digits
  and ``max_decimal_scale`` places (``1E-999999999`` is a gigabyte written out);
- JSON values are nested at most ``max_json_depth`` levels (orjson stops at 254);
- only JSON types: a datetime inside an array column has no JSON form here.

The check walks the mapped fields only (a few values per row), never a
second serialization, so the hot path stays fast; a column the mapping does
not send is never checked, and never makes a record bad.
"""

from __future__ import annotations

from collections.abc import Mapping as AnyMapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from consumer.changes.decode import AvroReader, ColumnHint, decode_record
from consumer.changes.limits import RecordLimits
from consumer.changes.mapping import Mapping
from consumer.errors import BadRecord, RegistryUnavailable
from schemas.debezium import RawRecord, Skipped
from schemas.entities import EntityChange, MappedRow

DEFAULT_LIMITS = RecordLimits()
# A reason travels in a Kafka header and a log line: short and valid UTF-8.
MAX_REASON_CHARS = 300
# What orjson writes (signed or unsigned 64-bit); it refuses any other int.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_INT_MAX_DIGITS = 20


def change_of(
    record: RawRecord,
    hints: AnyMapping[str, ColumnHint] | None,
    mapping: Mapping,
    limits: RecordLimits = DEFAULT_LIMITS,
    avro: AvroReader | None = None,
) -> EntityChange | Skipped | None:
    """The change one record makes, checked for the store.

    Returns an :class:`EntityChange`; a :class:`Skipped` note (heartbeats,
    schema changes, transactions...); or None when the mapping has no table
    for the record's topic. Raises :class:`BadRecord` for anything else,
    whatever the exception behind it (ValueError, RecursionError,
    MemoryError...): its reason says which column or limit, and which
    exception class. ``avro`` reads Avro records (the batch's schemas); a
    schema it lacks raises :class:`RegistryUnavailable`, which is no record's
    fault.
    """
    key, value = record.key, record.value
    size = (0 if key is None else len(key)) + (0 if value is None else len(value))
    if size > limits.max_record_bytes:
        raise BadRecord(
            record.position,
            f"record of {size} bytes, more than {limits.max_record_bytes}"
            " (limits.max_record_bytes)",
        )
    stage = "decoded"
    try:
        decoded = decode_record(record, hints, avro)
        if isinstance(decoded, Skipped):
            return decoded
        stage = "mapped"
        change = mapping.map_event(decoded)
        if change is None:
            return None
        stage = "checked"
        return _checked(change, mapping, limits)
    except RegistryUnavailable:
        raise
    except BadRecord as exc:
        reason = exc.reason
        if reason.isascii() and len(reason) <= MAX_REASON_CHARS:
            raise
        raise BadRecord(record.position, safe_reason(reason)) from None
    except Exception as exc:  # MemoryError and RecursionError included: one record's fault
        raise BadRecord(record.position, f"cannot be {stage} ({type(exc).__name__})") from None


def safe_reason(reason: str) -> str:
    """A reason fit for a header and a log line: valid UTF-8 (a column name may hold
    a lone surrogate) and at most :data:`MAX_REASON_CHARS` characters."""
    text = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


# -- the check of a mapped change -------------------------------------------------------


class _Invalid(Exception):
    """A value the store cannot keep; ``path`` leads to it from the row's fields."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str | int] = []  # filled innermost first, while unwinding
        self.identity: str | None = None  # "key", "parent" or "email": not a field


def _checked(change: EntityChange, mapping: Mapping, limits: RecordLimits) -> EntityChange:
    row = change.row
    try:
        if row is not None:
            _check_row(row, limits)
            return change
        _check_identity("key", change.key)
    except _Invalid as exc:
        raise BadRecord(change.position, _reason(exc, change.position.topic, mapping)) from None
    if change.before is not None:
        try:
            _check_row(change.before, limits)
        except _Invalid:
            # as the mapper does with an incomplete before image: the store knows the row
            return replace(change, before=None)
    return change


def _reason(invalid: _Invalid, topic: str, mapping: Mapping) -> str:
    if invalid.identity is not None:
        return f"{invalid.identity}: {invalid.problem}"
    # the path goes on inside a JSON value: its keys are data, never said
    path = invalid.path[::-1]
    column = mapping.column_of(topic, [p for p in path if isinstance(p, str)])
    where = f"column {column}" if column else f"field {path[0]}"
    return safe_reason(f"{where}: {invalid.problem}")


def _check_identity(label: str, text: str | None) -> None:
    if text is not None and not text.isascii():
        try:
            _check_text(text)
        except _Invalid as exc:
            exc.identity = label
            raise


def _check_row(row: MappedRow, limits: RecordLimits) -> None:
    for name, value in row.fields.items():
        cls = value.__class__
        if (cls is str and value.isascii()) or cls is bool or value is None:
            continue  # the usual values, inline
        try:
            _check_value(value, 0, limits)
        except _Invalid as exc:
            exc.path.append(name)
            raise
    # after the fields: a customer's email is one, and its reason then names the column
    if not row.key.isascii():
        _check_identity("key", row.key)
    if row.parent is not None and not row.parent.isascii():
        _check_identity("parent", row.parent)
    if row.email is not None and not row.email.isascii():
        _check_identity("email", row.email)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid("text with a lone surrogate (not valid UTF-8)") from None


def _check_value(value: Any, depth: int, limits: RecordLimits) -> None:
    cls = value.__class__
    if cls is str:
        if not value.isascii():
            _check_text(value)
    elif cls is Decimal:
        _check_decimal(value, limits)
    elif cls is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise _Invalid("an integer outside the 64-bit range")
    elif cls is dict or cls is list:
        depth += 1
        if depth > limits.max_json_depth:
            raise _Invalid(
                f"JSON nested deeper than {limits.max_json_depth} levels (limits.max_json_depth)"
            )
        if cls is dict:
            for name, item in value.items():
                if name.__class__ is not str:
                    raise _Invalid(f"a JSON object key of type {type(name).__name__}")
                try:
                    if not name.isascii():
                        _check_text(name)
                    _check_value(item, depth, limits)
                except _Invalid as exc:
                    exc.path.append(name)
                    raise
        else:
            for index, item in enumerate(value):
                try:
                    _check_value(item, depth, limits)
                except _Invalid as exc:
                    exc.path.append(index)
                    raise
    elif value is None or cls is bool or cls is float:
        pass  # orjson writes any float (NaN and infinities as null)
    else:
        raise _Invalid(f"a value of type {cls.__name__}, which has no JSON form here")


def _check_decimal(value: Decimal, limits: RecordLimits) -> None:
    # The usual amount (23757.03) in a quarter of the time of as_tuple(): str() writes
    # at most 18 characters without an exponent, so it is a small integer, or its
    # scale and digits are at most what the text shows.
    text = str(value)
    if len(text) <= 18 and "E" not in text and value.is_finite():
        point = text.find(".")
        if point < 0:  # |value| < 10^18: within 64 bits
            if len(text) - (text[0] == "-") <= limits.max_number_digits:
                return
        elif (
            len(text) - point - 1 <= limits.max_decimal_scale
            and len(text) - 1 <= limits.max_number_digits  # counts a sign or a leading 0 too
        ):
            return
    # as_tuple() takes 8 bytes a digit: a number of 16 million digits must not get there.
    # Beside its digits, str() writes a sign, a point, "0.00000" or an exponent: < 24.
    if len(text) > limits.max_number_digits + 24:
        raise _too_many_digits(limits)
    _check_decimal_exactly(value, limits)


def _too_many_digits(limits: RecordLimits) -> _Invalid:
    return _Invalid(
        f"a number of more than {limits.max_number_digits} digits (limits.max_number_digits)"
    )


def _check_decimal_exactly(value: Decimal, limits: RecordLimits) -> None:
    if not value.is_finite():
        raise _Invalid("not a finite number (NaN or Infinity)")
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if len(digits) > limits.max_number_digits:
        raise _too_many_digits(limits)
    if exponent >= 0:
        # written without a point, it is read back as an int: it must be one orjson writes
        if digits != (0,) and (
            len(digits) + exponent > _INT_MAX_DIGITS or not _INT_MIN <= int(value) <= _INT_MAX
        ):
            raise _Invalid("an integer outside the 64-bit range")
    elif -exponent > limits.max_decimal_scale:
        raise _Invalid(
            f"a number with {-exponent} decimal places, more than {limits.max_decimal_scale}"
            " (limits.max_decimal_scale)"
        )
