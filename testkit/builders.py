"""Builders shared by the tests and the benchmarks: rows of the reference shop as
Debezium decodes them (Python values), and Debezium's ``source`` blocks.

One place for each, so that a column added to the reference shop is added once."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from consumer.changes.mapping import Mapping
from schemas.debezium import ChangeEvent, Op, Position
from schemas.entities import EntityChange

__all__ = [
    "MYSQL_SOURCE",
    "PG_SOURCE",
    "T0",
    "TOPIC",
    "change",
    "customer_row",
    "item_row",
    "order_row",
]

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)

# The reference shop's topics, by the kind of entity each holds.
TOPIC = {
    "customer": "shop.public.customers",
    "order": "shop.public.orders",
    "item": "shop.public.order_items",
}


def customer_row(cid: int, email: str, **extra: Any) -> dict[str, Any]:
    """A row of ``customers`` (unmapped columns included: they must never leave)."""
    return {
        "id": cid,
        "email": email,
        "first_name": "Anna",
        "last_name": "Rossi",
        "phone": None,
        "password_hash": "secret",
        "newsletter": True,
        "notes": "n",
        "created_at": T0,
        "updated_at": T0,
        **extra,
    }


def order_row(oid: int, cid: int | None, email: str | None = None, **extra: Any) -> dict[str, Any]:
    """A row of ``orders``: a registered customer's (``cid``) or a guest's (``email``)."""
    return {
        "id": oid,
        "customer_id": cid,
        "customer_email": email,
        "status": "10",
        "status_label": "Pending",
        "amount": Decimal("85.85"),
        "currency": "EUR",
        "delivery_province": "MI",
        "created_at": T0,
        "updated_at": T0,
        **extra,
    }


def item_row(iid: int, oid: int, **extra: Any) -> dict[str, Any]:
    """A row of ``order_items``."""
    return {
        "id": iid,
        "order_id": oid,
        "product_id": 43421,
        "sku": "S",
        "brand": "nike",
        "quantity": 1,
        "unit_price": Decimal("10.00"),
        **extra,
    }


def change(
    kind: str,
    row: dict[str, Any],
    offset: int,
    op: Op = Op.CREATE,
    *,
    mapping: Mapping | None = None,
    ts_ms: int = 1,
) -> EntityChange:
    """A row's change as the reference mapping (or ``mapping``) maps it, at ``offset``
    of partition 0 of the entity's topic."""
    position = Position(TOPIC[kind], 0, offset)
    before = row if op is Op.DELETE else None
    after = None if op is Op.DELETE else row
    event = ChangeEvent(position, {"id": row["id"]}, op, before, after, ts_ms=ts_ms)
    mapped = (mapping or _reference()).map_event(event)
    assert mapped is not None, f"{kind} {row['id']} maps to no change"
    return mapped


_REFERENCE: list[Mapping] = []


def _reference() -> Mapping:
    if not _REFERENCE:
        _REFERENCE.append(Mapping.load(None))
    return _REFERENCE[0]


# Debezium's ``source`` block, as its PostgreSQL and MySQL connectors write it.
PG_SOURCE: dict[str, Any] = {
    "version": "2.7.3.Final",
    "connector": "postgresql",
    "name": "shop",
    "ts_ms": 1717430400123,
    "snapshot": "false",
    "db": "shop",
    "sequence": '["24023928","24023928"]',
    "schema": "public",
    "table": "orders",
    "txId": 771,
    "lsn": 24023928,
    "xmin": None,
}
MYSQL_SOURCE: dict[str, Any] = {
    "version": "2.7.3.Final",
    "connector": "mysql",
    "name": "shop",
    "ts_ms": 1717430400000,
    "snapshot": "false",
    "db": "shop",
    "sequence": None,
    "table": "customers",
    "server_id": 223344,
    "gtid": None,
    "file": "mysql-bin.000003",
    "pos": 4561,
    "row": 0,
    "thread": 12,
    "query": None,
}
