"""Packing: request bodies below the byte limit, and a customer's part cut to some of
its orders (to find the one the API refuses), numbers exact."""

from __future__ import annotations

import json
from decimal import Decimal

from consumer.delivery.packing import draft_of, import_envelope, is_order, owed_of, with_orders
from consumer.delivery.planner import CustomerGroup, Upsert
from consumer.state.obligations import OwedDoc
from schemas.entities import Kind


def _owed(kind: Kind, key: str) -> OwedDoc:
    return OwedDoc((kind, key), 1, 0.0, source_ms=1_700_000_000_000)


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
    draft = draft_of(_group())
    orders = [row for row in draft.carried if is_order(row)]
    cut = with_orders(draft, orders[1:2])
    body = json.loads(cut.body, parse_float=Decimal)
    assert [o["id"] for o in body["orders"]] == ["11"]
    assert body["orders"][0]["amount"] == Decimal("11.10")
    assert b'"amount":11.10' in cut.body  # as the API reads it: never through a float
    # The container first (not owed), then what it carries as owed.
    assert [(row[0], row[1], row[3]) for row in cut.carried] == [
        ("customer", "1", None),
        ("customer", "1", 1),
        ("order", "11", 1),
    ]
    assert cut.documents == 2
    alone = with_orders(draft, [])
    assert json.loads(alone.body)["orders"] == []
    assert [row[1] for row in alone.carried if row[3] is not None] == ["1"]


def test_a_staged_document_keeps_the_obligation_it_meets_and_its_source_time() -> None:
    draft = draft_of(_group())
    owed = [owed_of(row) for row in draft.carried if row[3] is not None]
    assert [doc.ref for doc in owed] == [
        (Kind.CUSTOMER, "1"),
        (Kind.ORDER, "10"),
        (Kind.ORDER, "11"),
        (Kind.ORDER, "12"),
    ]
    assert {doc.source_ms for doc in owed} == {1_700_000_000_000}


def test_an_import_body_holds_its_parts_as_they_were_serialized() -> None:
    draft = draft_of(_group())
    head, tail = import_envelope(trigger_integrations=False)
    body = json.loads(head + draft.body + b"," + draft.body + tail)
    assert body["triggerIntegrations"] is False and len(body["customers"]) == 2
