"""Column values → JSON-ready Rfmcube values: the per-value conversions of the mapper.

Every converter takes one decoded column value (never None, never
UNAVAILABLE: the caller handles those) and returns the value to put in a
document, or raises :class:`Reject` with a short reason such as
``expected a decimal, got a string of 3 characters``: the type and size of a
bad value, never the value (it may be personal data, and reasons reach logs
and the dead-letter topic).

Timestamps are written as ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, truncated to the
second: exactly the format of Rfmcube's documentation, and a sub-second
change of ``updatedAt`` alone does not make a new document. A naive
``datetime`` (a column without time zone) is taken as UTC.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from consumer.changes.decode import parse_hint
from consumer.changes.decode.hints import HINT_NAMES
from consumer.changes.decode.logical import describe

Converter = Callable[[Any], Any]


class Reject(ValueError):
    """A value that cannot become the field it feeds; the message is the reason."""


# An identifier written from a number: more digits than any key type holds (numeric(38)
# has 38) means a hostile value, such as 1E+999999999 (a gigabyte once written out).
MAX_TEXT_NUMBER_DIGITS = 100


def iso_utc(moment: datetime) -> str:
    """``2020-01-01T13:06:39Z``: UTC, whole seconds (see the module docstring)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )


def _parse_iso(text: str) -> datetime:
    # Python 3.11's fromisoformat reads "Z", offsets and any fraction length.
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise Reject(f"expected a timestamp, got {describe(text)}") from None


def to_timestamp(value: Any) -> str:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, str):
        return iso_utc(_parse_iso(value))
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    raise Reject(f"expected a timestamp, got {describe(value)}")


def to_decimal(value: Any) -> Decimal:
    """Money: exact. Floats only arrive from schemaless JSON without a type hint;
    their shortest repr is the number as written in the record."""
    if isinstance(value, bool):
        raise Reject(f"expected a decimal, got {describe(value)}")
    number: Decimal
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise Reject(f"expected a decimal, got {describe(value)}") from None
    else:
        raise Reject(f"expected a decimal, got {describe(value)}")
    if not number.is_finite():
        raise Reject("expected a finite decimal, got NaN or Infinity")
    return number


def to_text(value: Any) -> str:
    """Identifiers and codes (``id``, ``status``, relation columns) as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise Reject(f"expected text or an integer, got {describe(value)}")
    if isinstance(value, int | uuid.UUID):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite():
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)  # finite
        if value.adjusted() >= MAX_TEXT_NUMBER_DIGITS or exponent < -MAX_TEXT_NUMBER_DIGITS:
            raise Reject(
                f"expected text or an integer, got a number of more than"
                f" {MAX_TEXT_NUMBER_DIGITS} digits"
            )
        return format(value, "f")
    raise Reject(f"expected text or an integer, got {describe(value)}")


def to_email(value: Any) -> str:
    if not isinstance(value, str):
        raise Reject(f"expected an email address, got {describe(value)}")
    email = value.strip()
    if not email:
        raise Reject("expected an email address, got an empty string")
    return email


_PASS_THROUGH = (str, bool, int, float, dict, list)


def to_json_value(value: Any) -> Any:
    """Any other mapped column: made JSON-ready, its meaning untouched."""
    if isinstance(value, _PASS_THROUGH):
        return value
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise Reject("expected a finite number, got NaN or Infinity")
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    raise Reject(f"unsupported value of type {type(value).__name__}")


def key_text(value: Any) -> str:
    """One primary-key column as text: ``42``, ``'ab'``, a UUID."""
    return to_text(value)


# -- type hints of schemaless topics ------------------------------------------------------


def check_hint(text: str) -> str:
    """Validates a column type hint with the decoder's own parser; returns it normalized.

    Raises ValueError naming the vocabulary (``unknown type 'decimal(x)'; expected ...``).
    """
    try:
        return str(parse_hint(text))
    except ValueError:
        raise ValueError(
            f"unknown type {text!r}; expected one of {', '.join(HINT_NAMES)}"
        ) from None
