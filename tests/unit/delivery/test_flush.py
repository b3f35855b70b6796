"""Store, obligations, planner, sender and flush together, in-process.

Pure logic: changes are built as decoded events, mapped with the default
mapping and applied to an in-memory store; flushes send through a fake API
(a stand-in for the HTTP client, recording what it is sent). No broker, no HTTP.
"""

from __future__ import annotations

import asyncio
from itertools import count
from typing import Any

import orjson
import pytest

from consumer.changes.mapping import Mapping
from consumer.delivery.flush import Flusher
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.planner import Planner
from consumer.delivery.processes import ProcessChecker
from consumer.delivery.sender import Sender
from consumer.state.batch import open_batch
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from schemas.debezium import ChangeEvent, Op, Position
from schemas.entities import DocRef
from testkit.builders import TOPIC
from testkit.builders import customer_row as customer
from testkit.builders import item_row as item
from testkit.builders import order_row as order


class FakeApi:
    """Accepts everything; imports get process ids whose state a test sets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.states: dict[str, str] = {}
        self._ids = count(1)

    async def send(self, call: str, body: bytes) -> dict[str, Any]:
        self.calls.append((call, orjson.loads(body)))
        if call == "import":
            pid = next(self._ids)
            self.states.setdefault(str(pid), "completed")
            return {"processId": pid}
        return {"status": "ok"}

    async def process(self, process_id: int | str) -> dict[str, Any]:
        self.calls.append(("processes", str(process_id)))
        return {"processId": process_id, "status": self.states[str(process_id)]}


class Harness:
    def __init__(
        self,
        *,
        orphan_wait: float = 30.0,
        hold_imports: bool = False,
        max_request_bytes: int = 200_000_000,
        chunk: int = 2_000,
    ) -> None:
        self.now = 1000.0
        self.mapping = Mapping.load(None)
        self.store = StateStore(":memory:")
        self.obligations = Obligations(self.store, clock=lambda: self.now)
        self.api = FakeApi()
        limiter = RateLimiter(10_000, 60)
        self.dead: list[tuple[DocRef, str]] = []
        self.flusher = Flusher(
            self.obligations,
            Planner(
                self.store,
                self.obligations,
                mark_deleted=self.mapping.mark_deleted,
                orphan_wait=orphan_wait,
            ),
            Sender(self.api, max_request_bytes=max_request_bytes),
            limiter,
            min_window=0.0,
            max_documents=1_000_000,
            chunk=chunk,
            hold_imports=hold_imports,
            dead_letter_doc=lambda ref, pos, reason, body: self.dead.append((ref, reason)),
            hurry_imports=lambda pids: None,
            clock=lambda: self.now,
        )
        self.checker = ProcessChecker(
            self.obligations, self.api, limiter, on_failed=lambda: None, clock=lambda: self.now
        )
        self._offsets = {kind: count() for kind in TOPIC}

    def change(
        self, kind: str, op: Op, row: dict[str, Any], *, before: dict[str, Any] | None = None
    ) -> Position:
        position = Position(TOPIC[kind], 0, next(self._offsets[kind]))
        after = None if op is Op.DELETE else row
        if op is Op.DELETE and before is None:
            before = row
        event = ChangeEvent(position, {"id": row["id"]}, op, before, after)
        change = self.mapping.map_event(event)
        assert change is not None
        with open_batch(self.obligations) as batch:
            batch.now = self.now
            batch.apply(change)
            batch.set_offsets({(position.topic, 0): position.offset + 1})
        return position

    async def flush(self) -> list[tuple[str, Any]]:
        """One flush; the calls it made."""
        before = len(self.api.calls)
        await self.flusher.flush_once()
        return self.api.calls[before:]

    async def check_imports(self) -> None:
        for pending in self.obligations.due_imports(self.now + 3600, 100):
            await self.checker.check(pending)

    def floor(self, kind: str) -> int:
        return self.obligations.commit_floors([(TOPIC[kind], 0)])[(TOPIC[kind], 0)]


def imported(calls: list[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """Customers of the import calls by email, each with its orders by id."""
    found: dict[str, dict[str, Any]] = {}
    for call, body in calls:
        if call == "import":
            for c in body["customers"]:
                found[c["email"]] = {**c, "orders": {o["id"]: o for o in c["orders"]}}
    return found


async def test_many_changes_of_one_customer_become_one_document() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("customer", Op.UPDATE, customer(1, "a@x.it", phone="+39 1"))
    h.change("customer", Op.UPDATE, customer(1, "b@x.it", phone="+39 2"))
    ((call, body),) = await h.flush()
    assert call == "merge_customer"
    sent = body["customer"]
    assert (sent["email"], sent["phone"]) == ("b@x.it", "+39 2")
    assert "password_hash" not in sent and "notes" not in sent
    assert h.floor("customer") == 3
    assert h.obligations.owed_count() == 0


async def test_a_change_of_an_unmapped_column_sends_nothing_and_is_released() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    await h.flush()
    h.change("customer", Op.UPDATE, customer(1, "a@x.it", password_hash="new"))
    assert h.floor("customer") == 1  # held until the flush sees nothing changed
    assert await h.flush() == []
    assert h.floor("customer") == 2


async def test_delete_then_recreate_is_a_delete_then_an_upsert() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    await h.flush()
    h.change("customer", Op.DELETE, customer(1, "a@x.it"))
    h.change("customer", Op.CREATE, customer(1, "new@x.it"))
    calls = await h.flush()
    assert [c for c, _ in calls] == ["delete_customer", "merge_customer"]
    assert calls[0][1] == {"id": "1", "email": "a@x.it"}
    assert calls[1][1]["customer"]["email"] == "new@x.it"


async def test_a_key_only_delete_takes_the_email_from_the_store() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(7, "seven@x.it"))
    await h.flush()
    # REPLICA IDENTITY DEFAULT: the before image holds only the key.
    h.change("customer", Op.DELETE, {"id": 7}, before={"id": 7})
    assert await h.flush() == [("delete_customer", {"id": "7", "email": "seven@x.it"})]


async def test_an_order_goes_whole_with_its_items_and_its_customer() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    await h.flush()
    h.change("order", Op.CREATE, order(10, 1))
    h.change("item", Op.CREATE, item(100, 10))
    h.change("item", Op.CREATE, item(101, 10, brand="puma"))
    ((call, body),) = await h.flush()
    assert call == "merge_order"
    sent = body["order"]
    assert (sent["customerId"], sent["customerEmail"]) == ("1", "a@x.it")
    assert [i["item_id"] for i in sent["items"]] == [100, 101]
    assert sent["amount"] == 85.85

    h.change("item", Op.DELETE, item(100, 10))
    ((_, body),) = await h.flush()
    assert [i["item_id"] for i in body["order"]["items"]] == [101]


async def test_an_item_moved_between_orders_sends_both() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("order", Op.CREATE, order(10, 1))
    h.change("order", Op.CREATE, order(11, 1))
    h.change("item", Op.CREATE, item(100, 10))
    await h.flush()
    h.change("item", Op.UPDATE, item(100, 11))
    orders = imported(await h.flush())["a@x.it"]["orders"]
    assert [i["item_id"] for i in orders["10"]["items"]] == []
    assert [i["item_id"] for i in orders["11"]["items"]] == [100]


async def test_orders_of_a_deleted_customer_wait_for_its_delete_and_are_not_sent() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("order", Op.CREATE, order(10, 1))
    h.change("customer", Op.CREATE, customer(2, "b@x.it"))
    await h.flush()  # one import, its process not checked yet
    h.change("order", Op.DELETE, order(10, 1))
    h.change("customer", Op.DELETE, customer(1, "a@x.it"))
    # The import that created the customer is pending: its delete waits for it,
    # and so does the order's record.
    assert await h.flush() == []
    assert h.floor("order") == 1
    await h.check_imports()
    calls = await h.flush()
    assert calls == [("delete_customer", {"id": "1", "email": "a@x.it"})]
    assert h.floor("order") == 2 and h.floor("customer") == 3


async def test_a_deleted_order_is_sent_with_the_deleted_status() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    await h.flush()
    h.change("order", Op.CREATE, order(10, 1))
    await h.flush()
    h.change("order", Op.DELETE, order(10, 1))
    ((_, body),) = await h.flush()
    assert body["order"]["status"] == "deleted"


async def test_an_order_waits_for_its_customer_then_goes_out_whenever_it_arrives() -> None:
    h = Harness(orphan_wait=5.0)
    h.change("order", Op.CREATE, order(10, 42))
    assert await h.flush() == []
    assert h.floor("order") == 0  # waiting: its record is held
    h.now += 6.0
    assert await h.flush() == []
    assert h.floor("order") == 1  # parked: released, nothing lost
    h.now += 3600.0
    h.change("customer", Op.CREATE, customer(42, "late@x.it"))
    sent = imported(await h.flush())
    assert list(sent["late@x.it"]["orders"]) == ["10"]
    assert h.floor("customer") == 1


@pytest.mark.parametrize("registered", [False, True])
async def test_a_guest_order_goes_under_the_customer_of_its_email(registered: bool) -> None:
    h = Harness()
    if registered:
        h.change("customer", Op.CREATE, customer(5, "g@x.it"))
        await h.flush()
    h.change("order", Op.CREATE, order(10, None, "g@x.it"))
    calls = await h.flush()
    if registered:
        assert calls[0][0] == "merge_order" and calls[0][1]["order"]["customerId"] == "5"
    else:
        sent = imported(calls)["g@x.it"]
        assert "id" not in sent and sent["createdAt"] == "2026-03-01T10:00:00Z"


async def test_guest_orders_follow_their_email_when_its_customer_goes_or_changes() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(5, "g@x.it"))
    h.change("order", Op.CREATE, order(10, None, "g@x.it"))
    await h.flush()
    # Rfmcube deletes the customer with the guest's order: it must come back.
    h.change("customer", Op.DELETE, customer(5, "g@x.it"))
    await h.check_imports()
    calls = await h.flush()
    assert calls[0] == ("delete_customer", {"id": "5", "email": "g@x.it"})
    assert "id" not in imported(calls[1:])["g@x.it"]
    assert h.floor("customer") == 2

    h.change("customer", Op.CREATE, customer(6, "h@x.it"))
    h.change("order", Op.CREATE, order(11, None, "h@x.it"))
    await h.flush()
    h.change("customer", Op.UPDATE, customer(6, "new@x.it"))
    sent = imported(await h.flush())
    assert sent["new@x.it"]["id"] == "6" and sent["new@x.it"]["orders"] == {}
    assert "id" not in sent["h@x.it"] and list(sent["h@x.it"]["orders"]) == ["11"]


async def test_a_customer_taking_a_guests_email_retires_the_guest_first() -> None:
    h = Harness()
    h.change("order", Op.CREATE, order(10, None, "g@x.it"))
    await h.flush()
    await h.check_imports()
    h.change("customer", Op.CREATE, customer(5, "g@x.it"))
    calls = await h.flush()
    assert calls[0] == ("delete_customer", {"email": "g@x.it"})
    sent = imported(calls[1:])["g@x.it"]
    assert sent["id"] == "5" and list(sent["orders"]) == ["10"]


async def test_a_document_changed_during_its_send_stays_owed() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    real_send = h.api.send

    async def send_and_change(call: str, body: bytes) -> dict[str, Any]:
        h.change("customer", Op.UPDATE, customer(1, "a@x.it", phone="+39 9"))
        return await real_send(call, body)

    h.api.send = send_and_change  # type: ignore[method-assign]
    await h.flush()
    h.api.send = real_send  # type: ignore[method-assign]
    assert h.floor("customer") == 0  # the change after the send is not settled
    ((_, body),) = await h.flush()
    assert body["customer"]["phone"] == "+39 9"
    assert h.floor("customer") == 2


async def test_a_merge_never_overtakes_a_pending_import_of_the_same_document() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("customer", Op.CREATE, customer(2, "b@x.it"))
    await h.flush()  # an import, not checked yet
    h.change("customer", Op.UPDATE, customer(1, "a@x.it", phone="+39 5"))
    ((call, _),) = await h.flush()
    assert call == "import"


@pytest.mark.parametrize("hold", [False, True])
async def test_a_failed_import_is_owed_again_and_strict_acceptance_holds_its_records(
    hold: bool,
) -> None:
    h = Harness(hold_imports=hold)
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("customer", Op.CREATE, customer(2, "b@x.it"))
    await h.flush()
    assert h.floor("customer") == (0 if hold else 2)
    h.api.states["1"] = "failed"
    await h.check_imports()
    assert h.obligations.owed_count() == 2
    assert h.floor("customer") == 0 if hold else 2
    calls = await h.flush()
    assert set(imported(calls)) == {"a@x.it", "b@x.it"}
    await h.check_imports()
    assert h.floor("customer") == 2 and h.obligations.pending_imports() == 0


@pytest.mark.parametrize("answer", [{"status": "exploded"}, None])
async def test_an_unknown_process_state_or_a_404_sends_the_import_again(
    answer: dict[str, Any] | None,
) -> None:
    from consumer.errors import ApiRejected

    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("customer", Op.CREATE, customer(2, "b@x.it"))
    await h.flush()

    async def process(process_id: int | str) -> dict[str, Any]:
        if answer is None:
            raise ApiRejected("process not found (404)", status=404)
        return answer

    h.api.process = process  # type: ignore[method-assign]
    await h.check_imports()
    assert h.obligations.owed_count() == 2 and h.obligations.pending_imports() == 0


async def test_a_backlog_goes_out_in_imports_packed_near_the_limit_across_pages() -> None:
    h = Harness(max_request_bytes=20_000, chunk=40)
    for number in range(300):
        h.change("customer", Op.CREATE, customer(number, f"c{number}@x.it"))
    calls = await h.flush()
    imports = [body for call, body in calls if call == "import"]
    sizes = [len(orjson.dumps(body)) for body in imports]
    assert all(size <= 20_000 for size in sizes)
    customers = [c["email"] for body in imports for c in body["customers"]]
    assert sorted(customers) == sorted(f"c{n}@x.it" for n in range(300))
    # Packed across pages of 40: every import but the last is nearly full.
    assert len(imports) <= -(-sum(sizes) // 20_000) + 1
    assert h.obligations.owed_count() == 0


async def test_a_long_flush_lets_the_event_loop_run_between_pages() -> None:
    h = Harness(max_request_bytes=200_000_000, chunk=40)
    for number in range(200):
        h.change("customer", Op.CREATE, customer(number, f"c{number}@x.it"))
    ticks = 0

    async def health_probe() -> None:  # anything else the service's loop must serve
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    probe = asyncio.create_task(health_probe())
    calls = await h.flush()
    probe.cancel()
    assert [call for call, _ in calls] == ["import"]  # one import, after 5 pages
    assert ticks >= 4, "the event loop did not run while the pages were planned"


async def test_a_flush_cut_short_keeps_owed_exactly_what_was_not_accepted() -> None:
    h = Harness(max_request_bytes=20_000, chunk=40)
    for number in range(300):
        h.change("customer", Op.CREATE, customer(number, f"c{number}@x.it"))
    real_send = h.api.send
    sent: list[str] = []
    answered = count()

    async def crash_on_the_third(call: str, body: bytes) -> dict[str, Any]:
        if next(answered) == 2:
            raise RuntimeError("killed")
        answer = await real_send(call, body)
        sent.extend(c["email"] for c in orjson.loads(body)["customers"])
        return answer

    h.api.send = crash_on_the_third  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await h.flush()
    h.api.send = real_send  # type: ignore[method-assign]
    calls = await h.flush()
    again = [c["email"] for call, body in calls if call == "import" for c in body["customers"]]
    assert set(again).isdisjoint(sent)
    assert sorted(again + sent) == sorted(f"c{n}@x.it" for n in range(300))


async def test_an_order_gone_with_its_customer_is_met_only_when_the_delete_is_accepted() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"))
    h.change("order", Op.CREATE, order(10, 1))
    await h.flush()
    await h.check_imports()
    h.change("order", Op.UPDATE, order(10, 1, status="20"))  # order offset 1
    h.change("customer", Op.DELETE, customer(1, "a@x.it"))
    real_send = h.api.send

    async def down(call: str, body: bytes) -> dict[str, Any]:
        raise RuntimeError("the API is unreachable; the service is killed")

    h.api.send = down  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await h.flush()
    # Nothing reached Rfmcube: the order's change is not met, so its record is
    # not committed (the customer's delete that would take the order is owed).
    assert h.floor("order") == 1
    h.api.send = real_send  # type: ignore[method-assign]
    calls = await h.flush()
    assert calls == [("delete_customer", {"id": "1", "email": "a@x.it"})]
    assert h.floor("order") == 2 and h.floor("customer") == 2
