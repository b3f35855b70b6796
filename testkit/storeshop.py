"""A small shop written straight into a store, for tests of what the store and the
flush do with it (owing a resync's scope, settling its imports) without Kafka.

Rows go through the default mapping and the store's own batch, as a restore
writes them (nothing owed); then every document is marked accepted, as if the
service had sent the shop before Rfmcube lost it.
"""

from __future__ import annotations

from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

from consumer.changes.mapping import Mapping
from consumer.delivery.flush import DeadLetterDoc, Flusher
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.planner import Planner
from consumer.delivery.sender import Sender, Transport
from consumer.state.batch import open_batch
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from schemas.debezium import ChangeEvent, Op, Position
from testkit.builders import T0, TOPIC

__all__ = ["MAPPING", "TOPIC", "build_store_shop", "row", "shop_flusher"]

MAPPING = Mapping.load(None)


def row(kind: str, rid: int, **fields: Any) -> dict[str, Any]:
    """A row of the reference shop's table for ``kind`` (customer, order, item)."""
    if kind == "customer":
        base: dict[str, Any] = {
            "email": f"c{rid}@x.it",
            "first_name": "Anna",
            "last_name": "Rossi",
            "phone": None,
            "password_hash": "secret",
            "newsletter": True,
            "notes": None,
        }
    elif kind == "order":
        base = {
            "customer_id": None,
            "customer_email": None,
            "status": "10",
            "status_label": "Pending",
            "amount": Decimal("85.85"),
            "currency": "EUR",
            "delivery_province": "MI",
        }
    else:
        base = {"order_id": None, "product_id": 1, "sku": "S", "brand": "b", "quantity": 1}
        base["unit_price"] = Decimal("10.00")
    stamps = {} if kind == "item" else {"created_at": T0, "updated_at": T0}
    return {"id": rid, **base, **stamps, **fields}


def build_store_shop(path: Path | str, customers: int = 23) -> StateStore:
    """Customers with three orders each on average (order keys running against their
    customers' order), an item per order, five guest checkouts, a deleted customer
    and a deleted order; every document accepted before."""
    store = StateStore(path)
    obligations = Obligations(store)
    offsets = count()
    items = count(1)
    with open_batch(obligations, owe=False) as batch:

        def apply(kind: str, values: dict[str, Any], op: Op = Op.CREATE) -> None:
            position = Position(TOPIC[kind], 0, next(offsets))
            after = None if op is Op.DELETE else values
            event = ChangeEvent(position, {"id": values["id"]}, op, values, after, ts_ms=1000)
            change = MAPPING.map_event(event)
            assert change is not None
            batch.apply(change)

        for cid in range(1, customers + 1):
            apply("customer", row("customer", cid))
        for n in range(3 * customers):
            oid = 1000 - n
            owner = (n * 7) % customers + 1
            apply("order", row("order", oid, customer_id=owner))
            apply("item", row("item", next(items), order_id=oid))
        for gid in range(5):
            apply("order", row("order", 2000 + gid, customer_email=f"g{gid}@x.it"))
        apply("customer", row("customer", 3), Op.DELETE)
        apply("order", row("order", 1000, customer_id=1), Op.DELETE)
    store.db.execute("DELETE FROM offsets")
    store.db.execute(
        "INSERT INTO accepted SELECT kind, key, 'old' FROM rows WHERE kind != 'item'"
        " UNION ALL SELECT 'guest', email, 'old' FROM rows WHERE kind = 'order' AND parent IS NULL"
    )
    return store


def shop_flusher(
    obligations: Obligations,
    api: Transport,
    *,
    max_request_bytes: int,
    dead_letter_doc: DeadLetterDoc,
    limiter: RateLimiter | None = None,
    **options: Any,
) -> Flusher:
    """The service's flush over a shop's store, against a stand-in API: no window, no
    pacing (unless ``limiter``), the default mapping's rules; ``options`` as
    :class:`Flusher` takes them (``chunk``, ``workers``, ``settle_page``, ...)."""
    store = obligations.store
    return Flusher(
        obligations,
        Planner(store, obligations, mark_deleted=MAPPING.mark_deleted, orphan_wait=30.0),
        Sender(api, max_request_bytes=max_request_bytes),
        limiter or RateLimiter(100_000, 60),
        min_window=0.0,
        max_documents=1_000_000,
        hold_imports=False,
        dead_letter_doc=dead_letter_doc,
        hurry_imports=lambda _: None,
        **options,
    )
