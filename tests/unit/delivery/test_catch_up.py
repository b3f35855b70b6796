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
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.planner import Planner
from consumer.delivery.sender import Sender
from consumer.state.obligations import Obligations
from schemas.entities import Kind
from testkit.storeshop import MAPPING, build_store_shop


class Api:
    def __init__(self) -> None:
        self.imports: list[int] = []  # customers per import

    async def send(self, call: str, body: Any) -> dict[str, Any]:
        data = orjson.loads(body if isinstance(body, bytes) else body.read_all())
        self.imports.append(len(data["customers"]))
        return {"processId": len(self.imports)}

    async def process(self, process_id: int | str) -> dict[str, Any]:
        return {"processId": process_id, "status": "completed"}


async def test_reading_far_behind_waits_for_an_imports_worth_then_sends_it() -> None:
    store = build_store_shop(":memory:")
    obligations = Obligations(store)
    api = Api()
    backlog = [1_000_000]  # records behind the topics' ends
    flusher = Flusher(
        obligations,
        Planner(store, obligations, mark_deleted=MAPPING.mark_deleted, orphan_wait=30.0),
        # The guess before any import (500 bytes a document): 40 documents fill it.
        Sender(api, max_request_bytes=20_000),
        RateLimiter(100_000, 60),
        min_window=0.0,
        max_documents=1_000_000,
        hold_imports=False,
        dead_letter_doc=lambda *_: None,
        hurry_imports=lambda _: None,
        backlog=lambda: backlog[0],
        owed_bound=1_000_000,
    )
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
