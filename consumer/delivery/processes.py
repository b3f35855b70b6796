"""Checking accepted imports: every process is polled until it completed or failed.

Imports are asynchronous on Rfmcube's side: an accepted ``/import`` returns a
processId, and its documents are applied (or not) later. Every accepted
import is kept in the store (:mod:`consumer.state.obligations`) until a check sees
its process completed; a failed one, one the API no longer knows (404) or one
in a state the documentation does not name, puts its documents back as owed,
so they are sent again. No check is ever dropped, whatever the load and
however long ago the import was accepted.

Checks take request slots like everything else, in a task of their own (they
never hold up a send), and within a share of the budget while sends compete
for it: ``share`` of the window's requests (half, by default), more when
slots are spare. Sending every import costs one check at least, so under
sustained load the share makes imports fewer and larger rather than leaving
checks behind. A delete that waits for an import makes that import's check
due at once (:meth:`Obligations.hurry`).

An import of 200 MB carries half a million documents: dropping them when it
completed, or owing them again when it failed, goes a page at a time
(:mod:`consumer.state.pending`), with a turn of the event loop between pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable

from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.sender import Transport
from consumer.errors import ApiRejected, NotActive
from consumer.state.obligations import Obligations, PendingImport

__all__ = ["ProcessChecker"]

log = logging.getLogger(__name__)

RUNNING = frozenset({"pending", "running"})
PAGE = 20_000  # documents of an ended import dropped or owed again per transaction
# A check due this long after the next slot frees still takes that slot: an
# import's first check falls due just after the slot that follows the import.
CHECK_LEAD_SECONDS = 0.25


class ProcessChecker:
    def __init__(
        self,
        obligations: Obligations,
        client: Transport,
        limiter: RateLimiter,
        *,
        on_failed: Callable[[], None],
        on_completed: Callable[[list[int]], None] = lambda source_ms: None,
        first_check: float = 1.0,
        longest_interval: float = 60.0,
        share: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._obligations = obligations
        self._client = client
        self._limiter = limiter
        self._on_failed = on_failed
        # The source times of a completed import's documents (freshness, ``completed``).
        self._on_completed = on_completed
        self._first_check = first_check
        self._longest = longest_interval
        self._share = share
        self._clock = clock
        self._checked_at: deque[float] = deque()  # monotonic times of recent checks
        self.wake = asyncio.Event()
        self.outcomes: Counter[str] = Counter()  # completed, failed, unknown, running
        self.checks = 0

    def hurry(self, process_ids: set[str]) -> None:
        if process_ids:
            self._obligations.hurry(process_ids)
            self.wake.set()

    def _within_share(self) -> bool:
        """Whether a check may take a slot now: within its share of the window's
        requests, or anyway when more than half the budget is free."""
        limiter = self._limiter
        now = time.monotonic()
        while self._checked_at and self._checked_at[0] + limiter.window < now:
            self._checked_at.popleft()
        allowed = max(1, math.floor(limiter.limit * self._share))
        return len(self._checked_at) < allowed or limiter.free_slots() > limiter.limit // 2

    def _horizon(self) -> float:
        """Checks due by then wait for the next free slot now: queued at the limiter
        before it frees, they take it ahead of a send that comes only when it frees
        (else a send took it, and the check the next one: imports two slots apart)."""
        return self._clock() + self._limiter.next_free_in() + CHECK_LEAD_SECONDS

    async def run(self, stopping: asyncio.Event, may_check: Callable[[], bool]) -> None:
        """Check due imports until ``stopping``; only while ``may_check()`` (active)."""
        while not stopping.is_set():
            due = self._obligations.due_imports(self._horizon(), 1)
            if not due or not self._within_share() or not may_check():
                await self._idle(stopping, bool(due))
                continue
            with contextlib.suppress(NotActive):  # lost the role meanwhile: nothing changed
                await self.check(due[0])

    async def _idle(self, stopping: asyncio.Event, waiting_for_share: bool) -> None:
        if waiting_for_share:
            wait = 0.5
        else:
            next_at = self._obligations.next_check_at()
            wait = 5.0 if next_at is None else min(5.0, max(0.05, next_at - self._horizon()))
        self.wake.clear()
        wake = asyncio.ensure_future(self.wake.wait())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({wake, stop}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (wake, stop):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(wake, stop, return_exceptions=True)

    async def check(self, pending: PendingImport) -> str:
        """Poll one process and settle what its state says; returns the outcome."""
        pid = pending.process_id
        self._checked_at.append(time.monotonic())
        self.checks += 1
        try:
            answer = await self._client.process(pid)
        except ApiRejected as exc:  # 404: Rfmcube does not know it (any more)
            return await self._failed(pid, f"unknown to the API ({exc.status})", "unknown")
        status = answer.get("status")
        if status == "completed":
            self._obligations.completed(pid)
            self.outcomes["completed"] += 1
            while True:
                sources: list[int] = []
                if not self._obligations.purge_page(PAGE, sources):
                    break
                if sources:
                    self._on_completed(sources)
                await asyncio.sleep(0)
            return "completed"
        if status == "failed":
            return await self._failed(pid, "failed", "failed")
        if status in RUNNING:
            next_in = min(self._longest, self._first_check * 2 ** min(pending.checks, 16))
            self._obligations.still_running(pid, next_in)
            self.outcomes["running"] += 1
            return "running"
        return await self._failed(
            pid, f"in a state the API does not document ({status!r:.40})", "unknown"
        )

    async def _failed(self, pid: str, why: str, outcome: str) -> str:
        # What it carried must all be known before it is owed again: the flush that
        # sent it is still settling it (a large import, a page at a time).
        while self._obligations.settling_import(pid):
            await asyncio.sleep(0.1)
        owed = 0
        while True:
            refs, gone = self._obligations.fail_page(pid, PAGE)
            owed += len(refs)
            if gone:
                break
            await asyncio.sleep(0)
        log.warning("import process %s %s: its %d documents will be sent again", pid, why, owed)
        self.outcomes[outcome] += 1
        self._on_failed()
        return outcome
