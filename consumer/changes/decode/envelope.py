"""What a decoded Debezium value means, whatever wire format carried it.

Input: the value's payload as plain Python (dicts, lists, numbers), what its
schema says it is (or None when there is no schema), and a function that
decodes a row image's column values. Output: a ChangeEvent or a Skipped note.
This covers the Debezium envelope (``before``/``after``/``op``/``source``),
the flattened rows of the ExtractNewRecordState transform (``__op``,
``__deleted``, ...), tombstones, heartbeats, schema changes, transaction
metadata, truncates and logical-decoding messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.debezium import ChangeEvent, Decoded, Op, Position, Row, Skipped

from .connect_schema import ENVELOPE, FLAT, HEARTBEAT, SCHEMA_CHANGE, TRANSACTION, SchemaPlan
from .logical import ValueDecodeError, describe

RowDecoder = Callable[[Row], Row]
KeyLoader = Callable[[], Row | None]
Headers = tuple[tuple[str, bytes | None], ...]

HEARTBEAT_TOPIC_PREFIX = "__debezium-heartbeat"
_ROW_OPS = {"c": Op.CREATE, "u": Op.UPDATE, "d": Op.DELETE, "r": Op.READ}
_SKIPPED_OPS = {"t": "truncate", "m": "message"}
_TRUE_TEXTS = frozenset({"true", "True", "TRUE", "1"})


def classify_payload(payload: dict[str, Any]) -> str:
    """The kind of a schemaless value, from the fields it holds."""
    if (
        "op" in payload
        and "source" in payload
        and ("after" in payload or "before" in payload or "message" in payload)
    ):
        return ENVELOPE
    if "ddl" in payload and ("databaseName" in payload or "tableChanges" in payload):
        return SCHEMA_CHANGE
    if payload.get("status") in ("BEGIN", "END") and "id" in payload and "event_count" in payload:
        return TRANSACTION
    if len(payload) == 1 and "ts_ms" in payload:
        return HEARTBEAT
    return FLAT


def tombstone(position: Position, load_key: KeyLoader, headers: Headers) -> ChangeEvent:
    """A Kafka null value: an idempotent delete of the row the key names."""
    key = load_key()
    if key is None:
        raise ValueDecodeError("tombstone without a key: nothing says which row is gone")
    return ChangeEvent(position, key, Op.DELETE, None, None, tombstone=True, headers=headers)


def interpret_planned(
    position: Position, payload: Any, plan: SchemaPlan, load_key: KeyLoader, headers: Headers
) -> Decoded:
    """:func:`interpret` with a compiled value schema (JSON with schemas, Avro)."""
    rows = plan.rows
    if rows is None:
        return interpret(position, payload, plan.kind, _as_is, load_key, headers)
    return interpret(position, payload, plan.kind, rows, load_key, headers, rows.meta_fields)


def _as_is(row: Row) -> Row:
    return row


def interpret(
    position: Position,
    payload: Any,
    kind: str | None,
    decode_row: RowDecoder,
    load_key: KeyLoader,
    headers: Headers,
    meta_fields: tuple[str, ...] | None = None,
) -> Decoded:
    """Turn one value payload into an event; ``kind`` None means "look at the fields"."""
    if payload is None:
        return tombstone(position, load_key, headers)
    if payload.__class__ is not dict:
        raise ValueDecodeError(f"value is a JSON {type(payload).__name__}, not an object")
    if kind is None:
        kind = classify_payload(payload)
    if kind == ENVELOPE:
        return _from_envelope(position, payload, decode_row, load_key, headers)
    if kind == FLAT:
        return _from_flattened(position, payload, decode_row, load_key, headers, meta_fields)
    return Skipped(position, kind, _skip_detail(kind, payload))


def _skip_detail(kind: str, payload: dict[str, Any]) -> str:
    if kind == TRANSACTION:
        return f"{payload.get('status')} {payload.get('id')}"
    if kind == SCHEMA_CHANGE:
        return str(payload.get("ddl") or "")[:200]
    return ""


def _shown(op: Any) -> str:
    """An op as the record wrote it, when short (an op is metadata, not a column)."""
    return repr(op) if op.__class__ is str and len(op) <= 16 else describe(op)


def _not_an_object(which: str, value: Any) -> ValueDecodeError:
    return ValueDecodeError(f"'{which}' is a JSON {type(value).__name__}, not an object")


def _int_or_none(value: Any) -> int | None:
    return value if value.__class__ is int else None


def _from_envelope(
    position: Position,
    payload: dict[str, Any],
    decode_row: RowDecoder,
    load_key: KeyLoader,
    headers: Headers,
) -> Decoded:
    op_text = payload.get("op")
    op = _ROW_OPS.get(op_text)  # type: ignore[arg-type]
    if op is None:
        skipped = _SKIPPED_OPS.get(op_text)  # type: ignore[arg-type]
        if skipped is not None:
            return Skipped(position, skipped, _source_table(payload))
        raise ValueDecodeError(f"unknown op {_shown(op_text)}")
    # inlined image and number checks: this is the hot path of every row change
    before = payload.get("before")
    if before is not None:
        if before.__class__ is not dict:
            raise _not_an_object("before", before)
        before = decode_row(before)
    after = payload.get("after")
    if after is not None:
        if after.__class__ is not dict:
            raise _not_an_object("after", after)
        after = decode_row(after)
    ts_ms = payload.get("ts_ms")
    source = payload.get("source")
    source_ts_ms = source.get("ts_ms") if source.__class__ is dict else None
    return ChangeEvent(
        position,
        load_key(),
        op,
        before,
        after,
        ts_ms=ts_ms if ts_ms.__class__ is int else None,
        source_ts_ms=source_ts_ms if source_ts_ms.__class__ is int else None,
        headers=headers,
    )


def _source_table(payload: dict[str, Any]) -> str:
    source = payload.get("source")
    if source.__class__ is not dict:
        return ""
    return ".".join(str(source[part]) for part in ("db", "schema", "table") if source.get(part))


def _header(headers: Headers, name: str) -> str | None:
    for header_name, value in headers:
        if header_name == name and value is not None:
            return value.decode("utf-8", errors="replace").strip('"')
    return None


def _from_flattened(
    position: Position,
    row: dict[str, Any],
    decode_row: RowDecoder,
    load_key: KeyLoader,
    headers: Headers,
    meta_fields: tuple[str, ...] | None,
) -> Decoded:
    if meta_fields is None:  # no schema: every '__' field is one the transform added
        meta_fields = tuple(name for name in row if name[:2] == "__")
    meta = {name: row.pop(name, None) for name in meta_fields}
    op_text = meta.get("__op")
    deleted = meta.get("__deleted")
    if headers:  # add.headers puts the same facts in headers instead
        op_text = op_text or _header(headers, "__op")
        deleted = deleted if deleted is not None else _header(headers, "__deleted")
    is_deleted = deleted is True or (deleted.__class__ is str and deleted in _TRUE_TEXTS)
    if is_deleted or op_text == "d":
        op = Op.DELETE
    elif op_text is None:
        op = Op.UPDATE  # no '__op': an upsert whose create/update nature is unknown
    else:
        known = _ROW_OPS.get(op_text)
        if known is None:
            skipped = _SKIPPED_OPS.get(op_text)
            if skipped is not None:
                return Skipped(position, skipped, str(meta.get("__table") or ""))
            raise ValueDecodeError(f"unknown op {_shown(op_text)}")
        op = known
    image = decode_row(row)
    return ChangeEvent(
        position,
        load_key(),
        op,
        image if op is Op.DELETE else None,
        None if op is Op.DELETE else image,
        ts_ms=_int_or_none(meta.get("__ts_ms")),
        source_ts_ms=_int_or_none(meta.get("__source_ts_ms")),
        headers=headers,
    )
