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
import sys
from decimal import Decimal
from typing import Any

import orjson


class InexactFloat(Exception):
    """A float came out of orjson: parse the document again, exactly."""


class NotJson(ValueError):
    """The text is not JSON; the message says where or why, never what the text holds."""


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
    except json.JSONDecodeError as exc:
        raise NotJson(f"{exc.msg} at character {exc.pos} of {len(exc.doc)}") from None
    except UnicodeDecodeError as exc:
        raise NotJson(f"not UTF-8 at byte {exc.start}") from None
    except RecursionError:
        # orjson stops at 1024 levels, json near the interpreter's recursion limit
        raise NotJson("nested too deeply to parse") from None
    except ValueError:
        # the only other ValueError of json: an integer past Python's int/str limit
        limit = sys.get_int_max_str_digits()
        raise NotJson(f"a number of more than {limit} digits") from None


def contains_float(value: Any) -> bool:
    """True when a float hides anywhere in a parsed JSON value.

    A loop, not a recursion: a value nested a thousand levels deep in a
    column nobody maps must not raise RecursionError.
    """
    cls = value.__class__
    if cls is float:
        return True
    if cls is not dict and cls is not list:
        return False
    pending = [value]
    while pending:
        node = pending.pop()
        for item in node.values() if node.__class__ is dict else node:
            kind = item.__class__
            if kind is float:
                return True
            if kind is dict or kind is list:
                pending.append(item)
    return False


def loads_text_exact(text: str | bytes) -> Any:
    """Parse a small embedded JSON document exactly (orjson first, re-parse on a float)."""
    parsed = loads_fast(text)
    if contains_float(parsed):
        return loads_exact(text)
    return parsed
