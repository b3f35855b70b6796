"""Debezium envelopes from PostgreSQL 15 and MySQL 8, with and without schemas."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from consumer.changes.decode import decode_record, parse_hint
from schemas.debezium import ChangeEvent, Op, Skipped
from testkit.builders import MYSQL_SOURCE, PG_SOURCE
from testkit.debezium import (
    encode_decimal,
    envelope_schema,
    field,
    record,
    struct,
    with_schema,
)

ORDER_FIELDS = [
    field("id", "int64", optional=False),
    field("customer_id", "int64"),
    field("customer_email", "string"),
    field("status", "string"),
    field(
        "amount",
        "bytes",
        name="org.apache.kafka.connect.data.Decimal",
        version=1,
        parameters={"scale": "2", "connect.decimal.precision": "12"},
    ),
    field("created_at", "string", name="io.debezium.time.ZonedTimestamp", version=1),
    field("updated_at", "string", name="io.debezium.time.ZonedTimestamp", version=1),
    field("notes", "string"),
]
ORDER_SCHEMA = envelope_schema("shop.public.orders", ORDER_FIELDS, "postgresql")
ORDER_KEY_SCHEMA = struct(
    "shop.public.orders.Key", [field("id", "int64", optional=False)], optional=False
)
ORDER_HINTS = {
    "amount": parse_hint("decimal(2)"),
    "created_at": parse_hint("zoned_timestamp"),
    "updated_at": parse_hint("zoned_timestamp"),
}


def order_row(order_id: int = 1001, amount: str = "85.85", status: str = "paid") -> dict[str, Any]:
    return {
        "id": order_id,
        "customer_id": 42,
        "customer_email": "ada@example.com",
        "status": status,
        "amount": encode_decimal(Decimal(amount), 2),
        "created_at": "2024-06-03T14:20:11.482913Z",
        "updated_at": "2024-06-03T16:02:45Z",
        "notes": None,
    }


def expected_order(
    order_id: int = 1001, amount: str = "85.85", status: str = "paid"
) -> dict[str, Any]:
    return {
        "id": order_id,
        "customer_id": 42,
        "customer_email": "ada@example.com",
        "status": status,
        "amount": Decimal(amount),
        "created_at": datetime(2024, 6, 3, 14, 20, 11, 482913, tzinfo=UTC),
        "updated_at": datetime(2024, 6, 3, 16, 2, 45, tzinfo=UTC),
        "notes": None,
    }


def pg_envelope(op: str, before: Any, after: Any, snapshot: str = "false") -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": {**PG_SOURCE, "snapshot": snapshot},
        "op": op,
        "ts_ms": 1717430400456,
        "transaction": None,
    }


def both_forms(payload: dict[str, Any], key: dict[str, Any]) -> list[ChangeEvent]:
    """Decode the same change sent with schemas and without (then with hints)."""
    with_schemas = record(with_schema(ORDER_SCHEMA, payload), with_schema(ORDER_KEY_SCHEMA, key))
    schemaless = record(payload, key)
    events = [decode_record(with_schemas), decode_record(schemaless, ORDER_HINTS)]
    assert all(isinstance(event, ChangeEvent) for event in events)
    return events  # type: ignore[return-value]


def test_postgres_snapshot_read_is_an_upsert_with_the_row_decoded() -> None:
    for event in both_forms(pg_envelope("r", None, order_row(), snapshot="true"), {"id": 1001}):
        assert event.op is Op.READ
        assert event.key == {"id": 1001}
        assert event.before is None
        assert event.after == expected_order()
        assert event.ts_ms == 1717430400456
        assert event.source_ts_ms == 1717430400123
        assert not event.tombstone and not event.is_delete


def test_postgres_streaming_create() -> None:
    for event in both_forms(pg_envelope("c", None, order_row()), {"id": 1001}):
        assert event.op is Op.CREATE
        assert event.after == expected_order()


def test_postgres_update_without_before_image() -> None:
    # REPLICA IDENTITY DEFAULT: PostgreSQL sends no before-image for updates
    payload = pg_envelope("u", None, order_row(status="shipped"))
    for event in both_forms(payload, {"id": 1001}):
        assert event.op is Op.UPDATE
        assert event.before is None
        assert event.after == expected_order(status="shipped")


def test_postgres_update_with_full_before_image() -> None:
    payload = pg_envelope("u", order_row(amount="80.00"), order_row(amount="85.85"))
    for event in both_forms(payload, {"id": 1001}):
        assert event.before == expected_order(amount="80.00")
        assert event.after == expected_order(amount="85.85")


def test_postgres_delete_whose_before_holds_only_key_columns() -> None:
    before = {name: None for name in order_row()} | {"id": 1001}
    for event in both_forms(pg_envelope("d", before, None), {"id": 1001}):
        assert event.op is Op.DELETE and event.is_delete
        assert event.after is None
        assert event.before is not None and event.before["id"] == 1001
        assert event.before["amount"] is None
        assert not event.tombstone


def test_delete_with_null_before_still_names_the_row_by_key() -> None:
    for event in both_forms(pg_envelope("d", None, None), {"id": 1001}):
        assert event.op is Op.DELETE
        assert event.before is None and event.after is None
        assert event.key == {"id": 1001}


MYSQL_FIELDS = [
    field("id", "int32", optional=False),
    field("email", "string", optional=False),
    field(
        "is_vip",
        "int16",
        parameters={
            "__debezium.source.column.type": "TINYINT",
            "__debezium.source.column.length": "1",
        },
    ),
    field("newsletter", "boolean"),
    field("signed_up", "int64", name="io.debezium.time.Timestamp", version=1),
    field("last_seen", "string", name="io.debezium.time.ZonedTimestamp", version=1),
    field("birthday", "int32", name="io.debezium.time.Date", version=1),
    field("prefs", "string", name="io.debezium.data.Json", version=1),
]
MYSQL_SCHEMA = envelope_schema("shop.shop.customers", MYSQL_FIELDS, "mysql")


def mysql_row(vip: int) -> dict[str, Any]:
    return {
        "id": 7,
        "email": "bob@example.com",
        "is_vip": vip,
        "newsletter": True,
        "signed_up": 1717430400123,  # DATETIME(3): milliseconds, UTC wall clock
        "last_seen": "2024-06-03T16:02:45.5+02:00",
        "birthday": 19000,
        "prefs": '{"lang": "it", "discount": 0.15}',
    }


def test_mysql_update_with_before_image_and_typed_columns() -> None:
    payload = {
        "before": mysql_row(0),
        "after": mysql_row(1),
        "source": MYSQL_SOURCE,
        "op": "u",
        "ts_ms": 1717430400321,
        "transaction": None,
    }
    key = {"id": 7}
    raw = record(with_schema(MYSQL_SCHEMA, payload), key, topic="shop.shop.customers")
    event = decode_record(raw)
    assert isinstance(event, ChangeEvent)
    assert event.key == {"id": 7}
    assert event.before is not None and event.after is not None
    assert event.before["is_vip"] is False
    assert event.after == {
        "id": 7,
        "email": "bob@example.com",
        "is_vip": True,
        "newsletter": True,
        "signed_up": datetime(2024, 6, 3, 16, 0, 0, 123000, tzinfo=UTC),
        "last_seen": datetime(2024, 6, 3, 14, 2, 45, 500000, tzinfo=UTC),
        "birthday": date(2022, 1, 8),
        "prefs": {"lang": "it", "discount": Decimal("0.15")},
    }
    assert event.source_ts_ms == 1717430400000


def test_kafka_null_value_is_a_tombstone_delete_of_the_key() -> None:
    for key in ({"id": 1001}, with_schema(ORDER_KEY_SCHEMA, {"id": 1001})):
        event = decode_record(record(None, key))
        assert event == ChangeEvent(
            record(None).position, {"id": 1001}, Op.DELETE, None, None, tombstone=True
        )


def test_flattened_tombstone_as_json_null_or_null_payload_is_a_tombstone() -> None:
    for raw in (
        record(None, {"id": 5}, raw_value=b"null"),
        record(with_schema(ORDER_KEY_SCHEMA, None), {"id": 5}),
    ):
        event = decode_record(raw)
        assert isinstance(event, ChangeEvent)
        assert event.tombstone and event.op is Op.DELETE and event.key == {"id": 5}


def test_primary_key_change_decodes_each_record_and_keeps_headers() -> None:
    new_key = b'{"id":2002}'
    old_key = b'{"id":1001}'
    delete = record(
        pg_envelope("d", order_row(1001), None),
        {"id": 1001},
        headers=(("__debezium.newkey", new_key),),
    )
    tomb = record(None, {"id": 1001}, offset=8)
    create = record(
        pg_envelope("c", None, order_row(2002)),
        {"id": 2002},
        offset=9,
        headers=(("__debezium.oldkey", old_key),),
    )
    decoded = [decode_record(r, ORDER_HINTS) for r in (delete, tomb, create)]
    assert [(e.op, e.key, e.tombstone) for e in decoded if isinstance(e, ChangeEvent)] == [
        (Op.DELETE, {"id": 1001}, False),
        (Op.DELETE, {"id": 1001}, True),
        (Op.CREATE, {"id": 2002}, False),
    ]
    assert decoded[0].headers == (("__debezium.newkey", new_key),)  # type: ignore[union-attr]
    assert decoded[2].headers == (("__debezium.oldkey", old_key),)  # type: ignore[union-attr]


def test_truncate_and_message_are_skipped_with_their_kind() -> None:
    truncate = pg_envelope("t", None, None)
    message = {
        "op": "m",
        "ts_ms": 1,
        "source": PG_SOURCE,
        "message": {"prefix": "audit", "content": "aGVsbG8="},
    }
    assert decode_record(record(truncate)) == Skipped(
        record(None).position, "truncate", "shop.public.orders"
    )
    decoded = decode_record(record(message))
    assert isinstance(decoded, Skipped) and decoded.kind == "message"
    with_schemas = decode_record(record(with_schema(ORDER_SCHEMA, truncate)))
    assert isinstance(with_schemas, Skipped) and with_schemas.kind == "truncate"


def test_heartbeats_are_skipped_by_topic_by_shape_and_by_schema_name() -> None:
    heartbeat_schema = struct(
        "io.debezium.connector.common.Heartbeat",
        [field("ts_ms", "int64", optional=False)],
        optional=False,
    )
    for raw in (
        record({"ts_ms": 1717430400000}, {"serverName": "shop"}, topic="__debezium-heartbeat.shop"),
        record({"ts_ms": 1717430400000}, {"serverName": "shop"}, topic="shop.public.orders"),
        record(with_schema(heartbeat_schema, {"ts_ms": 1}), None, topic="heartbeats"),
    ):
        decoded = decode_record(raw)
        assert isinstance(decoded, Skipped) and decoded.kind == "heartbeat"


def test_schema_change_records_are_skipped() -> None:
    value = {
        "source": MYSQL_SOURCE,
        "ts_ms": 1717430400000,
        "databaseName": "shop",
        "schemaName": None,
        "ddl": "ALTER TABLE customers ADD COLUMN phone VARCHAR(32)",
        "tableChanges": [{"type": "ALTER", "id": '"shop"."customers"', "table": {}}],
    }
    schema = struct(
        "io.debezium.connector.mysql.SchemaChangeValue",
        [
            field("databaseName", "string"),
            field("ddl", "string"),
        ],
        optional=False,
    )
    for raw in (
        record(value, {"databaseName": "shop"}, topic="shop"),
        record(with_schema(schema, {"databaseName": "shop", "ddl": "DROP TABLE x"})),
    ):
        decoded = decode_record(raw)
        assert isinstance(decoded, Skipped) and decoded.kind == "schema_change"


def test_transaction_metadata_records_are_skipped() -> None:
    begin = {
        "status": "BEGIN",
        "id": "571:53195829",
        "event_count": None,
        "data_collections": None,
        "ts_ms": 1717430400000,
    }
    end = {
        "status": "END",
        "id": "571:53195829",
        "event_count": 2,
        "data_collections": [{"data_collection": "public.orders", "event_count": 2}],
        "ts_ms": 1717430400001,
    }
    schema = struct(
        "io.debezium.connector.common.TransactionMetadataValue",
        [
            field("status", "string", optional=False),
            field("id", "string", optional=False),
        ],
        optional=False,
    )
    for raw in (
        record(begin, {"id": "571:53195829"}, topic="shop.transaction"),
        record(end, {"id": "571:53195829"}, topic="shop.transaction"),
        record(with_schema(schema, begin)),
    ):
        decoded = decode_record(raw)
        assert isinstance(decoded, Skipped) and decoded.kind == "transaction"


def test_mysql_schemaless_create_and_delete_with_hints() -> None:
    hints = {
        "is_vip": parse_hint("bool"),
        "signed_up": parse_hint("epoch_millis"),
        "last_seen": parse_hint("zoned_timestamp"),
        "birthday": parse_hint("date_days"),
        "prefs": parse_hint("json"),
    }
    row = mysql_row(1)
    create = {"before": None, "after": row, "source": MYSQL_SOURCE, "op": "c", "ts_ms": 1}
    delete = {"before": mysql_row(0), "after": None, "source": MYSQL_SOURCE, "op": "d", "ts_ms": 2}
    created = decode_record(record(create, {"id": 7}, topic="shop.shop.customers"), hints)
    deleted = decode_record(record(delete, {"id": 7}, topic="shop.shop.customers"), hints)
    assert isinstance(created, ChangeEvent) and isinstance(deleted, ChangeEvent)
    assert created.op is Op.CREATE and created.after is not None
    assert created.after["is_vip"] is True
    assert created.after["signed_up"] == datetime(2024, 6, 3, 16, 0, 0, 123000, tzinfo=UTC)
    assert created.after["prefs"] == {"lang": "it", "discount": Decimal("0.15")}
    assert deleted.op is Op.DELETE and deleted.after is None and deleted.before is not None
    assert deleted.before["is_vip"] is False and deleted.before["birthday"] == date(2022, 1, 8)
