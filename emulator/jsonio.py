"""JSON with exact numbers: 85.85 is read as Decimal("85.85") and written back as 85.85."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


class MalformedJson(ValueError):
    """The body is not valid UTF-8 JSON."""


def _refuse_constant(name: str) -> Any:
    raise MalformedJson(f"{name} is not a JSON number")


def loads_exact(body: bytes) -> Any:
    """Parses JSON keeping every non-integer number as an exact ``Decimal``."""
    try:
        text = body.decode("utf-8")
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedJson(str(exc)) from exc


def _exact_decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        # str() of a finite Decimal is valid JSON number syntax ("85.85", "1E+5").
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Serializes to JSON bytes, writing Decimals as exact JSON numbers."""
    return orjson.dumps(value, default=_exact_decimal)
