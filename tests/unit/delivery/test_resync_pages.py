"""A resync killed between any two pages ends with Rfmcube holding the shop, and
never sends again what an accepted import carried (issue 20).

In-process: the store on a file, the service's own resync, flush, sender and
process checks, a stand-in for the API that keeps what each import carried.
Pages are tiny (a few keys, a few staged rows), so that a small shop takes
many: a kill between two pages of owing the scope, or of settling an accepted
import, is the objects dropped at that point (every page committed its
transaction) and the service started again on the same file, as after a
SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.packing import import_envelope
from consumer.delivery.processes import ProcessChecker
from consumer.delivery.resync import Resync
from consumer.state.obligations import Obligations, owed_doc
from consumer.state.store import StateStore
from testkit.storeshop import build_store_shop, shop_flusher


class Killed(Exception):
    """The SIGKILL: nothing after it runs in this process (nothing in the service
    catches it: the test then drops every object)."""


class Rfmcube:
    """Keeps what imports carried, as Rfmcube holds it: customers and orders by id."""

    def __init__(self) -> None:
        self.imports: list[dict[str, Any]] = []
        self.customer_bytes = 0  # what the imports carried, their envelopes apart
        self.customers: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, tuple[str, dict[str, Any]]] = {}

    async def send(self, call: str, body: Any) -> dict[str, Any]:
        raw = body if isinstance(body, bytes) else body.read_all()
        data = orjson.loads(raw)
        assert call == "import", f"a resync sends imports only, not {call}"
        self.imports.append(data)
        head, tail = import_envelope(trigger_integrations=False)
        self.customer_bytes += len(raw) - len(head) - len(tail) - (len(data["customers"]) - 1)
        for customer in data["customers"]:
            owner = customer.get("id") or f"@{customer['email']}"
            self.customers[owner] = {k: v for k, v in customer.items() if k != "orders"}
            for order in customer["orders"]:
                self.orders[order["id"]] = (owner, order)
        return {"processId": len(self.imports)}

    async def process(self, process_id: int | str) -> dict[str, Any]:
        return {"processId": process_id, "status": "completed"}

    def orders_sent(self) -> list[str]:
        return [o["id"] for body in self.imports for c in body["customers"] for o in c["orders"]]


class Service:
    """The parts of the service a resync goes through, on the store at ``path``."""

    def __init__(self, path: Path, api: Rfmcube) -> None:
        self.store = StateStore(path)
        self.obligations = obligations = Obligations(self.store, first_check=0.0)
        limiter = RateLimiter(100_000, 60)
        self.flusher = shop_flusher(
            obligations,
            api,
            max_request_bytes=3_000,  # a few customers an import
            dead_letter_doc=lambda *_: pytest.fail("nothing is dead-lettered"),
            limiter=limiter,
            chunk=10,
            workers=0,
            settle_page=4,
        )
        self.checker = ProcessChecker(obligations, api, limiter, on_failed=lambda: None)
        self.resync = Resync(self.store, obligations, page=6)

    async def run(self) -> None:
        """As the service's tasks do: what a crash left half settled first; the scope
        owed a page at a time (a task of its own), flushes and the due checks, until
        the resync is done."""
        await self.flusher.settle_imports()

        async def owe() -> None:
            while self.resync.owe_page():
                await asyncio.sleep(0)

        owing = asyncio.create_task(owe())
        try:
            for _ in range(1000):
                await self.flusher.flush_once()
                for pending in self.obligations.due_imports(float("inf"), 100):
                    await self.checker.check(pending)
                if owing.done():
                    owing.result()  # a kill there ends this process too
                state = self.resync.current()
                assert state is not None
                if state.state == "done":
                    return
                await asyncio.sleep(0)
            pytest.fail("the resync never ended")
        finally:
            owing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Killed):
                await owing


def kill_after(calls: int, target: Any, name: str) -> None:
    """``target.name`` raises Killed when called for the (calls + 1)-th time."""
    real = getattr(target, name)
    counter: Iterator[int] = iter(range(calls))

    def counted(*args: Any, **kwargs: Any) -> Any:
        if next(counter, None) is None:
            raise Killed
        return real(*args, **kwargs)

    setattr(target, name, counted)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Rfmcube:
    path = tmp_path_factory.mktemp("reference") / "state.db"
    build_store_shop(path).close()
    api = Rfmcube()
    service = Service(path, api)
    service.resync.start(None, owe_for=0.0)
    asyncio.run(service.run())
    return api


async def _resync_killed(tmp_path: Path, where: str, pages: int) -> tuple[Rfmcube, Service]:
    path = tmp_path / "state.db"
    build_store_shop(path).close()
    api = Rfmcube()
    service = Service(path, api)
    service.resync.start(None, owe_for=0.0)
    if where == "owing":
        kill_after(pages, service.obligations, "owe_page")
    else:
        kill_after(pages, service.obligations, "settle_page")
    with pytest.raises(Killed):
        await service.run()
    del service  # SIGKILL
    restarted = Service(path, api)
    await restarted.run()
    return api, restarted


def test_the_reference_resync_takes_many_pages_and_imports(uninterrupted: Rfmcube) -> None:
    assert len(uninterrupted.imports) >= 10
    # The deleted order is sent, as deleted; the 3 orders of the deleted customer are not.
    assert len(uninterrupted.orders) == 3 * 23 + 5 - 3
    assert len(uninterrupted.customers) == 22 + 5  # registered (one deleted) and guests


@pytest.mark.parametrize("pages", [0, 1, 2, 5, 9, 14])
async def test_a_resync_killed_between_two_pages_of_owing_ends_equal_sending_each_once(
    tmp_path: Path, uninterrupted: Rfmcube, pages: int
) -> None:
    api, service = await _resync_killed(tmp_path, "owing", pages)
    assert api.customers == uninterrupted.customers
    assert api.orders == uninterrupted.orders
    sent = api.orders_sent()
    assert len(sent) == len(set(sent)), "an order went in two imports"
    state = service.resync.current()
    assert state is not None and state.documents == 22 + 3 * 23 + 5


@pytest.mark.parametrize("pages", [0, 1, 2, 3, 7, 12, 20])
async def test_a_resync_killed_between_two_pages_of_settling_never_sends_an_import_again(
    tmp_path: Path, uninterrupted: Rfmcube, pages: int
) -> None:
    api, service = await _resync_killed(tmp_path, "settling", pages)
    assert api.customers == uninterrupted.customers
    assert api.orders == uninterrupted.orders
    sent = api.orders_sent()
    assert len(sent) == len(set(sent)), "an order an accepted import carried went again"
    # What Rfmcube holds is remembered (the live stream sends none of it again): all
    # but the deleted customer and its orders, which Rfmcube does not hold.
    store = service.store
    (unknown,) = store.db.execute(
        "SELECT count(*) FROM rows r WHERE r.kind IN ('customer', 'order')"
        " AND NOT EXISTS (SELECT 1 FROM accepted a"
        " WHERE a.kind = r.kind AND a.key = r.key AND a.hash != 'old')"
    ).fetchone()
    assert unknown == 1 + 3
    assert store.db.execute("SELECT count(*) FROM owed").fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM import_staged").fetchone()[0] == 0


async def test_what_a_resync_reports_survives_a_restart(tmp_path: Path) -> None:
    api, service = await _resync_killed(tmp_path, "settling", 9)
    state = service.resync.current()
    assert state is not None and state.state == "done"
    assert (state.documents, state.remaining) == (22 + 3 * 23 + 5, 0)
    # Every byte accepted, before the kill and after: kept in the store, not in memory.
    assert state.bytes_sent == api.customer_bytes > 0


class Failing(Rfmcube):
    """Its processes fail."""

    async def process(self, process_id: int | str) -> dict[str, Any]:
        return {"processId": process_id, "status": "failed"}


async def test_an_import_that_fails_while_it_is_settled_owes_all_it_carried(
    tmp_path: Path,
) -> None:
    """Its process is checked before its last page (a large import settles for
    seconds): the failure waits for that page, then owes everything again."""
    path = tmp_path / "state.db"
    build_store_shop(path).close()
    api = Failing()
    service = Service(path, api)
    obligations = service.obligations
    obligations.owe_everything(since_ms=None, forget=True)
    owed = {(kind, key) for kind, key, *_ in obligations.take_rows(1000)}
    rows = [(kind.value, key, "sent", seq, 0, None) for (kind, key), seq, *_ in _refs(obligations)]
    (staged,) = obligations.stage_many([rows])
    obligations.accept_import("7", staged, hold_commits=False, nbytes=1)
    (pending,) = obligations.due_imports(float("inf"), 10)
    checking = asyncio.create_task(service.checker.check(pending))
    await asyncio.sleep(0.3)
    assert not checking.done(), "the failure waits for the import's last page"
    await service.flusher.settle_imports()
    assert await checking == "failed"
    assert {(kind, key) for kind, key, *_ in obligations.take_rows(1000)} == owed
    (held,) = service.store.db.execute("SELECT count(*) FROM accepted WHERE hash = 'sent'")
    assert held[0] == 0, "a failed import's hashes are not what Rfmcube holds"
    assert obligations.pending_imports() == 0


def _refs(obligations: Obligations) -> list[tuple[tuple[Any, str], int]]:
    return [(owed_doc(row).ref, row[2]) for row in obligations.take_rows(1000)]


async def test_a_resync_is_done_at_the_first_look_after_its_last_document_is_met(
    tmp_path: Path,
) -> None:
    """What is left is counted again soon when little is left: the resync reads done
    at the next status call (``rfmcube-cdc resync`` asks every second), not seconds
    after its last import was settled and checked."""
    path = tmp_path / "state.db"
    build_store_shop(path).close()
    service = Service(path, Rfmcube())
    service.resync.start(None)  # the whole scope owed now
    state = service.resync.current()
    assert state is not None and state.remaining == 22 + 3 * 23 + 5
    while await service.flusher.flush_once():
        for pending in service.obligations.due_imports(float("inf"), 100):
            await service.checker.check(pending)
    assert service.obligations.owed_count() == 0
    state = service.resync.current()
    assert state is not None
    assert (state.state, state.remaining) == ("done", 0)
