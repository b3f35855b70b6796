"""Column value decoders, by Kafka Connect / Debezium logical type.

Each decoder takes the JSON value of one column (never None: callers keep
None as None) and returns the plain Python value of the ChangeEvent contract,
or raises :class:`ValueDecodeError` with a reason a person can act on. They
know nothing of the wire format, so an Avro decoder can reuse them.
"""

from __future__ import annotations

import binascii
import hashlib
import sys
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from .exactjson import InexactFloat, NotJson, contains_float, loads_text_exact

Converter = Callable[[Any], Any]


class ValueDecodeError(ValueError):
    """A value (or a whole record) that cannot be decoded; the text is the reason."""


def unexpected(exc: BaseException) -> str:
    """The reason for an exception no decoder meant to raise: its class, not its
    message (which may quote the value)."""
    return f"cannot be decoded ({type(exc).__name__})"


class ColumnError(ValueDecodeError):
    """A column whose value cannot be decoded."""

    def __init__(self, column: str, reason: str, *, prefix: str = "column") -> None:
        self.column = column
        self.reason = reason
        super().__init__(f"{prefix} {column}: {reason}")


# --- the unavailable-value placeholder (unchanged TOASTed PostgreSQL column) -------------

PLACEHOLDER = "__debezium_unavailable_value"
PLACEHOLDER_BYTES = PLACEHOLDER.encode()
PLACEHOLDER_BASE64 = binascii.b2a_base64(PLACEHOLDER_BYTES, newline=False).decode()
# Debezium's UnchangedToastedPlaceholder also fills uuid columns with a name-based
# UUID of the placeholder bytes (Java's UUID.nameUUIDFromBytes: MD5, version 3).
PLACEHOLDER_UUID = str(uuid.UUID(bytes=hashlib.md5(PLACEHOLDER_BYTES).digest(), version=3))
PLACEHOLDER_STRINGS = frozenset({PLACEHOLDER, PLACEHOLDER_BASE64, PLACEHOLDER_UUID})
# int[] / bigint[] columns get one element per placeholder byte
_PLACEHOLDER_INT_LIST = list(PLACEHOLDER_BYTES)


def is_unavailable_container(value: list[Any] | dict[str, Any]) -> bool:
    """The placeholder forms of array and hstore columns."""
    if isinstance(value, list):
        if len(value) == 1:
            first = value[0]  # may be a list or a dict: not hashable
            return first.__class__ is str and first in PLACEHOLDER_STRINGS
        return len(value) == len(_PLACEHOLDER_INT_LIST) and value == _PLACEHOLDER_INT_LIST
    return len(value) == 1 and value.get(PLACEHOLDER) == PLACEHOLDER


# --- decimals --------------------------------------------------------------------------


def describe(value: Any) -> str:
    """What a bad value is, for a reason: its type and size, never its content
    (a column may hold personal data, and reasons reach logs and dead letters)."""
    cls = value.__class__
    if value is None:
        return "null"
    if cls is bool:
        return "a boolean"
    if cls is int:
        return "an integer"
    if cls is Decimal or cls is float:
        return "a number"
    if cls is str:
        return f"a string of {len(value)} characters"
    if cls is list:
        return f"a JSON array of {len(value)} items"
    if cls is dict:
        return f"a JSON object of {len(value)} keys"
    return f"a value of type {cls.__name__}"


def decimal_from_base64(text: str, scale: int, what: str = "Decimal") -> Decimal:
    """Connect's Decimal bytes: the unscaled value, big-endian two's complement."""
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ValueDecodeError(f"{what} expects base64 bytes, got {describe(text)}") from None
    return decimal_from_bytes(raw, scale, what)


def decimal_from_bytes(raw: bytes, scale: int, what: str = "Decimal") -> Decimal:
    """The unscaled value's bytes themselves, as Avro carries them."""
    if not raw:
        raise ValueDecodeError(f"{what} has empty bytes")
    unscaled = int.from_bytes(raw, "big", signed=True)
    try:
        # the string constructor is exact; scaleb() would round to the context precision
        return Decimal(f"{unscaled}E{-scale}") if scale else Decimal(f"{unscaled}")
    except ValueError:  # str(int) refuses more digits than Python's int/str limit
        limit = sys.get_int_max_str_digits()
        raise ValueDecodeError(f"{what} of more than {limit} digits") from None


def decimal_from_number(value: Any, what: str = "Decimal") -> Decimal:
    """A JSON number (int or exact Decimal) or a numeric string."""
    cls = value.__class__
    if cls is Decimal:
        return value  # type: ignore[no-any-return]
    if cls is int:
        return Decimal(value)
    if cls is float:
        raise InexactFloat
    if cls is str:
        try:
            return Decimal(value)
        except InvalidOperation:
            pass
    raise ValueDecodeError(f"{what} expects a number, got {describe(value)}")


def _looks_numeric(text: str, scale: int) -> bool:
    """Tell a numeric string from base64 bytes for a fixed-scale decimal.

    Base64 never holds '.' or '-', and Java pads it to a multiple of four
    characters; a string-mode decimal of scale > 0 always has a '.'. So only a
    scale-0, all-digit string of length 4k is ambiguous: it is read as a
    number, since base64 of an integer is seldom all digits.
    """
    if "." in text or text[:1] == "-" or text in _SPECIAL_NUMBERS:
        return True
    return text.isdigit() and (scale == 0 or len(text) % 4 != 0)


_SPECIAL_NUMBERS = frozenset({"NaN", "Infinity"})


def fixed_scale_decimal(scale: int) -> Converter:
    """``decimal(N)`` and Connect's Decimal: base64 bytes, a JSON number or a string."""

    def convert(value: Any) -> Decimal:
        # a trailing '=' (base64 padding) settles it without looking further
        if value.__class__ is str and (value[-1:] == "=" or not _looks_numeric(value, scale)):
            return decimal_from_base64(value, scale)
        return decimal_from_number(value)

    return convert


def variable_scale_decimal(value: Any) -> Decimal:
    """Debezium's VariableScaleDecimal struct ``{scale, value}``, or a number/string."""
    if value.__class__ is dict:
        scale = value.get("scale")
        raw = value.get("value")
        if scale.__class__ is not int or raw.__class__ is not str:
            raise ValueDecodeError(
                "VariableScaleDecimal expects {scale: int, value: base64},"
                f" got {describe(scale)} and {describe(raw)}"
            )
        return decimal_from_base64(raw, scale, "VariableScaleDecimal")
    return decimal_from_number(value, "VariableScaleDecimal")


def exact_number(value: Any) -> Any:
    """A float32/float64 column: a Decimal of the JSON text, never a binary float."""
    if value.__class__ is float:
        raise InexactFloat
    return value


# --- dates and times -----------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MICROS_PER_DAY = 86_400_000_000


def _integer(value: Any, what: str) -> int:
    if value.__class__ is not int:
        raise ValueDecodeError(f"{what} expects an integer, got {describe(value)}")
    return int(value)


def _timestamp(micros: int, what: str) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ValueDecodeError(f"{what} is out of the datetime range") from None


def epoch_millis(value: Any, what: str = "Timestamp") -> datetime:
    """Milliseconds since the epoch as UTC wall clock (never local time)."""
    millis = _integer(value, what)
    return _timestamp(millis * 1000, what)


def epoch_micros(value: Any, what: str = "MicroTimestamp") -> datetime:
    micros = _integer(value, what)
    return _timestamp(micros, what)


def epoch_nanos(value: Any, what: str = "NanoTimestamp") -> datetime:
    """Nanoseconds are floored to microseconds (Python's resolution)."""
    nanos = _integer(value, what)
    return _timestamp(nanos // 1000, what)


def date_days(value: Any, what: str = "Date") -> date:
    days = _integer(value, what)
    try:
        return date.fromordinal(_EPOCH_ORDINAL + days)
    except (ValueError, OverflowError):
        raise ValueDecodeError(f"{what} is out of the date range") from None


def _time_of_day(micros: int, what: str) -> time:
    if micros == _MICROS_PER_DAY:
        return time.max  # PostgreSQL's '24:00:00' has no Python equivalent
    if not 0 <= micros < _MICROS_PER_DAY:
        raise ValueDecodeError(f"{what} is not a time of day")
    seconds, micro = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return time(hour, minute, second, micro)


def time_millis(value: Any, what: str = "Time") -> time:
    millis = _integer(value, what)
    return _time_of_day(millis * 1000, what)


def time_micros(value: Any, what: str = "MicroTime") -> time:
    micros = _integer(value, what)
    return _time_of_day(micros, what)


def time_nanos(value: Any, what: str = "NanoTime") -> time:
    nanos = _integer(value, what)
    return _time_of_day(nanos // 1000, what)


def zoned_timestamp(value: Any, what: str = "ZonedTimestamp") -> datetime:
    """An ISO-8601 string with an offset (``Z`` or ``+02:00``), 0-9 fractional digits."""
    if value.__class__ is not str:
        raise ValueDecodeError(f"{what} expects an ISO-8601 string, got {describe(value)}")
    try:
        # Python >= 3.11 reads 'Z' and truncates digits past the sixth (µs resolution)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueDecodeError(f"{what} is not ISO-8601: {describe(value)}") from None
    zone = parsed.tzinfo
    if zone is UTC:  # the usual 'Z'
        return parsed
    if zone is None:
        raise ValueDecodeError(f"{what} has no UTC offset: {describe(value)}")
    return parsed.astimezone(UTC)


def zoned_time(value: Any, what: str = "ZonedTime") -> time:
    """A time of day with an offset, normalised to UTC."""
    if value.__class__ is not str:
        raise ValueDecodeError(f"{what} expects an ISO-8601 string, got {describe(value)}")
    try:
        parsed = time.fromisoformat(value)
    except ValueError:
        raise ValueDecodeError(f"{what} is not ISO-8601: {describe(value)}") from None
    if parsed.tzinfo is None:
        raise ValueDecodeError(f"{what} has no UTC offset: {describe(value)}")
    on_a_day = datetime.combine(date(2000, 1, 1), parsed).astimezone(UTC)
    return on_a_day.timetz()


# --- other logical types ------------------------------------------------------------------


def json_document(value: Any, what: str = "Json") -> Any:
    """A string holding JSON (parsed with exact decimals), or JSON already parsed."""
    if value.__class__ is str:
        try:
            return loads_text_exact(value)
        except NotJson as exc:
            raise ValueDecodeError(f"{what} holds invalid JSON: {exc}") from None
    if contains_float(value):
        raise InexactFloat
    return value


def boolean(value: Any, what: str = "boolean") -> bool:
    """true/false, or MySQL's tinyint(1) 0/1 of any integer width (nonzero is true)."""
    cls = value.__class__
    if cls is bool:
        return bool(value)
    if cls is int:
        return bool(value != 0)
    if cls is str and value in ("true", "false"):
        return bool(value == "true")
    raise ValueDecodeError(f"{what} expects true/false or 0/1, got {describe(value)}")


LogicalFactory = Callable[[Mapping[str, str]], Converter]


def decimal_scale(parameters: Mapping[str, Any]) -> int:
    """The ``scale`` parameter of Connect's Decimal, checked."""
    scale = parameters.get("scale")
    if scale is None:
        raise ValueDecodeError("Decimal without scale parameter")
    try:
        return int(scale)
    except (TypeError, ValueError):
        shown = repr(scale) if len(str(scale)) <= 16 else describe(scale)
        raise ValueDecodeError(f"Decimal with a non-integer scale parameter {shown}") from None


def _decimal_factory(parameters: Mapping[str, str]) -> Converter:
    return fixed_scale_decimal(decimal_scale(parameters))


def _fixed(converter: Callable[[Any, str], Any], what: str) -> LogicalFactory:
    def factory(_parameters: Mapping[str, str]) -> Converter:
        return lambda value: converter(value, what)

    return factory


LOGICAL_TYPES: dict[str, LogicalFactory] = {
    "org.apache.kafka.connect.data.Decimal": _decimal_factory,
    "io.debezium.data.VariableScaleDecimal": lambda _p: variable_scale_decimal,
    "io.debezium.time.Date": _fixed(date_days, "Date"),
    "io.debezium.time.Time": _fixed(time_millis, "Time"),
    "io.debezium.time.MicroTime": _fixed(time_micros, "MicroTime"),
    "io.debezium.time.NanoTime": _fixed(time_nanos, "NanoTime"),
    "io.debezium.time.Timestamp": _fixed(epoch_millis, "Timestamp"),
    "io.debezium.time.MicroTimestamp": _fixed(epoch_micros, "MicroTimestamp"),
    "io.debezium.time.NanoTimestamp": _fixed(epoch_nanos, "NanoTimestamp"),
    "io.debezium.time.ZonedTimestamp": _fixed(zoned_timestamp, "ZonedTimestamp"),
    "io.debezium.time.ZonedTime": _fixed(zoned_time, "ZonedTime"),
    "io.debezium.time.IsoTimestamp": _fixed(zoned_timestamp, "IsoTimestamp"),
    "org.apache.kafka.connect.data.Timestamp": _fixed(epoch_millis, "Timestamp"),
    "org.apache.kafka.connect.data.Date": _fixed(date_days, "Date"),
    "org.apache.kafka.connect.data.Time": _fixed(time_millis, "Time"),
    "io.debezium.data.Json": _fixed(json_document, "Json"),
}
"""Logical type name → factory(parameters) → converter. Names not listed pass through."""
