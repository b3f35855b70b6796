"""Freshness: each document the API accepts is observed once, by call, from the
source time of the oldest change it carries (rfmcube_cdc_freshness_seconds).

Pure logic, in-process: the store in memory, a fake API, the real flush."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Any

import orjson

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
from schemas.entities import Kind

TOPIC = {"customer": "shop.public.customers", "order": "shop.public.orders"}
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
NOW = 2_000_000.0  # the service's clock, in seconds


def customer(cid: int, email: str, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "email": email, "created_at": T0, "updated_at": T0, **extra}


def order(oid: int, cid: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": oid,
        "customer_id": cid,
        "status": "10",
        "amount": Decimal("1.00"),
        "created_at": T0,
        "updated_at": T0,
        **extra,
    }


class Api:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.states: dict[str, str] = {}
        self._ids = count(1)
        self.on_send: Any = None  # called while a request is on the wire

    async def send(self, call: str, body: bytes) -> dict[str, Any]:
        orjson.loads(body)
        self.calls.append(call)
        if self.on_send is not None:
            self.on_send()
        if call == "import":
            pid = str(next(self._ids))
            self.states[pid] = "completed"
            return {"processId": pid}
        return {}

    async def process(self, process_id: int | str) -> dict[str, Any]:
        return {"processId": process_id, "status": self.states[str(process_id)]}


class Harness:
    def __init__(self, *, hold_imports: bool = False) -> None:
        self.mapping = Mapping.load(None)
        self.store = StateStore(":memory:")
        self.obligations = Obligations(self.store, clock=lambda: NOW)
        self.api = Api()
        self.observed: list[tuple[str, float]] = []
        limiter = RateLimiter(10_000, 60)
        self.flusher = Flusher(
            self.obligations,
            Planner(
                self.store, self.obligations, mark_deleted=self.mapping.mark_deleted, orphan_wait=0
            ),
            Sender(self.api, max_request_bytes=1_000_000),
            limiter,
            min_window=0.0,
            max_documents=1_000,
            hold_imports=hold_imports,
            dead_letter_doc=lambda ref, pos, reason, body: None,
            hurry_imports=lambda pids: None,
            fresh=self.fresh,
            clock=lambda: NOW,
        )
        self.checker = ProcessChecker(
            self.obligations,
            self.api,
            limiter,
            on_failed=lambda: None,
            on_completed=lambda ms: self.fresh("import", ms) if hold_imports else None,
            clock=lambda: NOW,
        )
        self._offsets = count()

    def fresh(self, call: str, source_ms: list[int]) -> None:
        self.observed += [(call, NOW - ms / 1000) for ms in source_ms]

    def change(self, kind: str, op: Op, row: dict[str, Any], *, seconds_ago: float) -> None:
        """A change committed in the shop ``seconds_ago`` before NOW."""
        position = Position(TOPIC[kind], 0, next(self._offsets))
        source_ms = int((NOW - seconds_ago) * 1000)
        after = None if op is Op.DELETE else row
        before = row if op is Op.DELETE else None
        event = ChangeEvent(position, {"id": row["id"]}, op, before, after, None, source_ms)
        change = self.mapping.map_event(event)
        assert change is not None
        with open_batch(self.obligations) as batch:
            batch.now = NOW
            batch.apply(change)

    async def check_imports(self) -> None:
        for pending in self.obligations.due_imports(NOW + 3600, 100):
            await self.checker.check(pending)


async def test_a_merge_is_observed_from_its_oldest_change() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"), seconds_ago=40)
    h.change("customer", Op.UPDATE, customer(1, "b@x.it"), seconds_ago=10)
    await h.flusher.flush_once()
    assert h.api.calls == ["merge_customer"]
    assert h.observed == [("merge_customer", 40)]


async def test_every_document_of_an_import_is_observed_once() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"), seconds_ago=50)
    h.change("order", Op.CREATE, order(10, 1), seconds_ago=20)
    h.change("customer", Op.CREATE, customer(2, "b@x.it"), seconds_ago=5)
    await h.flusher.flush_once()
    assert h.api.calls == ["import"]
    assert sorted(h.observed) == [("import", 5), ("import", 20), ("import", 50)]
    await h.flusher.flush_once()  # nothing owed: nothing observed again
    assert len(h.observed) == 3


async def test_a_delete_is_observed_under_its_own_call() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"), seconds_ago=60)
    await h.flusher.flush_once()
    h.change("customer", Op.DELETE, customer(1, "a@x.it"), seconds_ago=3)
    await h.flusher.flush_once()
    assert h.api.calls == ["merge_customer", "delete_customer"]
    assert h.observed == [("merge_customer", 60), ("delete_customer", 3)]


async def test_a_change_during_the_send_is_observed_from_itself_next_time() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"), seconds_ago=100)
    # While the merge is on the wire, the customer changes again (2 s ago).
    h.api.on_send = lambda: h.change("customer", Op.UPDATE, customer(1, "c@x.it"), seconds_ago=2)
    await h.flusher.flush_once()
    h.api.on_send = None
    await h.flusher.flush_once()
    assert h.observed == [("merge_customer", 100), ("merge_customer", 2)]


async def test_completed_acceptance_observes_imports_when_their_process_completes() -> None:
    h = Harness(hold_imports=True)
    h.change("customer", Op.CREATE, customer(1, "a@x.it"), seconds_ago=30)
    h.change("customer", Op.CREATE, customer(2, "b@x.it"), seconds_ago=30)
    await h.flusher.flush_once()
    assert h.observed == []  # accepted only once its process completed
    await h.check_imports()
    assert h.observed == [("import", 30), ("import", 30)]


async def test_a_failed_import_is_owed_again_with_its_changes_times() -> None:
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"), seconds_ago=30)
    h.change("customer", Op.CREATE, customer(2, "b@x.it"), seconds_ago=30)
    await h.flusher.flush_once()
    h.api.states["1"] = "failed"
    await h.check_imports()
    (doc, _) = h.obligations.take(10)
    assert doc.source_ms == int((NOW - 30) * 1000)
    await h.flusher.flush_once()
    assert h.observed == [("import", 30)] * 4  # accepted twice: the second reached Rfmcube


async def test_a_resync_is_not_observed() -> None:
    """A resync sends what did not change: a delay from the source means nothing."""
    h = Harness()
    h.change("customer", Op.CREATE, customer(1, "a@x.it"), seconds_ago=30)
    await h.flusher.flush_once()
    h.observed.clear()
    h.obligations.owe_everything(since_ms=None, forget=True)
    await h.flusher.flush_once()
    assert h.api.calls == ["merge_customer", "merge_customer"]
    assert h.observed == []


def test_a_store_written_before_freshness_gets_its_columns(tmp_path: Any) -> None:
    path = tmp_path / "old.db"
    store = StateStore(path)
    Obligations(store)
    # As an earlier version wrote it: its age index without the source time.
    store.db.execute("DROP INDEX owed_by_age_and_source")
    store.db.execute("CREATE INDEX owed_by_age ON owed (since, seq)")
    for table, column in (("owed", "source_ms"), ("owed", "latest_ms")):
        store.db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    store.db.execute("ALTER TABLE import_docs DROP COLUMN source_ms")
    store.db.execute(
        "INSERT INTO owed (kind, key, seq, since) VALUES (?, '1', 1, 1.0)", (Kind.CUSTOMER.value,)
    )
    store.close()
    store = StateStore(path)
    (doc,) = Obligations(store).take(10)
    assert doc.source_ms is None  # owed by an earlier version: not observed
    indexes = {name for (name,) in store.db.execute("SELECT name FROM sqlite_master")}
    assert "owed_by_age_and_source" in indexes and "owed_by_age" not in indexes
    store.close()
