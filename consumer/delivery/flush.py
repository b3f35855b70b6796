"""Flush: owed documents → plan → requests → settlement.

The pace is the rate limit: while no request slot is free, changes keep
joining what is owed, so the next flush carries more of them in the same
number of requests; ``min_window`` keeps a burst together. One flush at a
time: two in flight could deliver versions of one document out of order.

A flush takes the documents owed longest, page by page (up to
``max_documents``), plans and packs each page (:mod:`consumer.delivery.planner`,
:mod:`consumer.delivery.packing`), in worker processes when there is more than
a page (:mod:`consumer.delivery.workers`), and sends them
(:mod:`consumer.delivery.sender`): imports are packed near
``max_request_bytes`` across pages, so a backlog of a million documents (a
resync, a long outage, a first sync) goes out in as few requests as its bytes
need. What an import carries is staged in the store as it is packed; once the
API accepted it, it is settled in pages by a task beside the next pages
(:mod:`consumer.delivery.settle`, :mod:`consumer.state.settling`; its
rows sorted for that while it is on the wire), all before the flush ends. What
is not settled stays owed: a crash anywhere sends it again, never loses it, and
never sends again what was accepted.

Each document and delete the API accepts is reported to ``fresh`` with the
source time of the oldest change it carried (``rfmcube_cdc_freshness_seconds``),
by call: a merge or a delete when it is answered, an import's documents as they
are settled (seconds after its acceptance); with ``completed`` acceptance, an
import's documents when its process completed (:mod:`consumer.delivery.processes`).

Nothing holds the event loop for long: each page of planning, packing and
settling is followed by a turn of the loop (health answers, the resync's
progress, process checks and ingest get theirs).

**Catching up.** While reading is far behind the topics (a first sync of a
shop, a long outage's backlog), what is owed waits until an import's worth of
it is (by the bytes documents have taken so far), or until reading is paused
by ``store.max_owed_documents``, or ``CATCH_UP_HOLD_SECONDS`` passed: the
snapshot's orders, items and customers arrive on different topics, and sent
early, a document goes again with each record that touches it later. And a
flush ends with its first full import: what it packed after that stays owed
for the next flush, which waits for an import's worth again, instead of going
as a small import of its own (at 300,000 customers, every other import was a
tail of 20 to 115 MB).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from consumer.cpus import available_cpus
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.packing import PackedPlan, pack
from consumer.delivery.planner import Planner
from consumer.delivery.sender import DeadDoc, Dispatch, Outcome, Sender
from consumer.delivery.settle import Fresh, ImportSettler
from consumer.delivery.workers import PlanningPool
from consumer.errors import NotActive
from consumer.state.obligations import Obligations, OwedDoc, OwedRow, Settlement, owed_doc
from schemas.debezium import Position
from schemas.entities import DocRef, Kind

__all__ = ["DeadLetterDoc", "FlushStats", "Flusher", "Fresh"]

log = logging.getLogger(__name__)

DeadLetterDoc = Callable[[DocRef, Position | None, str, bytes], None]

# Reading more than this many records behind the topics is catching up (see above).
CATCH_UP_RECORDS = 20_000
CATCH_UP_HOLD_SECONDS = 120.0
DOCUMENT_BYTES_GUESS = 500  # before the first import says how large documents are
OWING_STALLED_SECONDS = 1.0
# Worker processes for a flush of this many owed documents or more: below it,
# starting them (about a second, 85 MiB each) costs more than planning here.
POOL_FROM_DOCUMENTS = 50_000


@dataclass(slots=True)
class FlushStats:
    flushes: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    documents_sent: int = 0
    documents_unchanged: int = 0
    parked: int = 0
    dead: int = 0
    settled: int = 0  # obligations met, sent or not
    bytes_sent: int = 0  # of the documents accepted imports carried
    last_accepted_at: float | None = None


class Flusher:
    def __init__(
        self,
        obligations: Obligations,
        planner: Planner,
        sender: Sender,
        limiter: RateLimiter,
        *,
        min_window: float,
        max_documents: int,
        chunk: int = 2_000,
        hold_imports: bool,
        dead_letter_doc: DeadLetterDoc,
        hurry_imports: Callable[[set[str]], None],
        imports_accepted: Callable[[], None] = lambda: None,
        fresh: Fresh = lambda call, source_ms: None,
        clock: Callable[[], float] = time.time,
        workers: int | None = None,
        backlog: Callable[[], int] | None = None,
        owed_bound: int | None = None,
        settle_page: int | None = None,
        workers_from: int = POOL_FROM_DOCUMENTS,
        uploads_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._obligations = obligations
        self._planner = planner
        self._sender = sender
        self._limiter = limiter
        self._min_window = min_window
        self._max_documents = max_documents
        self._chunk = chunk
        self._hold_imports = hold_imports
        self._dead_letter_doc = dead_letter_doc
        self._hurry_imports = hurry_imports
        self._imports_accepted = imports_accepted  # their checks fall due
        self._fresh = fresh
        # The source times of this flush's deletes: their outcome names only the customer.
        self._delete_sources: dict[DocRef, int] = {}
        self._clock = clock
        self._backlog = backlog  # records read behind the topics' ends
        self._owed_bound = owed_bound  # store.max_owed_documents: reading pauses there
        self._lock = asyncio.Lock()
        self.dirty = asyncio.Event()
        self.settled = asyncio.Event()  # obligations were met: commits may be due
        self.stats = FlushStats()
        self._settler = ImportSettler(
            obligations,
            fresh=fresh,
            settled=self.settled,
            page=settle_page,
            uploads_idle=uploads_idle,
        )
        self._pool = self._make_pool(workers)
        self._workers_from = workers_from  # owed documents a flush needs to start them
        self._owed_seen: tuple[float, int] = (float("-inf"), 0)  # (monotonic, count)
        self._owing_seen: tuple[float, int] = (time.monotonic(), -1)  # (monotonic, owed)

    def _make_pool(self, workers: int | None) -> PlanningPool | None:
        """Workers read the store from other processes: a store on a file, and two
        CPUs at least (on one, they would only compete with the service)."""
        path = self._obligations.store.path
        if workers is None:
            workers = int(available_cpus()) if available_cpus() >= 1.5 else 0
        if path is None or workers < 1:
            return None
        return PlanningPool(path, self._planner.spec, workers)

    def close(self) -> None:
        """Stop the workers (the service stops)."""
        if self._pool is not None:
            self._pool.close()

    async def run(self, stopping: asyncio.Event, may_send: Callable[[], bool]) -> None:
        """Flush whenever something is owed, the window is old enough and a slot is free."""
        await self.settle_imports()  # what a crash left between two pages, first
        while not stopping.is_set():
            oldest = self._obligations.oldest_since()
            if oldest is None:
                await _first(self.dirty, stopping, timeout=5.0)
                self.dirty.clear()
                continue
            wait = max(oldest + self._min_window - self._clock(), self._limiter.next_free_in())
            if wait > 0:
                # While no request slot is free, changes keep joining what is owed.
                await _first(None, stopping, timeout=wait)
                continue
            if not may_send():
                await _first(None, stopping, timeout=0.5)
                continue
            if self._catching_up(oldest):
                await _first(None, stopping, timeout=0.5)
                continue
            self.dirty.clear()
            progressed = await self.flush_once()
            self._owed_seen = (float("-inf"), 0)  # counted again: the flush met some
            if not progressed:
                # Only documents that must wait (an order for its customer, a delete
                # for an import): look again on news, or in a while.
                await _first(self.dirty, stopping, timeout=max(self._min_window, 1.0))

    def _far_behind(self) -> bool:
        """Whether reading is far behind the topics' ends (see the module's docstring)."""
        return self._backlog is not None and self._backlog() >= CATCH_UP_RECORDS

    def _catching_up(self, oldest: float) -> bool:
        """Whether what is owed should wait for more (see the module's docstring)."""
        if not self._far_behind():
            return False
        if self._clock() - oldest > CATCH_UP_HOLD_SECONDS:
            return False
        now = time.monotonic()
        if now - self._owed_seen[0] >= 1.0:  # counting is a scan: once a second
            self._owed_seen = (now, self._obligations.owed_count())
        owed = self._owed_seen[1]
        if self._owed_bound is not None and owed >= 0.9 * self._owed_bound:
            return False  # reading pauses near the bound: waiting would wait for nothing
        stats = self.stats
        per_document = (
            stats.bytes_sent / stats.documents_sent
            if stats.documents_sent
            else DOCUMENT_BYTES_GUESS
        )
        return owed * per_document < self._sender.max_request_bytes

    async def flush_once(self) -> bool:
        """One flush; False when nothing could go out or be settled."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> bool:
        """Owed documents in pages of ``chunk`` (the longest owed first), planned and
        packed page by page (in workers past the first page) and sent through one
        :class:`Dispatch`: imports packed across pages. Each answered request is
        settled at once, and each page's documents that need none. Returns whether
        anything was sent or settled."""
        obligations = self._obligations
        dispatch = self._sender.dispatch(
            self._settle_outcome,
            obligations,
            spool_directory=_directory(obligations),
            on_wire=self._settler.presort_soon,
        )
        progressed = False
        after: tuple[float, int] | None = None
        until = obligations.last_seq()  # what changes meanwhile is the next flush's
        taken = 0
        self._delete_sources = {}
        planned: deque[tuple[asyncio.Future[PackedPlan], list[OwedRow]]] = deque()
        pool = self._pool
        if pool is not None and not pool.started and not self._large(until):
            pool = None
        # Pages in the workers' hands: enough that they keep building while this loop
        # settles a page or sends (a page's result is about a MB).
        depth = 4 * pool.processes if pool is not None else 0
        behind = self._far_behind()

        def one_import_sent() -> bool:
            return behind and dispatch.full_imports > 0

        try:
            while taken < self._max_documents and not one_import_sent():
                owed = obligations.take_rows(self._chunk, after, until)
                if not owed:
                    if not self._more_owed_soon(until):
                        break
                    # A resync's scope is still being owed: its next page, not a short
                    # import now.
                    if planned:
                        progressed |= await self._send(dispatch, await self._planned(planned))
                    else:
                        await asyncio.sleep(0.05)
                    continue
                self._delete_sources.update(
                    ((Kind(row[0]), row[1]), row[5])
                    for row in owed
                    if row[4] and row[5] is not None
                )
                after = (owed[-1][3], owed[-1][2])
                first = taken == 0
                taken += len(owed)
                if pool is not None and not (first and len(owed) < self._chunk):
                    planned.append((pool.pack(owed, self._clock()), owed))
                    while len(planned) > depth:
                        progressed |= await self._send(dispatch, await self._planned(planned))
                else:
                    while planned:
                        progressed |= await self._send(dispatch, await self._planned(planned))
                    packed = pack(self._planner.plan([owed_doc(r) for r in owed], self._clock()))
                    # A merge only when this page is all that is owed.
                    merge = first and len(owed) < self._chunk
                    progressed |= await self._send(dispatch, packed, merge=merge)
                # Planning and packing never wait: without this, a backlog of a
                # million documents holds the event loop for minutes (health probes,
                # resync progress, process checks) until an import goes out.
                await asyncio.sleep(0)
            while planned and not one_import_sent():
                progressed |= await self._send(dispatch, await self._planned(planned))
            await dispatch.finish(send_rest=not one_import_sent())
        except NotActive:
            log.warning("no longer the active instance: what this flush did not send stays owed")
        finally:
            for future, _ in planned:
                future.cancel()
            dispatch.close()
            await self._settler.finish()  # every accepted import, before another flush
            obligations.drop_staged()
        return progressed

    def _large(self, until: int) -> bool:
        """Whether this flush is worth starting the workers: a resync's scope being
        owed, or that many documents owed (counted: a scan, once a flush)."""
        scope = self._obligations.owing_scope()
        if scope is not None and not scope.finished and scope.first_seq <= until:
            return True
        return self._obligations.owed_count() >= self._workers_from

    def _more_owed_soon(self, until: int) -> bool:
        """Whether a resync's scope reserved before this flush is still being owed, a
        page at least each ``OWING_STALLED_SECONDS`` (none may come: the service
        stops, and the flush that owes nothing more is its last)."""
        scope = self._obligations.owing_scope()
        if scope is None or scope.finished or scope.first_seq > until:
            return False
        now = time.monotonic()
        if scope.owed != self._owing_seen[1]:
            self._owing_seen = (now, scope.owed)
        return now - self._owing_seen[0] < OWING_STALLED_SECONDS

    async def _planned(
        self, planned: deque[tuple[asyncio.Future[PackedPlan], list[OwedRow]]]
    ) -> PackedPlan:
        """The oldest page a worker plans; planned here if the workers broke (one was
        killed): they are started again for the next pages."""
        future, owed = planned.popleft()
        try:
            return await future
        except BrokenProcessPool:
            log.warning("a planning worker died: planning its page here, and starting workers")
            if self._pool is not None:
                self._pool.close()
            return pack(self._planner.plan([owed_doc(r) for r in owed], self._clock()))

    async def _send(self, dispatch: Dispatch, packed: PackedPlan, *, merge: bool = False) -> bool:
        self._hurry_imports(packed.hurry)
        await dispatch.add(
            packed,
            merge=merge,
            in_pending_import=lambda refs: bool(self._obligations.imports_carrying(refs)),
        )
        return self._settle_plan(packed) | packed.sends

    def _settle_plan(self, plan: PackedPlan) -> bool:
        """What a page needs no request for: unchanged, parked, rejected documents."""
        rejected = [DeadDoc(d.ref, d, reason, b"") for d, reason in plan.rejected]
        done: list[OwedDoc] = [*plan.done, *plan.parked, *(doc for doc, _ in plan.rejected)]
        if not done:
            return False
        positions = {d.ref: self._obligations.position_of(d.ref) for d in rejected}
        self._obligations.settle(Settlement(done=done))
        self.settled.set()
        for dead in rejected:
            self._dead_letter_doc(dead.ref, positions[dead.ref], dead.reason, dead.body)
        stats = self.stats
        stats.documents_unchanged += len(plan.done)
        stats.parked += len(plan.parked)
        stats.dead += len(rejected)
        stats.settled += len(done)
        if plan.parked:
            log.info(
                "%d orders wait for their customer, which is not known yet: they go out"
                " when it arrives",
                len(plan.parked),
            )
        return True

    def _settle_outcome(self, outcome: Outcome) -> None:
        """One answered request: merges and deletes leave the store in one transaction;
        an import becomes pending at once, and is settled in pages next."""
        obligations = self._obligations
        positions = {d.ref: obligations.position_of(d.ref) for d in outcome.dead}
        obligations.settle(
            Settlement(done=outcome.done, accepted=outcome.accepted, deleted=outcome.deleted)
        )
        stats = self.stats
        for sent in outcome.imports:
            obligations.accept_import(
                sent.process_id, sent.staged, hold_commits=self._hold_imports, nbytes=sent.bytes
            )
            stats.documents_sent += sent.documents
            stats.bytes_sent += sent.bytes
            stats.settled += sent.documents
        self.settled.set()
        for dead in outcome.dead:
            self._dead_letter_doc(dead.ref, positions[dead.ref], dead.reason, dead.body)
        stats.flushes += 1
        stats.requests.update(outcome.requests)
        stats.documents_sent += len(outcome.accepted)
        stats.dead += len(outcome.dead)
        stats.settled += len(outcome.done)
        if outcome.accepted or outcome.deleted or outcome.imports:
            stats.last_accepted_at = self._clock()
            self._observe_freshness(outcome)
        if outcome.imports:
            self._settler.settle_soon()
        if any(sent.process_id is not None for sent in outcome.imports):
            self._imports_accepted()

    def _observe_freshness(self, outcome: Outcome) -> None:
        """What a merge or a delete made Rfmcube hold, by call, with the source time
        of its oldest change (an import's documents: as they are settled)."""
        if outcome.deleted:
            sources = [self._delete_sources.get(ref) for ref in outcome.deleted]
            self._fresh("delete_customer", [ms for ms in sources if ms is not None])
        if outcome.imports:
            return
        call = next(iter(outcome.requests), None)
        accepted = [
            d.source_ms
            for d in outcome.done
            if d.source_ms is not None and d.ref in outcome.accepted
        ]
        if call is not None and call != "delete_customer" and accepted:
            self._fresh(call, accepted)

    async def settle_imports(self) -> None:
        """Settle every accepted import's staged rows, a page at a time."""
        await self._settler.settle_all()


def _directory(obligations: Obligations) -> Path | None:
    """Where an import's spool goes: beside the store, on its volume."""
    path = obligations.store.path
    return None if path is None else path.parent


async def _first(event: asyncio.Event | None, stopping: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` (if any) or ``stopping``, at most ``timeout`` seconds."""
    waiters = [asyncio.ensure_future(stopping.wait())]
    if event is not None:
        waiters.append(asyncio.ensure_future(event.wait()))
    try:
        await asyncio.wait(waiters, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)
