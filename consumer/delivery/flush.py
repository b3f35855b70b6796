"""Flush: owed documents → plan → requests → settlement.

The pace is the rate limit: while no request slot is free, changes keep
joining what is owed, so the next flush carries more of them in the same
number of requests; ``min_window`` keeps a burst together. One flush at a
time: two in flight could deliver versions of one document out of order.

A flush takes the documents owed longest, page by page (up to
``max_documents``), plans each page (:mod:`consumer.delivery.planner`) and sends it
(:mod:`consumer.delivery.sender`): imports are packed near ``max_request_bytes``
across pages, so a backlog of a million documents (a resync, a long outage)
goes out in as few requests as its bytes need, with a page of documents in
memory at a time. Every answered request is settled in the store at once, in
one transaction (:meth:`Obligations.settle`). What is not settled stays owed:
a crash anywhere sends it again, never loses it, and never sends again what
was accepted.

Each document and delete the API accepts is reported to ``fresh`` with the
source time of the oldest change it carried (``rfmcube_cdc_freshness_seconds``),
by call; with ``completed`` acceptance, an import's documents are reported when
its process completed (:mod:`consumer.delivery.processes`), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.planner import Plan, Planner
from consumer.delivery.sender import DeadDoc, Outcome, Sender
from consumer.errors import NotActive
from consumer.state.obligations import AcceptedImport, Obligations, Settlement
from schemas.debezium import Position
from schemas.entities import DocRef, Kind

__all__ = ["FlushStats", "Flusher"]

log = logging.getLogger(__name__)

DeadLetterDoc = Callable[[DocRef, Position | None, str, bytes], None]
# Documents accepted through a call, by the source time (ms) of their oldest change.
Fresh = Callable[[str, list[int]], None]


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
        self._lock = asyncio.Lock()
        self.dirty = asyncio.Event()
        self.settled = asyncio.Event()  # obligations were met: commits may be due
        self.stats = FlushStats()

    async def run(self, stopping: asyncio.Event, may_send: Callable[[], bool]) -> None:
        """Flush whenever something is owed, the window is old enough and a slot is free."""
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
            self.dirty.clear()
            if not await self.flush_once():
                # Only documents that must wait (an order for its customer, a delete
                # for an import): look again on news, or in a while.
                await _first(self.dirty, stopping, timeout=max(self._min_window, 1.0))

    async def flush_once(self) -> bool:
        """One flush; False when nothing could go out or be settled."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> bool:
        """Owed documents in pages of ``chunk`` (the longest owed first), planned page
        by page and sent through one :class:`Dispatch`: imports packed across pages.
        Each answered request, and each page's documents that need none, are settled
        at once. Returns whether anything was sent or settled."""
        obligations = self._obligations
        dispatch = self._sender.dispatch(self._settle_outcome)
        progressed = False
        after: tuple[float, int] | None = None
        until = obligations.last_seq()  # what changes meanwhile is the next flush's
        taken = 0
        self._delete_sources = {}
        try:
            while taken < self._max_documents:
                owed = obligations.take(self._chunk, after, until)
                if not owed:
                    break
                self._delete_sources.update(
                    (d.ref, d.source_ms) for d in owed if d.deletes and d.source_ms is not None
                )
                after = (owed[-1].since, owed[-1].seq)
                taken += len(owed)
                plan = self._planner.plan(owed, self._clock())
                self._hurry_imports(plan.hurry)
                await dispatch.add(
                    plan,
                    # A merge only when this page is all that is owed.
                    merge=taken == len(owed) and len(owed) < self._chunk,
                    in_pending_import=lambda refs: bool(obligations.imports_carrying(refs)),
                )
                progressed |= self._settle_plan(plan)
                progressed |= bool(plan.deletes or plan.groups)
                # Planning and packing never wait: without this, a backlog of a
                # million documents holds the event loop for minutes (health probes,
                # resync progress, process checks) until an import goes out.
                await asyncio.sleep(0)
            await dispatch.finish()
        except NotActive:
            log.warning("no longer the active instance: what this flush did not send stays owed")
        return progressed

    def _settle_plan(self, plan: Plan) -> bool:
        """What a page needs no request for: unchanged, parked, rejected documents."""
        rejected = [DeadDoc(d.ref, d, reason, b"") for d, reason in plan.rejected]
        done = [*plan.done, *plan.parked, *(doc for doc, _ in plan.rejected)]
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
        """One answered request: what it delivered leaves the store, in one transaction."""
        obligations = self._obligations
        positions = {d.ref: obligations.position_of(d.ref) for d in outcome.dead}
        obligations.settle(
            Settlement(
                done=outcome.done,
                accepted=outcome.accepted,
                deleted=outcome.deleted,
                imports=[
                    AcceptedImport(
                        sent.process_id,
                        sent.docs,
                        self._hold_imports,
                        {
                            d.ref: d.source_ms
                            for d in outcome.done
                            if d.source_ms is not None and d.ref in sent.docs
                        },
                    )
                    for sent in outcome.imports
                    if sent.process_id is not None
                ],
            )
        )
        self.settled.set()
        for dead in outcome.dead:
            self._dead_letter_doc(dead.ref, positions[dead.ref], dead.reason, dead.body)
        stats = self.stats
        stats.flushes += 1
        stats.requests.update(outcome.requests)
        stats.documents_sent += sum(1 for ref in outcome.accepted if ref[0] is not Kind.GUEST)
        stats.dead += len(outcome.dead)
        stats.settled += len(outcome.done)
        stats.bytes_sent += outcome.bytes
        if outcome.accepted or outcome.deleted:
            stats.last_accepted_at = self._clock()
            self._observe_freshness(outcome)
        if outcome.imports:
            self._imports_accepted()

    def _observe_freshness(self, outcome: Outcome) -> None:
        """What the API accepted, by call, with the source time of its oldest change."""
        if outcome.deleted:
            sources = [self._delete_sources.get(ref) for ref in outcome.deleted]
            self._fresh("delete_customer", [ms for ms in sources if ms is not None])
        if outcome.imports and self._hold_imports:
            return  # accepted when its process completes
        call = "import" if outcome.imports else next(iter(outcome.requests), None)
        accepted = [
            d.source_ms
            for d in outcome.done
            if d.source_ms is not None and d.ref in outcome.accepted
        ]
        if call is not None and call != "delete_customer" and accepted:
            self._fresh(call, accepted)


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
