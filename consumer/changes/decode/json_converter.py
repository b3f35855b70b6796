"""Kafka Connect's JsonConverter wire format, with and without schemas.

With ``schemas.enable=true`` every record is ``{"schema":{...},"payload":...}``
and the schema part is far larger than the payload. It barely changes, so
its bytes are the cache key of a compiled plan: a record whose schema bytes
match a cached plan has only its payload parsed. Without schemas the record
is the payload itself, and column hints stand in for the schema.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import orjson

from schemas.debezium import Decoded, RawRecord, Row

from . import envelope
from .connect_schema import SchemaPlan, compile_key_schema, compile_value_schema
from .exactjson import InexactFloat, NotJson, loads_exact
from .hints import ColumnHint, decode_schemaless_row
from .logical import ColumnError, ValueDecodeError

Loads = Callable[[Any], Any]
Compile = Callable[[Mapping[str, Any]], SchemaPlan]

# Bytes no JSON text starts with, beside the magic byte 0: a framing we do not know.
_NOT_JSON_STARTS = frozenset(range(1, 0x20)) - {0x09, 0x0A, 0x0D}
_SCHEMA_OPEN = b'{"schema":'
_PAYLOAD_SEP = b',"payload":'


class PlanCache:
    """Compiled plans by the exact bytes of their schema in the JsonConverter layout.

    Entries are grouped by the schema's length so that a lookup costs one
    ``find`` and a memcmp, not the hash of a few kilobytes.
    """

    def __init__(self, compile_schema: Compile, max_entries: int = 256) -> None:
        self._compile = compile_schema
        self._max_entries = max_entries
        self._by_length: dict[int, list[tuple[bytes, SchemaPlan]]] = {}
        self._count = 0

    def lookup(self, data: bytes) -> tuple[SchemaPlan, int] | None:
        """The plan and the offset of the payload, when the schema bytes are known."""
        if not data.startswith(_SCHEMA_OPEN) or not data.endswith(b"}"):
            return None
        end = data.find(_PAYLOAD_SEP, len(_SCHEMA_OPEN))
        entries = self._by_length.get(end)
        if entries:
            for schema_bytes, plan in entries:
                if data.startswith(schema_bytes, len(_SCHEMA_OPEN)):
                    return plan, end + len(_PAYLOAD_SEP)
        return None

    def compile(self, data: bytes, schema: Mapping[str, Any], loads: Loads) -> SchemaPlan:
        """Compile ``schema`` and remember it when the record has the standard layout."""
        plan = self._compile(schema)
        end = data.find(_PAYLOAD_SEP, len(_SCHEMA_OPEN))
        if data.startswith(_SCHEMA_OPEN) and end > 0 and data.endswith(b"}"):
            schema_bytes = data[len(_SCHEMA_OPEN) : end]
            try:
                same = loads(schema_bytes) == schema
            except ValueError:
                same = False  # the first ',"payload":' was inside the schema: don't cache
            if same:
                if self._count >= self._max_entries:
                    self._by_length.clear()
                    self._count = 0
                self._by_length.setdefault(end, []).append((schema_bytes, plan))
                self._count += 1
        return plan


_VALUE_PLANS = PlanCache(compile_value_schema)
_KEY_PLANS = PlanCache(compile_key_schema)


def _parse(data: bytes | memoryview, loads: Loads, what: str) -> Any:
    try:
        return loads(data)
    except NotJson as exc:
        raise ValueDecodeError(f"{what} is not JSON: {exc}") from None
    except ValueError:  # orjson.JSONDecodeError
        try:  # json reads what orjson refuses (NaN, Infinity, huge numbers)
            return loads_exact(data)
        except NotJson as exc:  # it says where, not what: the record may hold personal data
            raise ValueDecodeError(f"{what} is not JSON: {exc}") from None


def _is_envelope(document: Any) -> bool:
    return (
        document.__class__ is dict
        and len(document) == 2
        and "payload" in document
        and (document.get("schema") is None or document["schema"].__class__ is dict)
        and "schema" in document
    )


def _split(data: bytes, cache: PlanCache, loads: Loads, what: str) -> tuple[SchemaPlan | None, Any]:
    """(plan, payload) of a record half; plan None when it carries no schema."""
    cached = cache.lookup(data)
    if cached is not None:
        plan, start = cached
        return plan, _parse(memoryview(data)[start:-1], loads, what)
    document = _parse(data, loads, what)
    if not _is_envelope(document):
        return None, document
    schema = document["schema"]
    if schema is None:
        return None, document["payload"]
    return cache.compile(data, schema, loads), document["payload"]


def _decode_key(
    data: bytes | None, hints: Mapping[str, ColumnHint] | None, loads: Loads
) -> Row | None:
    if data is None:
        return None
    plan, payload = _split(data, _KEY_PLANS, loads, "key")
    if payload is None:
        return None
    if payload.__class__ is not dict:
        raise ValueDecodeError(f"key is a JSON {type(payload).__name__}, not an object")
    if plan is not None and plan.rows is not None:
        return plan.rows(payload, "key column")
    return decode_schemaless_row(payload, hints, prefix="key column")


def _decode(
    record: RawRecord,
    hints: Mapping[str, ColumnHint] | None,
    loads: Loads,
    load_key: envelope.KeyLoader | None,
) -> Decoded:
    if load_key is None:
        load_key = partial(_decode_key, record.key, hints, loads)
    data = record.value
    if data and data[0] in _NOT_JSON_STARTS:
        raise ValueDecodeError(
            f"value starts with byte 0x{data[0]:02x}: neither JSON nor the Schema Registry"
            " wire format (magic byte 0)"
        )
    if data is None or (len(data) < 8 and data.strip() == b"null"):
        return envelope.tombstone(record.position, load_key, record.headers)
    plan, payload = _split(data, _VALUE_PLANS, loads, "value")
    if plan is None:
        decode_row = partial(decode_schemaless_row, hints=hints)
        return envelope.interpret(
            record.position, payload, None, decode_row, load_key, record.headers
        )
    return envelope.interpret_planned(record.position, payload, plan, load_key, record.headers)


# Topics that sent a float: parse them exactly from the start, sparing the wasted orjson pass.
_EXACT_TOPICS: set[str] = set()
_MAX_EXACT_TOPICS = 4096


def decode_json_record(
    record: RawRecord,
    hints: Mapping[str, ColumnHint] | None,
    load_key: envelope.KeyLoader | None = None,
) -> Decoded:
    """Decode a JsonConverter record; raises ValueDecodeError when it cannot be read.

    ``load_key`` decodes the key when it is not JSON (an Avro key beside a JSON value)."""
    if record.topic in _EXACT_TOPICS:
        return _decode(record, hints, loads_exact, load_key)
    try:
        return _decode(record, hints, orjson.loads, load_key)
    except InexactFloat:
        # a float somewhere: parse again keeping every number's exact digits
        if len(_EXACT_TOPICS) < _MAX_EXACT_TOPICS:
            _EXACT_TOPICS.add(record.topic)
        return _decode(record, hints, loads_exact, load_key)


def decode_json_key(data: bytes | None, hints: Mapping[str, ColumnHint] | None) -> Row | None:
    """A JsonConverter key on its own (beside an Avro value), numbers exact."""
    return _decode_key(data, hints, loads_exact)


__all__ = ["ColumnError", "PlanCache", "decode_json_key", "decode_json_record"]
