"""Rows flattened by the ExtractNewRecordState transform, in each delete mode."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from consumer.changes.decode import decode_record, parse_hint
from schemas.debezium import ChangeEvent, Op, Skipped
from testkit.debezium import encode_decimal, field, record, struct, with_schema

HINTS = {"amount": parse_hint("decimal(2)")}


def flat_row(**added: Any) -> dict[str, Any]:
    return {"id": 1001, "status": "paid", "amount": encode_decimal(Decimal("85.85"), 2), **added}


def decode_event(value: Any, headers: tuple[tuple[str, bytes | None], ...] = ()) -> ChangeEvent:
    event = decode_record(record(value, {"id": 1001}, headers=headers), HINTS)
    assert isinstance(event, ChangeEvent)
    return event


COLUMNS = {"id": 1001, "status": "paid", "amount": Decimal("85.85")}


def test_flattened_row_without_op_is_an_upsert() -> None:
    event = decode_event(flat_row())
    assert event.op is Op.UPDATE
    assert event.after == COLUMNS and event.before is None


def test_added_fields_are_read_and_removed_from_the_row() -> None:
    event = decode_event(
        flat_row(
            __op="c",
            __table="orders",
            __lsn=24023928,
            __source_ts_ms=1717430400123,
            __ts_ms=1717430400456,
            __deleted="false",
        )
    )
    assert event.op is Op.CREATE
    assert event.after == COLUMNS
    assert event.source_ts_ms == 1717430400123
    assert event.ts_ms == 1717430400456


def test_snapshot_op_r_is_kept() -> None:
    assert decode_event(flat_row(__op="r")).op is Op.READ


def test_rewrite_mode_delete_with_deleted_as_string_true() -> None:
    event = decode_event(flat_row(__op="d", __deleted="true"))
    assert event.op is Op.DELETE
    assert event.before == COLUMNS and event.after is None
    assert not event.tombstone


def test_rewrite_mode_delete_with_deleted_as_boolean_and_without_op() -> None:
    event = decode_event(flat_row(__deleted=True))
    assert event.op is Op.DELETE and event.before == COLUMNS


def test_deleted_false_is_not_a_delete() -> None:
    assert decode_event(flat_row(__deleted=False)).op is Op.UPDATE
    assert decode_event(flat_row(__op="u", __deleted="false")).op is Op.UPDATE


def test_op_and_deleted_given_as_headers_by_add_headers() -> None:
    event = decode_event(flat_row(), headers=(("__op", b"d"), ("__deleted", b"true")))
    assert event.op is Op.DELETE and event.before == COLUMNS
    assert decode_event(flat_row(), headers=(("__op", b'"c"'),)).op is Op.CREATE


def test_tombstone_mode_delete_arrives_as_a_null_value() -> None:
    event = decode_record(record(None, {"id": 1001}), HINTS)
    assert isinstance(event, ChangeEvent)
    assert event.tombstone and event.op is Op.DELETE and event.key == {"id": 1001}


def test_flattened_row_with_schema_decodes_columns_and_strips_added_fields() -> None:
    schema = struct(
        "shop.public.orders.Value",
        [
            field("id", "int64", optional=False),
            field("status", "string"),
            field(
                "amount",
                "bytes",
                name="org.apache.kafka.connect.data.Decimal",
                parameters={"scale": "2"},
            ),
            field("__op", "string"),
            field("__deleted", "string"),
            field("__source_ts_ms", "int64"),
        ],
    )
    value = with_schema(schema, flat_row(__op="u", __deleted="false", __source_ts_ms=5))
    event = decode_record(record(value, {"id": 1001}))  # no hints: the schema says it all
    assert isinstance(event, ChangeEvent)
    assert event.op is Op.UPDATE and event.after == COLUMNS and event.source_ts_ms == 5
    deleted = with_schema(schema, flat_row(__op="d", __deleted="true", __source_ts_ms=6))
    event = decode_record(record(deleted, {"id": 1001}))
    assert isinstance(event, ChangeEvent)
    assert event.op is Op.DELETE and event.before == COLUMNS and event.after is None


def test_flattened_truncate_is_skipped() -> None:
    decoded = decode_record(record(flat_row(__op="t", __table="orders")))
    assert isinstance(decoded, Skipped) and decoded.kind == "truncate"
