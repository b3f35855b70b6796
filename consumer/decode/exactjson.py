"""JSON parsing that never loses a decimal digit.

orjson is fast but turns ``85.85`` into a binary float (and integers past 64
bits into floats too). The decoders parse with orjson and raise
:class:`InexactFloat` the moment they meet a float; the caller then parses the
same bytes again with ``json.loads(parse_float=Decimal)``, which keeps every
number exact. Records without floats (the usual case: Debezium sends decimals
as base64 or strings) pay for orjson only.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


class InexactFloat(Exception):
    """A float came out of orjson: parse the document again, exactly."""


class NotJson(ValueError):
    """The text is not JSON."""


def loads_fast(data: bytes | memoryview | str) -> Any:
    """Parse with orjson; floats may appear and must be caught by the caller."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson refuses what json accepts (NaN, Infinity): let the exact parser judge
        return loads_exact(data)


# built once: json.loads(parse_float=...) would build a decoder per call
_EXACT_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=Decimal)


def loads_exact(data: bytes | memoryview | str) -> Any:
    """Parse with every non-integer number as a Decimal of its own text."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        return _EXACT_DECODER.decode(text)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise NotJson(str(exc)) from None


def contains_float(value: Any) -> bool:
    """True when a float hides anywhere in a parsed JSON value."""
    cls = value.__class__
    if cls is float:
        return True
    if cls is dict:
        return any(contains_float(item) for item in value.values())
    if cls is list:
        return any(contains_float(item) for item in value)
    return False


def loads_text_exact(text: str | bytes) -> Any:
    """Parse a small embedded JSON document exactly (orjson first, re-parse on a float)."""
    parsed = loads_fast(text)
    if contains_float(parsed):
        return loads_exact(text)
    return parsed


def preview(data: bytes | str, limit: int = 60) -> str:
    """The first characters of a payload, for an error message a person can read."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return text[:limit] + ("…" if len(text) > limit else "")
