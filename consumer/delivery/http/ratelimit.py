"""The one request budget of the service: at most ``limit`` requests in any sliding window.

Every request the service makes (sends and process polls alike) first takes a slot
here. A slot is the time a request was sent; it stays taken for ``window`` seconds
(plus a small ``margin``, because the server stamps a request when it *receives*
it, and network latency varies from one request to the next).

Waiters are served strictly first come, first served: the head of the queue sleeps
until a slot frees, takes it, then hands the head position to the next waiter.
There is no background task, so nothing is left running when callers go away.

``spacing`` (the service sets it to ``window / limit``: one second at 60 a
minute) keeps two requests at least that far apart, so the budget is spread over
the window. Without it a steady stream of small sends (imports and their process
checks, two requests a window) used the whole window's slots in its first half,
and then nothing could go out for the rest of the window: changes waited up to
35 s (bench/README.md, "A steady shop").

A 429 means the server counts more than we do (another replica on the same key,
a server window aligned differently from ours). :meth:`RateLimiter.pause_until`
then stops every sender until the server's Retry-After has passed *and* treats
the window as full: the record is topped up to ``limit`` slots stamped at the
moment of the 429, so after the pause the limiter releases only as many
requests as its own sends age out, never a full burst into a window the server
still considers used.

Pure asyncio: no sockets, and the clock (and the sleep) are injectable for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Never more than ``limit`` acquisitions in any ``window`` seconds, fair FIFO waiting."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        margin: float = 0.25,
        spacing: float = 0.0,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        if window <= 0 or margin < 0 or spacing < 0:
            raise ValueError("window must be positive, margin and spacing not negative")
        self.limit = limit
        self.window = window
        self.margin = margin
        self.spacing = spacing
        self._clock = clock
        self._sleep = sleep
        # Send times of the slots still taken, oldest first.
        self._taken: deque[float] = deque()
        self._last = float("-inf")  # when the latest slot was taken
        self._paused_until = float("-inf")
        # One future per waiter; the head's future is resolved when it may go.
        self._queue: deque[asyncio.Future[None]] = deque()
        self.waits = 0  # acquisitions that had to wait (for metrics)
        self.waited_seconds = 0.0

    # -- state -----------------------------------------------------------------

    def _expire(self, now: float) -> None:
        hold = self.window + self.margin
        while self._taken and self._taken[0] + hold <= now:
            self._taken.popleft()

    def free_slots(self) -> int:
        """Slots that could be taken right now (0 while paused after a 429)."""
        now = self._clock()
        if now < self._paused_until:
            return 0
        self._expire(now)
        return self.limit - len(self._taken)

    def next_free_in(self) -> float:
        """Seconds until a slot frees (0 if one is free now)."""
        now = self._clock()
        self._expire(now)
        wait = max(self._paused_until, self._last + self.spacing) - now
        if len(self._taken) >= self.limit:
            # The slot that frees first is the one that makes the count drop below limit.
            oldest_needed = self._taken[len(self._taken) - self.limit]
            wait = max(wait, oldest_needed + self.window + self.margin - now)
        return max(wait, 0.0)

    @property
    def waiting(self) -> int:
        """Callers queued in :meth:`acquire`."""
        return len(self._queue)

    # -- taking slots ------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take a slot if one is free now and nobody is queued ahead; never waits."""
        if self._queue or self.next_free_in() > 0:
            return False
        self._take()
        return True

    def _take(self) -> None:
        self._last = self._clock()
        self._taken.append(self._last)

    async def acquire(self) -> None:
        """Wait for a slot (in arrival order), then take it: the request may go now."""
        if self.try_acquire():
            return
        self.waits += 1
        started = self._clock()
        try:
            await self._wait_for_turn()
        finally:
            self.waited_seconds += self._clock() - started

    async def _wait_for_turn(self) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        try:
            if self._queue[0] is not turn:
                await turn  # resolved by the waiter ahead of us when it leaves
            while (wait := self.next_free_in()) > 0:
                await self._sleep(wait)
            self._take()
        finally:
            self._leave(turn)

    def _leave(self, turn: asyncio.Future[None]) -> None:
        if self._queue and self._queue[0] is turn:
            self._queue.popleft()
            if self._queue and not self._queue[0].done():
                self._queue[0].set_result(None)
        else:
            self._queue.remove(turn)  # cancelled while still behind others

    # -- knowing what others sent -----------------------------------------------------

    def seed(self, sent_ago: Iterable[float]) -> None:
        """Count requests sent before this limiter existed, ``sent_ago`` seconds ago
        each (a restarted instance's own, read back from its store)."""
        now = self._clock()
        stamps = sorted([*self._taken, *(now - ago for ago in sent_ago if ago >= 0)])
        self._taken = deque(stamps)
        self._expire(now)

    def fill(self) -> None:
        """Count the whole window as used, as of now: another instance may have sent
        that much, and only the window's passing proves it did not matter."""
        now = self._clock()
        self._expire(now)
        self._taken.extend([now] * (self.limit - len(self._taken)))

    # -- after a 429 ---------------------------------------------------------------

    def pause_until(self, seconds_from_now: float) -> None:
        """Nobody sends for ``seconds_from_now``; the server's window counts as full.

        A later pause never shortens an earlier one.
        """
        now = self._clock()
        self._paused_until = max(self._paused_until, now + max(seconds_from_now, 0.0))
        self._expire(now)
        # Stamped "now", after every recorded send, so the record stays in time order.
        self._taken.extend([now] * (self.limit - len(self._taken)))
