"""The default mapping applied to realistic rows of the reference shop."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from consumer.changes.mapping import Mapping, fill_unavailable
from consumer.errors import BadRecord
from schemas.debezium import UNAVAILABLE, ChangeEvent, Op, Position
from schemas.entities import Kind, MappedRow
from schemas.rfmcube import dumps

CUSTOMERS = "shop.public.customers"
ORDERS = "shop.public.orders"
ITEMS = "shop.public.order_items"
CREATED = datetime(2020, 1, 1, 13, 6, 39, tzinfo=UTC)
UPDATED = datetime(2020, 1, 2, 8, 0, 0, 250_000, tzinfo=UTC)


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return Mapping.load(None)


def event(
    topic: str,
    op: Op,
    *,
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    key: dict[str, Any] | None = None,
    tombstone: bool = False,
    offset: int = 7,
    ts_ms: int | None = 1_700_000_000_500,
    source_ts_ms: int | None = 1_700_000_000_000,
) -> ChangeEvent:
    image = after or before
    if key is None and image is not None:
        key = {"id": image["id"]}
    return ChangeEvent(
        position=Position(topic, 0, offset),
        key=key,
        op=op,
        before=before,
        after=after,
        ts_ms=ts_ms,
        source_ts_ms=source_ts_ms,
        tombstone=tombstone,
    )


def customer_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 1,
        "email": "1test@rfmcube.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "+39 02 1234",
        "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0",
        "newsletter": True,
        "notes": "x" * 5000,
        "created_at": CREATED,
        "updated_at": UPDATED,
    }
    row.update(changes)
    return row


def order_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 1,
        "customer_id": 1,
        "customer_email": None,
        "status": "10",
        "status_label": "Completato",
        "amount": Decimal("85.85"),
        "currency": "EUR",
        "delivery_province": "MI",
        "created_at": datetime(2020, 1, 1, 13, 30, 39, tzinfo=UTC),
        "updated_at": datetime(2020, 1, 1, 13, 30, 39, tzinfo=UTC),
    }
    row.update(changes)
    return row


def item_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 1342,
        "order_id": 1,
        "product_id": 43421,
        "sku": "NK-AIR-42",
        "brand": "nike",
        "quantity": 2,
        "unit_price": Decimal("42.90"),
    }
    row.update(changes)
    return row


def upsert(mapping: Mapping, ev: ChangeEvent) -> MappedRow:
    change = mapping.map_event(ev)
    assert change is not None and change.row is not None
    return change.row


# -- upserts ------------------------------------------------------------------------------


def test_customer_row_maps_to_rfmcube_fields_only(mapping: Mapping) -> None:
    change = mapping.map_event(event(CUSTOMERS, Op.CREATE, after=customer_row()))
    assert change is not None
    assert change.kind is Kind.CUSTOMER and change.key == "1" and not change.is_delete
    assert change.ts_ms == 1_700_000_000_000  # when the database committed it
    assert change.position == Position(CUSTOMERS, 0, 7)
    row = change.row
    assert row is not None
    assert row.fields == {
        "email": "1test@rfmcube.com",
        "id": "1",
        "createdAt": "2020-01-01T13:06:39Z",
        "updatedAt": "2020-01-02T08:00:00Z",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "phone": "+39 02 1234",
        "newsletter": True,
    }
    assert row.email == "1test@rfmcube.com"
    assert row.parent is None and row.unavailable == frozenset()


def test_secrets_and_unlisted_columns_never_reach_a_document(mapping: Mapping) -> None:
    rows = [
        upsert(mapping, event(CUSTOMERS, Op.READ, after=customer_row())),
        upsert(mapping, event(ORDERS, Op.CREATE, after=order_row(password_hash="leak"))),
        upsert(mapping, event(ITEMS, Op.UPDATE, after=item_row(notes="internal"))),
    ]
    for row in rows:
        body = dumps(row.fields)
        assert b"argon2id" not in body and b"password" not in body
        assert b"xxxxx" not in body and b"notes" not in body
        assert b"leak" not in body and b"internal" not in body


def test_order_row_nests_delivery_province_and_names_its_customer(mapping: Mapping) -> None:
    row = upsert(mapping, event(ORDERS, Op.UPDATE, after=order_row()))
    assert row.kind is Kind.ORDER and row.key == "1"
    assert row.fields == {
        "status": "10",
        "statusLabel": "Completato",
        "id": "1",
        "createdAt": "2020-01-01T13:30:39Z",
        "updatedAt": "2020-01-01T13:30:39Z",
        "amount": Decimal("85.85"),
        "currency": "EUR",
        "delivery": {"province": "MI"},
    }
    assert row.parent == "1" and row.email is None


def test_guest_order_has_no_parent_and_carries_its_email(mapping: Mapping) -> None:
    after = order_row(id=9, customer_id=None, customer_email="guest@example.com")
    row = upsert(mapping, event(ORDERS, Op.CREATE, after=after))
    assert row.parent is None
    assert row.email == "guest@example.com"
    assert "customerEmail" not in row.fields and "customerId" not in row.fields


def test_order_without_customer_id_or_email_is_a_bad_record(mapping: Mapping) -> None:
    ev = event(ORDERS, Op.CREATE, after=order_row(customer_id=None, customer_email=""))
    with pytest.raises(BadRecord) as caught:
        mapping.map_event(ev)
    assert caught.value.position == ev.position
    assert "customer_id" in caught.value.reason and "customer_email" in caught.value.reason


def test_item_row_as_in_the_documentation(mapping: Mapping) -> None:
    row = upsert(mapping, event(ITEMS, Op.CREATE, after=item_row()))
    assert row.kind is Kind.ITEM and row.key == "1342" and row.parent == "1"
    assert row.fields == {
        "item_id": 1342,
        "product_id": 43421,
        "brand": "nike",
        "sku": "NK-AIR-42",
        "quantity": 2,
        "price": Decimal("42.90"),
    }


def test_item_without_order_is_a_bad_record(mapping: Mapping) -> None:
    with pytest.raises(BadRecord, match="column order_id"):
        mapping.map_event(event(ITEMS, Op.CREATE, after=item_row(order_id=None)))


def test_unmapped_topic_maps_to_nothing(mapping: Mapping) -> None:
    assert mapping.map_event(event("shop.public.payments", Op.CREATE, after={"id": 1})) is None


# -- timestamps and money -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        datetime(2020, 1, 1, 15, 6, 39, tzinfo=timezone(timedelta(hours=2))),
        datetime(2020, 1, 1, 8, 6, 39, 999_999, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2020, 1, 1, 13, 6, 39),  # a column without time zone: taken as UTC
        "2020-01-01T14:06:39.123456+01:00",  # ZonedTimestamp text without a type hint
        "2020-01-01T13:06:39Z",
    ],
)
def test_timestamps_come_out_in_utc_with_z(mapping: Mapping, value: Any) -> None:
    row = upsert(mapping, event(CUSTOMERS, Op.UPDATE, after=customer_row(created_at=value)))
    assert row.fields["createdAt"] == "2020-01-01T13:06:39Z"


def test_money_is_exact_in_the_bytes(mapping: Mapping) -> None:
    row = upsert(mapping, event(ORDERS, Op.CREATE, after=order_row(amount=Decimal("85.85"))))
    assert dumps({"amount": row.fields["amount"]}) == b'{"amount":85.85}'
    row = upsert(mapping, event(ORDERS, Op.CREATE, after=order_row(amount=Decimal("0.30"))))
    assert dumps(row.fields["amount"]) == b"0.30"  # never 0.30000000000000004


def test_money_from_a_float_keeps_the_number_as_written(mapping: Mapping) -> None:
    # schemaless JSON read without a type hint: the float repr is the JSON text
    row = upsert(mapping, event(ORDERS, Op.CREATE, after=order_row(amount=85.85)))
    assert row.fields["amount"] == Decimal("85.85")
    assert dumps(row.fields["amount"]) == b"85.85"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"amount": "abc"}, "column amount: expected a decimal, got a string of 3 characters"),
        ({"amount": None}, "column amount: mandatory for an order but null"),
        (
            {"amount": Decimal("NaN")},
            "column amount: expected a finite decimal, got NaN or Infinity",
        ),
        (
            {"created_at": "yesterday"},
            "column created_at: expected a timestamp, got a string of 9 characters",
        ),
        ({"created_at": 1577884000000}, "column created_at: expected a timestamp"),
    ],
)
def test_unmappable_order_values_are_bad_records(
    mapping: Mapping, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(BadRecord) as caught:
        mapping.map_event(event(ORDERS, Op.CREATE, after=order_row(**changes)))
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"email": None}, "column email: mandatory for a customer but null"),
        ({"email": "  "}, "column email: expected an email address, got an empty string"),
        ({"updated_at": None}, "column updated_at: mandatory for a customer but null"),
    ],
)
def test_customer_without_email_or_timestamps_is_a_bad_record(
    mapping: Mapping, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(BadRecord) as caught:
        mapping.map_event(event(CUSTOMERS, Op.CREATE, after=customer_row(**changes)))
    assert caught.value.reason == reason


def test_customer_row_missing_a_timestamp_column_is_a_bad_record(mapping: Mapping) -> None:
    after = customer_row()
    del after["created_at"]
    with pytest.raises(BadRecord, match="column created_at: mandatory for a customer but absent"):
        mapping.map_event(event(CUSTOMERS, Op.CREATE, after=after))


def test_other_value_types_become_json(mapping: Mapping) -> None:
    after = customer_row(phone=None, first_name=date(1990, 5, 17))
    row = upsert(mapping, event(CUSTOMERS, Op.UPDATE, after=after))
    assert row.fields["phone"] is None  # a cleared column is sent as null
    assert row.fields["firstName"] == "1990-05-17"


def test_ts_ms_falls_back_to_debezium_time(mapping: Mapping) -> None:
    ev = event(CUSTOMERS, Op.CREATE, after=customer_row(), source_ts_ms=None)
    change = mapping.map_event(ev)
    assert change is not None and change.ts_ms == 1_700_000_000_500


# -- unchanged TOAST --------------------------------------------------------------------------


def test_unavailable_columns_are_listed_and_absent_from_fields(mapping: Mapping) -> None:
    after = order_row(delivery_province=UNAVAILABLE, status_label=UNAVAILABLE)
    row = upsert(mapping, event(ORDERS, Op.UPDATE, after=after))
    assert row.unavailable == {"delivery.province", "statusLabel"}
    assert "delivery" not in row.fields and "statusLabel" not in row.fields
    assert UNAVAILABLE not in row.fields.values()


def test_an_unread_column_that_is_not_sent_changes_nothing(mapping: Mapping) -> None:
    row = upsert(mapping, event(CUSTOMERS, Op.UPDATE, after=customer_row(notes=UNAVAILABLE)))
    assert row.unavailable == frozenset()
    assert row == upsert(mapping, event(CUSTOMERS, Op.UPDATE, after=customer_row()))


def test_unavailable_fields_are_filled_from_the_stored_row(mapping: Mapping) -> None:
    stored = upsert(mapping, event(ORDERS, Op.CREATE, after=order_row()))
    after = order_row(delivery_province=UNAVAILABLE, amount=Decimal("90.00"))
    row = fill_unavailable(upsert(mapping, event(ORDERS, Op.UPDATE, after=after)), stored)
    assert row.unavailable == frozenset()
    assert row.fields["delivery"] == {"province": "MI"}
    assert row.fields["amount"] == Decimal("90.00")


def test_unavailable_guest_email_is_named_customer_email(mapping: Mapping) -> None:
    after = order_row(customer_id=None, customer_email=UNAVAILABLE)
    row = upsert(mapping, event(ORDERS, Op.UPDATE, after=after))
    assert row.unavailable == {"customerEmail"} and row.email is None
    stored = upsert(mapping, event(ORDERS, Op.CREATE, after=order_row(customer_email="g@x.it")))
    assert fill_unavailable(row, stored).email == "g@x.it"


def test_unavailable_customer_email_keeps_the_stored_one(mapping: Mapping) -> None:
    stored = upsert(mapping, event(CUSTOMERS, Op.CREATE, after=customer_row()))
    row = upsert(mapping, event(CUSTOMERS, Op.UPDATE, after=customer_row(email=UNAVAILABLE)))
    assert row.unavailable == {"email"} and "email" not in row.fields
    filled = fill_unavailable(row, stored)
    assert filled.email == "1test@rfmcube.com" and filled.fields["email"] == "1test@rfmcube.com"


# -- deletes -------------------------------------------------------------------------------------


def test_delete_with_a_full_before_image(mapping: Mapping) -> None:
    change = mapping.map_event(event(CUSTOMERS, Op.DELETE, before=customer_row(id=5)))
    assert change is not None and change.is_delete
    assert change.kind is Kind.CUSTOMER and change.key == "5" and change.row is None
    assert change.before is not None
    assert change.before.email == "1test@rfmcube.com" and change.before.fields["id"] == "5"
    assert "password_hash" not in change.before.fields


def test_delete_with_a_key_only_before_image(mapping: Mapping) -> None:
    # REPLICA IDENTITY DEFAULT: every column but the key is null
    before = {name: None for name in order_row()} | {"id": 12}
    change = mapping.map_event(event(ORDERS, Op.DELETE, before=before))
    assert change is not None and change.is_delete
    assert change.key == "12" and change.before is None


def test_tombstone_takes_its_key_from_the_record_key(mapping: Mapping) -> None:
    ev = event(ITEMS, Op.DELETE, key={"id": 1340}, tombstone=True)
    change = mapping.map_event(ev)
    assert change is not None and change.is_delete
    assert change.kind is Kind.ITEM and change.key == "1340" and change.before is None


def test_delete_without_any_key_is_a_bad_record(mapping: Mapping) -> None:
    ev = event(ITEMS, Op.DELETE, key={"other": 1}, before=None, tombstone=True)
    with pytest.raises(BadRecord, match="delete without a key"):
        mapping.map_event(ev)


def test_deleted_order_is_marked_with_the_configured_status(mapping: Mapping) -> None:
    row = upsert(mapping, event(ORDERS, Op.CREATE, after=order_row()))
    marked = mapping.mark_deleted(row)
    assert marked.fields["status"] == "deleted"
    assert marked.fields["amount"] == Decimal("85.85")
    assert row.fields["status"] == "10"  # the stored row is left alone


def test_composite_keys_are_joined_with_a_bar() -> None:
    text = """\
entities:
  customers:
    topic: c
    columns: {created_at: createdAt, updated_at: updatedAt}
  orders:
    topic: o
    key: [shop, id]
    columns: {id: id, created_at: createdAt, updated_at: updatedAt, amount: amount}
"""
    mapping = Mapping.from_text(text)
    after = order_row(shop="it")
    change = mapping.map_event(event("o", Op.CREATE, after=after, key={"shop": "it", "id": 1}))
    assert change is not None and change.key == "it|1"
