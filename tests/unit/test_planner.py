"""Store, window and planner together: which documents a window of changes sends.

Pure logic: changes are built as decoded events, mapped with the default
mapping, applied to an in-memory store and planned; no broker, no HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Any

import pytest

from consumer.coalesce import RecordAcks, Window
from consumer.mapping import Mapping
from consumer.planner import Plan, Planner
from consumer.store import StateStore
from schemas.debezium import ChangeEvent, Op, Position
from schemas.entities import Kind

TOPIC = {
    "customer": "shop.public.customers",
    "order": "shop.public.orders",
    "item": "shop.public.order_items",
}
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def customer(cid: int, email: str, **extra: Any) -> dict[str, Any]:
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


def order(oid: int, cid: int | None, email: str | None = None, **extra: Any) -> dict[str, Any]:
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


def item(iid: int, oid: int, **extra: Any) -> dict[str, Any]:
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


class Harness:
    def __init__(self, *, orphan_wait: float = 30.0) -> None:
        self.mapping = Mapping.load(None)
        self.store = StateStore(":memory:")
        self.window = Window()
        self.acks = RecordAcks()
        self.planner = Planner(
            self.store, mark_deleted=self.mapping.mark_deleted, orphan_wait=orphan_wait
        )
        self._offsets = count()

    def change(
        self,
        kind: str,
        op: Op,
        row: dict[str, Any],
        *,
        before: dict[str, Any] | None = None,
        now: float = 0.0,
    ) -> None:
        position = Position(TOPIC[kind], 0, next(self._offsets))
        after = None if op is Op.DELETE else row
        event = ChangeEvent(
            position, {"id": row["id"]}, op, before if op is not Op.DELETE else row, after
        )
        change = self.mapping.map_event(event)
        assert change is not None
        with self.store.batch() as batch:
            touches = batch.apply(change)
        self.window.add(position, touches, now)

    def plan(self, now: float = 0.0) -> Plan:
        docs = self.window.take()
        plan = self.planner.plan(docs, now)
        self.window.put_back({ref: docs[ref] for ref in plan.deferred}, now)
        return plan

    def accept(self, plan: Plan) -> None:
        self.store.set_accepted({u.ref: u.hash for g in plan.groups for u in g.upserts})


def sent_docs(plan: Plan) -> dict[str, dict[str, Any]]:
    return {f"{u.ref[0].value}:{u.ref[1]}": u.doc for g in plan.groups for u in g.upserts}


def test_many_changes_of_one_customer_in_a_window_become_one_document() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("customer", Op.UPDATE, customer(1, "a@x.it", phone="+39 1"))
    h.change("customer", Op.UPDATE, customer(1, "b@x.it", phone="+39 2"))
    docs = sent_docs(h.plan())
    assert list(docs) == ["customer:1"]
    assert docs["customer:1"]["email"] == "b@x.it"
    assert docs["customer:1"]["phone"] == "+39 2"
    assert "password_hash" not in docs["customer:1"] and "notes" not in docs["customer:1"]


def test_a_change_of_an_unmapped_column_sends_nothing() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.accept(h.plan())
    h.change("customer", Op.UPDATE, customer(1, "a@x.it", password_hash="new"))
    plan = h.plan()
    assert plan.groups == []
    assert plan.unchanged == [(Kind.CUSTOMER, "1")]


def test_delete_then_recreate_in_one_window_is_a_delete_then_an_upsert() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.accept(h.plan())
    h.change("customer", Op.DELETE, customer(1, "a@x.it"))
    h.change("customer", Op.CREATE, customer(1, "new@x.it"))
    plan = h.plan()
    assert [(ref, who.email) for ref, who in plan.deletes] == [((Kind.CUSTOMER, "1"), "a@x.it")]
    assert sent_docs(plan)["customer:1"]["email"] == "new@x.it"


def test_a_key_only_delete_takes_the_email_from_the_store() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(7, "seven@x.it"))
    h.plan()
    # REPLICA IDENTITY DEFAULT: the before image holds only the key.
    position = Position(TOPIC["customer"], 0, 99)
    event = ChangeEvent(position, {"id": 7}, Op.DELETE, {"id": 7}, None)
    change = h.mapping.map_event(event)
    assert change is not None
    with h.store.batch() as batch:
        h.window.add(position, batch.apply(change), 0.0)
    plan = h.plan()
    assert [(who.id, who.email) for _, who in plan.deletes] == [("7", "seven@x.it")]


def test_an_order_goes_whole_with_its_items_and_its_customer() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.accept(h.plan())
    h.change("order", Op.CREATE, order(10, 1))
    h.change("item", Op.CREATE, item(100, 10))
    h.change("item", Op.CREATE, item(101, 10, brand="puma"))
    plan = h.plan()
    (group,) = plan.groups
    assert group.customer is None and group.customer_id == "1" and group.customer_email == "a@x.it"
    (sent,) = group.orders
    assert [i["item_id"] for i in sent.doc["items"]] == [100, 101]
    assert sent.doc["amount"] == Decimal("85.85")
    h.accept(plan)

    h.change("item", Op.DELETE, item(100, 10))
    (group,) = h.plan().groups
    assert [i["item_id"] for i in group.orders[0].doc["items"]] == [101]


def test_orders_of_a_deleted_customer_are_not_sent_again() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("order", Op.CREATE, order(10, 1))
    h.accept(h.plan())
    h.change("order", Op.DELETE, order(10, 1))
    h.change("customer", Op.DELETE, customer(1, "a@x.it"))
    plan = h.plan()
    assert plan.groups == []
    assert [ref for ref, _ in plan.deletes] == [(Kind.CUSTOMER, "1")]


def test_a_deleted_order_is_sent_with_the_deleted_status() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("order", Op.CREATE, order(10, 1))
    h.accept(h.plan())
    h.change("order", Op.DELETE, order(10, 1))
    assert sent_docs(h.plan())["order:10"]["status"] == "deleted"


def test_an_order_waits_for_its_customer_then_is_rejected_without_an_email() -> None:
    h = Harness(orphan_wait=5.0)
    h.change("order", Op.CREATE, order(10, 42), now=0.0)
    early = h.plan(now=1.0)
    assert early.deferred == [(Kind.ORDER, "10")] and early.groups == []
    h.change("order", Op.UPDATE, order(10, 42, status="20"), now=6.0)
    late = h.plan(now=6.0)
    assert [ref for ref, _ in late.rejected] == [(Kind.ORDER, "10")]
    assert "customer 42 unknown" in late.rejected[0][1]


def test_the_customer_arriving_later_releases_the_waiting_order() -> None:
    h = Harness()
    h.change("order", Op.CREATE, order(10, 42))
    assert h.plan().deferred == [(Kind.ORDER, "10")]
    h.change("order", Op.UPDATE, order(10, 42, status="20"))
    h.change("customer", Op.CREATE, customer(42, "late@x.it"))
    plan = h.plan()
    (group,) = plan.groups
    assert group.customer is not None and [o.ref for o in group.orders] == [(Kind.ORDER, "10")]


@pytest.mark.parametrize("registered", [False, True])
def test_a_guest_order_goes_under_the_customer_of_its_email(registered: bool) -> None:
    h = Harness()
    if registered:
        h.change("customer", Op.CREATE, customer(5, "g@x.it"))
        h.accept(h.plan())
    h.change("order", Op.CREATE, order(10, None, "g@x.it"))
    (group,) = h.plan().groups
    assert group.guest is not registered
    assert group.customer_doc["email"] == "g@x.it"
    if not registered:
        assert group.customer_doc["createdAt"] == "2026-03-01T10:00:00Z"


def test_after_a_customer_delete_its_orders_are_never_skipped_as_unchanged() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("order", Op.CREATE, order(10, 1))
    h.accept(h.plan())
    # Rfmcube deleted the customer with its orders: the same order must go again.
    h.store.forget_accepted([(Kind.CUSTOMER, "1")])
    h.store.forget_accepted_orders_of(["1"])
    h.change("order", Op.UPDATE, order(10, 1))
    assert "order:10" in sent_docs(h.plan())
