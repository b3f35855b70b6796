"""Resync: every document (or those changed since a time) sent again, resumable.

A resync is carried out by the active instance, so that it shares the key's
budget with the live stream and never needs the service stopped. It owes
every customer and order in the scope (:mod:`consumer.state.owing`: the
numbers reserved first, then page by page, forgetting what Rfmcube was thought
to hold), and the flush sends them as it sends anything owed: whole customers
with their orders and items, in ``/import`` requests packed near
``max_request_bytes``, each import's process checked until it completed. What
is owed is durable: killed at any point, the service goes on where it stopped
at its next start (owing the rest of the scope first), and never sends again
what an accepted import carried. At the end, the store's accepted hashes are
what was sent, so the live stream carries on without sending it again.

:class:`Resync` keeps its state in the store (``meta``), and what it reports
(requests, bytes) from counters the store keeps, so that a restart changes
none of it; :class:`ResyncControl` owes the scope a page at a time on the
event loop. :func:`estimate` says what a resync would cost without sending
anything (``--dry-run``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.state.obligations import Obligations
from consumer.state.store import IMPORT_BYTES, REQUESTS_SENT, StateStore, loads_fields
from schemas.entities import Kind, MappedRow
from schemas.rfmcube import customer_document, dumps, import_customer, order_document

__all__ = ["Estimate", "Resync", "ResyncControl", "ResyncState", "estimate", "parse_since"]

log = logging.getLogger(__name__)

_META = "resync"
# Documents a resync builds, packs and settles a second: 14,500 to 17,700 measured on
# a 2-core VM with its planning workers (bench/README.md, "Resync at scale"); under
# that, to be safe, and for a pod of one CPU, which builds them in the service.
DOCUMENTS_PER_SECOND = 10_000
# A page of the scope should take about this long (its size adapts to it).
OWING_PAGE_SECONDS = 0.35
REMAINING_EVERY_SECONDS = 2.0  # counting what is left is a scan: this often at most
# ... and sooner the less is left: a count of N is N / this seconds old at most (a
# scan counts some 14 million a second: under 1 % of a core), so the end is seen at once.
REMAINING_PER_SECOND = 100_000
_DURATION = re.compile(r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, *, now: datetime | None = None) -> int:
    """``--since``: an ISO-8601 time (``2026-11-27T18:00:00Z``; no zone: UTC) or a
    duration back from now (``90m``, ``24h``, ``7d``). Returns epoch milliseconds."""
    text = text.strip()
    now = now or datetime.now(UTC)
    duration = _DURATION.fullmatch(text)
    if duration is not None:
        seconds = float(duration["amount"]) * _UNITS[duration["unit"]]
        return int((now - timedelta(seconds=seconds)).timestamp() * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a time such as 2026-11-27T18:00:00Z, or a duration"
            " such as 90m, 24h or 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(slots=True)
class ResyncState:
    """A resync, as the service reports it (``GET /resync``)."""

    id: str
    state: str  # running, done
    since_ms: int | None
    started_at: float
    documents: int  # owed so far (all of the scope once ``owing`` is false)
    remaining: int
    first_seq: int
    last_seq: int
    requests: int = 0  # requests the service sent since the resync began
    bytes_sent: int = 0  # bytes of the imports accepted since the resync began
    finished_at: float | None = None
    owing: bool = False  # its scope is still being owed, a page at a time
    stamp: float = 0.0  # when its scope was reserved (``since`` of its documents)
    requests_at_start: int = 0  # the store's counters when it began
    bytes_at_start: int = 0

    def as_json(self) -> dict[str, object]:
        return asdict(self)


class Resync:
    """The active instance's resync: started on request, followed in the store."""

    def __init__(
        self,
        store: StateStore,
        obligations: Obligations,
        *,
        clock: Callable[[], float] = time.time,
        page: int | None = None,
    ) -> None:
        self._store = store
        self._obligations = obligations
        self._clock = clock
        # Keys per page of the scope: adapted to OWING_PAGE_SECONDS, or as given (tests).
        self._page = page or 5_000
        self._page_fixed = page is not None
        self._counted: tuple[float, int] = (float("-inf"), 0)  # (monotonic, remaining)

    def current(self) -> ResyncState | None:
        """The last resync, brought up to date (done once its scope is owed, nothing of
        it is owed any more and every import is known to have completed)."""
        raw = self._store.meta(_META)
        if raw is None:
            return None
        state = ResyncState(**json.loads(raw))
        if state.state != "running":
            return state
        obligations = self._obligations
        scope = obligations.owing_scope()
        if scope is not None and scope.first_seq == state.first_seq:
            state.documents, state.owing = scope.owed, not scope.finished
        else:
            state.owing = False
        state.requests = self._store.counter(REQUESTS_SENT) - state.requests_at_start
        state.bytes_sent = self._store.counter(IMPORT_BYTES) - state.bytes_at_start
        state.remaining = self._remaining(state)
        if (
            not state.owing
            and state.remaining == 0
            and obligations.pending_imports() == 0
            and obligations.settling() == 0
        ):
            state.state = "done"
            state.finished_at = self._clock()
        self._save(state)
        return state

    def _remaining(self, state: ResyncState) -> int:
        """Of its documents, how many are still owed: counted again after a time in
        proportion to the last count (a scan of them), and 0 only once none is."""
        obligations = self._obligations
        now = time.monotonic()
        every = min(REMAINING_EVERY_SECONDS, self._counted[1] / REMAINING_PER_SECOND)
        if now - self._counted[0] >= every:
            counted = obligations.owed_between(state.first_seq, state.last_seq, since=state.stamp)
            self._counted = (now, counted)
        return self._counted[1]

    def start(
        self, since_ms: int | None, *, forget: bool = True, owe_for: float | None = None
    ) -> tuple[ResyncState, bool]:
        """Start a resync, or report the one running; True when this call started it.
        Without ``forget`` (a mapping change), only documents whose content differs
        from what Rfmcube holds go out. Its scope is owed for ``owe_for`` seconds here
        (None: all of it), the rest by :meth:`owe_page`."""
        running = self.current()
        if running is not None and running.state == "running":
            return running, False
        store = self._store
        with store.transaction():
            scope = self._obligations.begin_owing(since_ms=since_ms, forget=forget)
            state = ResyncState(
                id=uuid.uuid4().hex[:12],
                state="running",
                since_ms=since_ms,
                started_at=self._clock(),
                documents=0,
                remaining=0,
                first_seq=scope.first_seq,
                last_seq=scope.last_seq,
                owing=True,
                stamp=scope.stamp,
                requests_at_start=store.counter(REQUESTS_SENT),
                bytes_at_start=store.counter(IMPORT_BYTES),
            )
            self._save(state)
        deadline = None if owe_for is None else time.monotonic() + owe_for
        while self.owe_page() and (deadline is None or time.monotonic() < deadline):
            pass
        return self.current() or state, True

    def owe_page(self) -> bool:
        """Owe one page of the scope being owed (about ``OWING_PAGE_SECONDS``); False
        when none is being owed."""
        started = time.monotonic()
        scope = self._obligations.owe_page(self._page)
        if scope is None:
            return False
        took = time.monotonic() - started
        if self._page_fixed:
            pass
        elif took > OWING_PAGE_SECONDS:
            self._page = max(200, int(self._page * OWING_PAGE_SECONDS / took * 0.8))
        elif took < OWING_PAGE_SECONDS / 2:
            self._page = min(50_000, self._page * 3 // 2)
        return not scope.finished

    def _save(self, state: ResyncState) -> None:
        self._store.set_meta(_META, json.dumps(state.as_json()))


class ResyncControl:
    """A resync asked for on the service's port (``rfmcube-cdc resync``), its scope
    owed a page at a time, and its progress in the logs. Only the active instance
    starts one."""

    PROGRESS_SECONDS = 10.0
    OWE_FIRST_SECONDS = 0.3  # owed before answering: a small shop's whole scope

    def __init__(
        self,
        resync: Resync,
        *,
        may_start: Callable[[], bool],
        role: Callable[[], str],
        wake_flush: Callable[[], None],
    ) -> None:
        self._resync = resync
        self._may_start = may_start
        self._role = role
        self._wake_flush = wake_flush
        self._wake = asyncio.Event()

    def start_resync(self, since_ms: int | None) -> tuple[int, dict[str, Any]]:
        if not self._may_start():
            role = self._role()
            if role == "standby":
                return 409, {
                    "role": role,
                    "message": "this instance stands by: run rfmcube-cdc resync beside the"
                    " active instance (the one whose rfmcube_cdc_active is 1)",
                }
            return 503, {"role": "starting", "message": "this instance is starting: try again"}
        state, started = self._resync.start(since_ms, owe_for=self.OWE_FIRST_SECONDS)
        if started:
            log.info(
                "resync %s started%s: owing its documents",
                state.id,
                "" if since_ms is None else f", changed since {since_ms} ms",
            )
            self._owed(state)
        self._wake.set()
        self._wake_flush()
        return 202, {**state.as_json(), "started": started}

    def resync_status(self) -> tuple[int, dict[str, Any]]:
        state = self._resync.current()
        if state is None:
            return 404, {"message": "no resync was asked for"}
        return 200, state.as_json()

    def _owed(self, state: ResyncState) -> None:
        if not state.owing:
            log.info("resync %s: %d documents owed", state.id, state.documents)

    async def run(self, stopping: asyncio.Event) -> None:
        """Owe the scope of a resync a page at a time (one asked for, or left half
        owed by a crash), each page followed by a turn of the event loop; every
        10 s while a resync runs, a progress line (JSON logs: one object)."""
        next_line = time.monotonic() + self.PROGRESS_SECONDS
        owing = False
        while not stopping.is_set():
            more = self._resync.owe_page()
            if more or owing:
                self._wake_flush()
            if owing and not more:  # its last page
                state = self._resync.current()
                if state is not None:
                    self._owed(state)
            owing = more
            if time.monotonic() >= next_line:
                next_line = time.monotonic() + self.PROGRESS_SECONDS
                self._progress_line()
            if more:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            await first_of_wake(self._wake, stopping, min(1.0, next_line - time.monotonic()))

    def _progress_line(self) -> None:
        state = self._resync.current()
        if state is None or (
            state.finished_at is not None and state.finished_at < time.time() - 15
        ):
            return
        done = state.documents - state.remaining
        elapsed = max(time.time() - state.started_at, 1e-3)
        eta = state.remaining / (done / elapsed) if done else None
        log.info(
            "resync %s %s: %d of %d documents sent, %d bytes, %d requests%s",
            state.id,
            state.state + (" (owing its documents)" if state.owing else ""),
            done,
            state.documents,
            state.bytes_sent,
            state.requests,
            "" if eta is None or state.state == "done" else f", about {eta:.0f} s left",
        )


async def first_of_wake(event: asyncio.Event, stopping: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` or ``stopping``, at most ``timeout`` seconds."""
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopping.wait())]
    try:
        await asyncio.wait(waiters, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a resync would send (``--dry-run``)."""

    customers: int
    orders: int
    bytes: int
    imports: int
    requests: int  # imports and one process check each, at least
    minutes: float

    def lines(self) -> list[str]:
        return [
            f"documents: {self.customers + self.orders}"
            f" ({self.customers} customers, {self.orders} orders)",
            f"bytes: {self.bytes}",
            f"requests: {self.requests} ({self.imports} imports, one process check each)",
            f"estimated minutes: {self.minutes:.1f}",
        ]


def estimate(
    store: StateStore,
    *,
    since_ms: int | None,
    max_request_bytes: int,
    requests_per_minute: int,
    mark_deleted: Callable[[MappedRow], MappedRow] | None,
) -> Estimate:
    """Serialize every customer in the scope with its orders, as a resync would send
    them, one customer at a time, and count: nothing is sent, nothing is written."""
    db = store.db
    scope = {"since": since_ms}
    changed_order = (
        "(:since IS NULL OR o.changed_ms >= :since OR EXISTS (SELECT 1 FROM rows i"
        " INDEXED BY rows_by_parent"
        " WHERE i.kind = 'item' AND i.parent = o.key AND i.changed_ms >= :since))"
    )

    def orders_of(index: str, where: str, value: str) -> list[dict[str, object]]:
        rows = []
        for key, parent, email, blob, deleted in db.execute(
            f"SELECT o.key, o.parent, o.email, o.fields, o.deleted FROM rows o INDEXED BY {index}"
            f" WHERE o.kind = 'order' AND {where} AND {changed_order}",
            {**scope, "value": value},
        ):
            row = MappedRow(Kind.ORDER, key, loads_fields(blob), parent, email)
            if deleted:
                if mark_deleted is None:
                    continue
                row = mark_deleted(row)
            rows.append(row)
        items = store.items_of_many([row.key for row in rows])
        return [order_document(row, items[row.key]) for row in rows]

    customers = orders = total = 0
    for key, email, blob in db.execute(
        "SELECT key, email, fields FROM rows c WHERE kind = 'customer' AND deleted = 0"
        " AND (:since IS NULL OR changed_ms >= :since OR EXISTS (SELECT 1 FROM rows o"
        " INDEXED BY rows_by_parent"
        f" WHERE o.kind = 'order' AND o.parent = c.key AND {changed_order}))",
        scope,
    ).fetchall():
        customer = MappedRow(Kind.CUSTOMER, key, loads_fields(blob), None, email)
        docs = orders_of("rows_by_parent", "o.parent = :value", key)
        total += len(dumps(import_customer(customer_document(customer), docs))) + 1
        customers += 1
        orders += len(docs)
    for (email,) in db.execute(
        "SELECT DISTINCT email FROM rows WHERE kind = 'order' AND parent IS NULL"
    ).fetchall():
        docs = orders_of("rows_by_email", "o.parent IS NULL AND o.email = :value", email)
        if docs:
            guest = {"email": email, "createdAt": None, "updatedAt": None}
            total += len(dumps(import_customer(guest, docs))) + 1
            orders += len(docs)
    imports = math.ceil(total / max_request_bytes) if total else 0
    requests = 2 * imports
    # The budget is rarely what a resync waits for: building and packing the
    # documents is (bench/README.md, "Resync at scale").
    seconds = max(
        60.0 * requests / requests_per_minute, (customers + orders) / DOCUMENTS_PER_SECOND
    )
    return Estimate(customers, orders, total, imports, requests, seconds / 60)
