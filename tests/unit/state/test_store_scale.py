"""What a read of the store costs grows with what it reads, not with the store.

A shop of a hundred thousand customers holds a million and a half items: a
page of documents planned, a batch ingested or a delete settled must not read
all of them. SQLite's own count of the instructions it ran (its progress
handler) measures the work, the same store ten times larger gives the
ratio. In-memory stores, the default mapping; no services.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any

from consumer.changes.mapping import Mapping
from consumer.delivery.planner import Planner
from consumer.delivery.resync import estimate
from consumer.state.batch import open_batch
from consumer.state.obligations import Obligations, Settlement
from consumer.state.store import StateStore
from schemas.debezium import ChangeEvent, Op, Position
from schemas.entities import CustomerIdentity, Kind
from testkit.builders import T0, TOPIC, customer_row, item_row, order_row

MAPPING = Mapping.load(None)
CHANGED_MS = int(T0.timestamp() * 1000)  # when every row of the shops changed


class Shop:
    """A store filled with customers, 5 orders each (3 items each) and guest orders."""

    def __init__(self, customers: int) -> None:
        self.store = StateStore(":memory:")
        self.obligations = Obligations(self.store)
        self._offsets = count()
        self._orders = count(1)
        self._items = count(1)
        self.first_guest_order = 5 * customers + 1
        with open_batch(self.obligations, owe=False) as batch:
            for cid in range(1, customers + 1):
                for kind, row in self._customer_with_orders(cid):
                    change = self.change(kind, row)
                    batch.apply(change)
            for _ in range(customers // 10):
                oid = next(self._orders)
                batch.apply(self.change("order", order_row(oid, None, f"guest{oid}@x.it")))
                batch.apply(self.change("item", item_row(next(self._items), oid)))

    def _customer_with_orders(self, cid: int) -> list[tuple[str, dict[str, Any]]]:
        rows: list[tuple[str, dict[str, Any]]] = [
            ("customer", customer_row(cid, f"customer{cid}@x.it", notes=None))
        ]
        for _ in range(5):
            oid = next(self._orders)
            rows.append(("order", order_row(oid, cid)))
            rows.extend(("item", item_row(next(self._items), oid)) for _ in range(3))
        return rows

    def change(self, kind: str, row: dict[str, Any], op: Op = Op.CREATE) -> Any:
        position = Position(TOPIC[kind], 0, next(self._offsets))
        before = row if op is Op.DELETE else None
        after = None if op is Op.DELETE else row
        event = ChangeEvent(position, {"id": row["id"]}, op, before, after, ts_ms=CHANGED_MS)
        change = MAPPING.map_event(event)
        assert change is not None
        return change

    def work(self, task: Callable[[], object]) -> int:
        """SQLite's instructions (in tens) while ``task`` runs."""
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        self.store.db.set_progress_handler(step, 10)
        try:
            task()
        finally:
            self.store.db.set_progress_handler(None, 0)
        return steps


SMALL, LARGE = Shop(200), Shop(2000)


def _plan_a_page(shop: Shop) -> None:
    """20 customers with their orders, and 5 guest orders, owed and planned."""
    refs = [(Kind.CUSTOMER, str(cid)) for cid in range(1, 21)]
    refs += [(Kind.ORDER, str(oid)) for oid in range(1, 101)]
    first = shop.first_guest_order
    refs += [(Kind.ORDER, str(oid)) for oid in range(first, first + 5)]
    shop.obligations.owe(refs)
    planner = Planner(
        shop.store, shop.obligations, mark_deleted=MAPPING.mark_deleted, orphan_wait=30.0
    )
    plan = planner.plan(shop.obligations.take(1000), now=T0.timestamp())
    assert plan.upsert_count() == len(refs)
    sent = [upsert.owed for group in plan.groups for upsert in group.upserts]
    shop.obligations.settle(Settlement(done=sent))


def test_planning_a_page_reads_its_documents_not_the_whole_store() -> None:
    small, large = SMALL.work(lambda: _plan_a_page(SMALL)), LARGE.work(lambda: _plan_a_page(LARGE))
    assert large < 2 * small, f"planning read {large / small:.1f} times more in a 10x store"


def _sign_up_with_a_guest_email(shop: Shop) -> None:
    """A customer takes the email of a guest checkout: its orders move to it."""
    email = f"guest{shop.first_guest_order}@x.it"
    with open_batch(shop.obligations) as batch:
        batch.apply(
            shop.change(
                "customer",
                {**customer_row(99_999, "customer99999@x.it", notes=None), "email": email},
            )
        )


def test_ingesting_a_change_reads_what_it_touches_not_the_whole_store() -> None:
    small = SMALL.work(lambda: _sign_up_with_a_guest_email(SMALL))
    large = LARGE.work(lambda: _sign_up_with_a_guest_email(LARGE))
    assert large < 2 * small, f"ingest read {large / small:.1f} times more in a 10x store"


def _delete_accepted(shop: Shop) -> None:
    identity = CustomerIdentity("7", "customer7@x.it")
    shop.obligations.settle(Settlement(deleted={(Kind.CUSTOMER, "7"): identity}))


def test_settling_a_delete_reads_the_customers_orders_not_the_whole_store() -> None:
    small, large = (
        SMALL.work(lambda: _delete_accepted(SMALL)),
        LARGE.work(lambda: _delete_accepted(LARGE)),
    )
    assert large < 2 * small, f"settling read {large / small:.1f} times more in a 10x store"


def test_a_resync_since_a_time_grows_with_the_shop_not_its_square() -> None:
    def since(shop: Shop) -> Callable[[], object]:
        def run() -> None:
            # Nothing changed since: each order's items are looked at, and none is owed.
            assert shop.obligations.owe_everything(since_ms=CHANGED_MS + 1, forget=False)[0] == 0
            estimate(
                shop.store,
                since_ms=CHANGED_MS + 1,
                max_request_bytes=200_000_000,
                requests_per_minute=60,
                mark_deleted=MAPPING.mark_deleted,
            )

        return run

    small, large = SMALL.work(since(SMALL)), LARGE.work(since(LARGE))
    # Ten times the shop: about ten times the work, not a hundred.
    assert large < 15 * small, f"a resync --since read {large / small:.0f} times more"


def test_a_resync_of_a_shop_rfmcube_holds_grows_with_the_shop_not_its_square() -> None:
    def resync(shop: Shop) -> Callable[[], object]:
        rows = shop.store.db.execute("SELECT kind, key FROM rows WHERE kind != 'item'")
        shop.store.set_accepted({(Kind(kind), key): "sent" for kind, key in rows})

        def run() -> None:
            # Every document owed again, and what Rfmcube was thought to hold forgotten.
            documents, _, _ = shop.obligations.owe_everything(since_ms=None, forget=True)
            assert documents == shop.store.db.execute("SELECT count(*) FROM owed").fetchone()[0]
            assert shop.store.db.execute("SELECT count(*) FROM accepted").fetchone()[0] == 0

        return run

    try:
        small, large = SMALL.work(resync(SMALL)), LARGE.work(resync(LARGE))
    finally:
        for shop in (SMALL, LARGE):
            shop.store.db.execute("DELETE FROM owed")
    assert large < 15 * small, f"a resync read {large / small:.0f} times more"
