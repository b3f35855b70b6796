"""A first sync (reading far behind the topics) sends imports near the byte limit, not
a small import each time a request slot frees (issue 20).

In-process: an in-memory store with a small shop, the service's flush with a
stand-in API, the backlog (records behind the topics' ends) set by the test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from consumer.delivery.flush import Flusher
from consumer.state.obligations import Obligations
from schemas.entities import Kind
from testkit.storeshop import build_store_shop, shop_flusher


class Api:
    def __init__(self) -> None:
        self.imports: list[int] = []  # customers per import

    async def send(self, call: str, body: Any) -> dict[str, Any]:
        data = orjson.loads(body if isinstance(body, bytes) else body.read_all())
        self.imports.append(len(data["customers"]))
        return {"processId": len(self.imports)}

    async def process(self, process_id: int | str) -> dict[str, Any]:
        return {"processId": process_id, "status": "completed"}


def _flusher(obligations: Obligations, api: Api, backlog: list[int], limit: int) -> Flusher:
    """The service's flush against ``api``, ``backlog[0]`` records behind the topics."""
    return shop_flusher(
        obligations,
        api,
        max_request_bytes=limit,
        dead_letter_doc=lambda *_: None,
        backlog=lambda: backlog[0],
        owed_bound=1_000_000,
    )


async def test_reading_far_behind_waits_for_an_imports_worth_then_sends_it() -> None:
    store = build_store_shop(":memory:")
    obligations = Obligations(store)
    api = Api()
    backlog = [1_000_000]  # records behind the topics' ends
    # The guess before any import (500 bytes a document): 40 documents fill it.
    flusher = _flusher(obligations, api, backlog, 20_000)
    customers = [(Kind.CUSTOMER, str(c)) for c in range(1, 21)]
    obligations.owe(customers[:10])
    stopping = asyncio.Event()
    running = asyncio.create_task(flusher.run(stopping, lambda: True))
    await asyncio.sleep(1.0)
    assert api.imports == [], "10 documents owed, far behind: they wait for more"
    obligations.owe(customers[10:])
    obligations.owe([(Kind.ORDER, str(order)) for order in range(932, 952)])
    flusher.dirty.set()
    await asyncio.sleep(1.5)
    assert len(api.imports) == 1, "an import's worth owed: it goes, whole"
    obligations.owe([(Kind.ORDER, str(order)) for order in range(960, 963)])
    await asyncio.sleep(1.0)
    assert len(api.imports) == 1, "still behind: three orders wait"
    backlog[0] = 0  # caught up: what is owed goes at once, as in a live stream
    flusher.dirty.set()
    await asyncio.sleep(1.5)
    assert len(api.imports) == 2
    stopping.set()
    await running


class SizedApi(Api):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []  # bytes per import
        self.orders: list[str] = []  # every order sent, in order

    async def send(self, call: str, body: Any) -> dict[str, Any]:
        raw = body if isinstance(body, bytes) else body.read_all()
        self.sizes.append(len(raw))
        self.orders += [o["id"] for c in orjson.loads(raw)["customers"] for o in c["orders"]]
        return await super().send(call, raw)


async def test_far_behind_a_flush_ends_with_its_first_full_import_not_a_small_tail() -> None:
    """What a flush packed after its first full import stays owed for the next one,
    which waits for an import's worth again: while reading is far behind and owes
    more meanwhile, no small import goes out between full ones."""
    store = build_store_shop(":memory:", customers=200)
    obligations = Obligations(store)
    api = SizedApi()
    backlog = [1_000_000]
    limit = 20_000
    flusher = _flusher(obligations, api, backlog, limit)
    rows = store.db.execute(
        "SELECT kind, key, coalesce(parent, key) FROM rows"
        " WHERE kind IN ('customer', 'order') AND deleted = 0 AND parent IS NOT '' "
    ).fetchall()
    waves = [
        [(Kind(kind), key) for kind, key, owner in rows if int(owner) % 3 == wave]
        for wave in range(3)
    ]
    parked = {
        key
        for (key,) in store.db.execute(
            "SELECT o.key FROM rows o JOIN rows c ON c.kind = 'customer' AND c.key = o.parent"
            " WHERE o.kind = 'order' AND c.deleted = 1"
        )
    }
    stopping = asyncio.Event()
    running = asyncio.create_task(flusher.run(stopping, lambda: True))
    for wave in waves:  # reading goes on, far behind: each wave is 2 to 3 imports' worth
        obligations.owe(wave)
        flusher.dirty.set()
        await asyncio.sleep(1.5)
    behind = list(api.sizes)
    assert len(behind) >= 5, f"several imports' worth owed: {behind}"
    assert all(size >= 0.8 * limit for size in behind[:-1]), f"a small import: {behind}"
    backlog[0] = 0  # caught up: the rest goes at once
    flusher.dirty.set()
    await asyncio.sleep(1.5)
    stopping.set()
    await running
    assert obligations.owed_count() == 0
    assert len(api.orders) == len(set(api.orders)), "an order went twice"
    # Every order but those of the deleted customer (they wait for it: parked).
    assert set(api.orders) == {
        key for wave in waves for kind, key in wave if kind is Kind.ORDER and key not in parked
    }
