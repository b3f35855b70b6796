"""Packing: request bodies below the byte limit, and a customer's part cut to some of
its orders (to find the one the API refuses), numbers exact."""

from __future__ import annotations

import json
from decimal import Decimal

from consumer.delivery.packing import Carried, import_body, part_of, with_orders
from consumer.delivery.planner import CustomerGroup, Upsert
from consumer.state.obligations import OwedDoc
from schemas.entities import Kind


def _owed(kind: Kind, key: str) -> OwedDoc:
    return OwedDoc((kind, key), 1, 0.0)


def _group() -> CustomerGroup:
    customer = {"id": "1", "email": "a@x.it", "createdAt": "2026-01-01T00:00:00Z"}
    orders = [
        Upsert(
            (Kind.ORDER, str(oid)),
            {"id": str(oid), "amount": Decimal(f"{oid}.10"), "items": []},
            f"h{oid}",
            _owed(Kind.ORDER, str(oid)),
        )
        for oid in (10, 11, 12)
    ]
    return CustomerGroup(
        customer,
        Upsert((Kind.CUSTOMER, "1"), customer, "hc", _owed(Kind.CUSTOMER, "1")),
        orders,
        customer_id="1",
        customer_email="a@x.it",
    )


def test_a_part_with_some_of_its_orders_keeps_the_customer_and_exact_amounts() -> None:
    part = part_of(_group())
    orders = [c for c in part.upserts if c.ref[0] is Kind.ORDER]
    cut = with_orders(part, orders[1:2])
    body = json.loads(cut.body, parse_float=Decimal)
    assert [o["id"] for o in body["orders"]] == ["11"]
    assert body["orders"][0]["amount"] == Decimal("11.10")
    assert b'"amount":11.10' in cut.body  # as the API reads it: never through a float
    assert {c.ref for c in cut.upserts} == {(Kind.CUSTOMER, "1"), (Kind.ORDER, "11")}
    assert isinstance(cut.upserts[0], Carried)
    alone = with_orders(part, [])
    assert json.loads(alone.body)["orders"] == []
    assert [c.ref for c in alone.upserts] == [(Kind.CUSTOMER, "1")]


def test_an_import_body_holds_its_parts_as_they_were_serialized() -> None:
    part = part_of(_group())
    body = json.loads(import_body([part, part], trigger_integrations=False))
    assert body["triggerIntegrations"] is False and len(body["customers"]) == 2
