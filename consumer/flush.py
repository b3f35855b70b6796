"""Flush: owed documents → plan → requests → settlement.

The pace is the rate limit: while no request slot is free, changes keep
joining what is owed, so the next flush carries more of them in the same
number of requests; ``min_window`` keeps a burst together. One flush at a
time: two in flight could deliver versions of one document out of order.

A flush takes the documents owed longest (up to ``max_documents``), plans
them (:mod:`consumer.planner`), sends them (:mod:`consumer.sender`) and
settles the outcome in the store in one transaction
(:meth:`Obligations.settle`). What it does not settle stays owed: a crash
anywhere in between sends it again, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from consumer.errors import NotActive
from consumer.obligations import AcceptedImport, Obligations, Settlement
from consumer.planner import Planner
from consumer.ratelimit import RateLimiter
from consumer.sender import DeadDoc, Sender
from schemas.debezium import Position
from schemas.entities import DocRef

__all__ = ["FlushStats", "Flusher"]

log = logging.getLogger(__name__)

DeadLetterDoc = Callable[[DocRef, Position | None, str, bytes], None]


@dataclass(slots=True)
class FlushStats:
    flushes: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    documents_sent: int = 0
    documents_unchanged: int = 0
    parked: int = 0
    dead: int = 0
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
        hold_imports: bool,
        dead_letter_doc: DeadLetterDoc,
        hurry_imports: Callable[[set[str]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._obligations = obligations
        self._planner = planner
        self._sender = sender
        self._limiter = limiter
        self._min_window = min_window
        self._max_documents = max_documents
        self._hold_imports = hold_imports
        self._dead_letter_doc = dead_letter_doc
        self._hurry_imports = hurry_imports
        self._clock = clock
        self._lock = asyncio.Lock()
        self.dirty = asyncio.Event()
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
        obligations = self._obligations
        owed = obligations.take(self._max_documents)
        if not owed:
            return False
        plan = self._planner.plan(owed, self._clock())
        self._hurry_imports(plan.hurry)
        try:
            outcome = await self._sender.send(
                plan, in_pending_import=lambda refs: bool(obligations.imports_carrying(refs))
            )
        except NotActive:
            log.warning("no longer the active instance: the flush is dropped, nothing settled")
            return False
        settlement = Settlement(
            done=[*plan.done, *plan.parked, *outcome.done, *(doc for doc, _ in plan.rejected)],
            accepted=outcome.accepted,
            deleted=outcome.deleted,
            imports=[
                AcceptedImport(sent.process_id, sent.docs, self._hold_imports)
                for sent in outcome.imports
                if sent.process_id is not None
            ],
        )
        dead = [*outcome.dead, *(DeadDoc(d.ref, d, reason, b"") for d, reason in plan.rejected)]
        positions = {d.ref: obligations.position_of(d.ref) for d in dead}
        obligations.settle(settlement)
        for doc in dead:
            self._dead_letter_doc(doc.ref, positions[doc.ref], doc.reason, doc.body)
        stats = self.stats
        stats.flushes += 1
        stats.requests.update(outcome.requests)
        stats.documents_sent += len(outcome.accepted)
        stats.documents_unchanged += len(plan.done)
        stats.parked += len(plan.parked)
        stats.dead += len(dead)
        if outcome.accepted or outcome.deleted:
            stats.last_accepted_at = self._clock()
        if plan.parked:
            log.info(
                "%d orders wait for their customer, which is not known yet: they go out"
                " when it arrives",
                len(plan.parked),
            )
        return bool(settlement.done or outcome.requests)


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
