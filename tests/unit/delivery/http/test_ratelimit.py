"""The rate limiter: never more than ``limit`` sends in a window, fair, paused by a 429.

Driven by a virtual clock: ``sleep`` parks the caller until the test advances
time, so minutes of waiting run in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.delivery.http.ratelimit import RateLimiter


class VirtualTime:
    """A clock and a sleep; :meth:`run` advances time only when every task is parked."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), wake))
        await wake

    async def _settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def run(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        await self._settle()
        while not all(task.done() for task in tasks):
            assert self._sleepers, "tasks blocked with nobody sleeping: a lost wake-up"
            wake_at, _, wake = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake_at)
            if not wake.done():
                wake.set_result(None)
            await self._settle()


def max_in_any_window(times: Sequence[float], window: float) -> int:
    """The most acquisitions that any half-open window ``[t, t + window)`` holds."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def eighths(low: int, high: int) -> st.SearchStrategy[float]:
    """Times in eighths of a second: exact in binary, so the window edges are exact too."""
    return st.integers(min_value=low, max_value=high).map(lambda n: n / 8)


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=6),
    window=eighths(4, 480),
    steps=st.lists(eighths(0, 240), max_size=80),
)
def test_try_acquire_never_exceeds_limit_in_any_window_and_refuses_only_when_full(
    limit: int, window: float, steps: list[float]
) -> None:
    now = 0.0
    limiter = RateLimiter(limit, window, clock=lambda: now, margin=0.0)
    taken: list[float] = []
    for step in steps:
        now += step
        if limiter.try_acquire():
            taken.append(now)
        else:
            # Refused only because the last window really holds `limit` sends.
            assert sum(1 for t in taken if t > now - window) == limit
    assert max_in_any_window(taken, window) <= limit


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=5),
    window=eighths(8, 480),
    margin=st.sampled_from([0.0, 0.25]),
    arrivals=st.lists(eighths(0, 960), min_size=1, max_size=25),
)
def test_acquire_is_fifo_as_early_as_the_budget_allows_and_never_over_limit(
    limit: int, window: float, margin: float, arrivals: list[float]
) -> None:
    async def scenario() -> list[tuple[int, float]]:
        vt = VirtualTime()
        limiter = RateLimiter(limit, window, clock=vt.clock, sleep=vt.sleep, margin=margin)
        acquired: list[tuple[int, float]] = []

        async def caller(index: int, arrival: float) -> None:
            await vt.sleep(arrival)
            await limiter.acquire()
            acquired.append((index, vt.now))

        tasks = [asyncio.create_task(caller(i, a)) for i, a in enumerate(arrivals)]
        await vt.run(tasks)
        return acquired

    acquired = asyncio.run(scenario())
    times = [t for _, t in acquired]
    assert max_in_any_window(times, window) <= limit

    # Served in arrival order (ties in the order they queued) ...
    by_arrival = sorted(range(len(arrivals)), key=lambda i: (arrivals[i], i))
    assert [i for i, _ in acquired] == by_arrival
    # ... and each at the earliest moment the budget allows.
    hold = window + margin
    expected: list[float] = []
    for k, i in enumerate(by_arrival):
        t = arrivals[i]
        if expected:
            t = max(t, expected[-1])
        if k >= limit:
            t = max(t, expected[k - limit] + hold)
        expected.append(t)
    assert times == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(
    # Limits that divide a window of eighths exactly: no rounding at the window's edges.
    limit=st.sampled_from([1, 2, 4, 8]),
    window=eighths(8, 480),
    arrivals=st.lists(eighths(0, 960), min_size=1, max_size=25),
)
def test_spacing_spreads_requests_over_the_window_as_early_as_it_allows(
    limit: int, window: float, arrivals: list[float]
) -> None:
    spacing = window / limit  # what the service sets

    async def scenario() -> list[float]:
        vt = VirtualTime()
        limiter = RateLimiter(
            limit, window, clock=vt.clock, sleep=vt.sleep, margin=0.0, spacing=spacing
        )
        acquired: list[float] = []

        async def caller(arrival: float) -> None:
            await vt.sleep(arrival)
            await limiter.acquire()
            acquired.append(vt.now)

        tasks = [asyncio.create_task(caller(a)) for a in arrivals]
        await vt.run(tasks)
        return acquired

    times = asyncio.run(scenario())
    assert max_in_any_window(times, window) <= limit
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= spacing - 1e-9 for gap in gaps)
    expected: list[float] = []
    for arrival in sorted(arrivals):
        t = arrival if not expected else max(arrival, expected[-1] + spacing)
        expected.append(t)
    assert times == pytest.approx(expected)


def test_a_burst_without_spacing_leaves_the_rest_of_the_window_silent() -> None:
    """What spacing is for: 60 a minute taken as they come would all go in the
    first seconds; spaced, the last of them leaves a gap of one second, not 59."""

    def gaps(spacing: float) -> float:
        now = 0.0
        limiter = RateLimiter(60, 60.0, clock=lambda: now, margin=0.0, spacing=spacing)
        taken = []
        while len(taken) < 61:
            wait = limiter.next_free_in()
            now += wait
            assert limiter.try_acquire()
            taken.append(now)
        return max(b - a for a, b in itertools.pairwise(taken))

    assert gaps(0.0) == pytest.approx(60.0)
    assert gaps(1.0) == pytest.approx(1.0)


async def test_a_429_pauses_every_sender_until_retry_after() -> None:
    vt = VirtualTime()
    limiter = RateLimiter(3, 60.0, clock=vt.clock, sleep=vt.sleep, margin=0.0)
    assert limiter.try_acquire() and limiter.try_acquire()
    vt.now = 59.0
    limiter.pause_until(5.0)
    assert limiter.free_slots() == 0
    assert not limiter.try_acquire()
    # Our two sends age out at 60 s, but the server asked for 5 s from 59 s.
    assert limiter.next_free_in() == pytest.approx(5.0)

    sent: list[float] = []

    async def sender() -> None:
        await limiter.acquire()
        sent.append(vt.now)

    tasks = [asyncio.create_task(sender()) for _ in range(3)]
    await vt.run(tasks)
    # The window counts as full after the 429: only the two slots of our own
    # sends are free after the pause; the third waits a whole window.
    assert sent == pytest.approx([64.0, 64.0, 119.0])


async def test_without_earlier_sends_a_429_holds_everyone_for_the_whole_window() -> None:
    vt = VirtualTime()
    limiter = RateLimiter(3, 10.0, clock=vt.clock, sleep=vt.sleep, margin=0.0)
    limiter.pause_until(2.0)
    assert limiter.next_free_in() == pytest.approx(10.0)
    vt.now = 10.0
    assert limiter.free_slots() == 3


def test_a_later_pause_never_shortens_an_earlier_one() -> None:
    now = 0.0
    limiter = RateLimiter(100, 1.0, clock=lambda: now, margin=0.0)
    limiter.pause_until(30.0)
    limiter.pause_until(2.0)
    now = 20.0
    assert limiter.next_free_in() == pytest.approx(10.0)
    now = 30.0
    assert limiter.try_acquire()


async def test_try_acquire_does_not_jump_the_queue() -> None:
    vt = VirtualTime()
    limiter = RateLimiter(1, 10.0, clock=vt.clock, sleep=vt.sleep, margin=0.0)
    assert limiter.try_acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert limiter.waiting == 1
    vt.now = 10.0  # a slot is free, but the waiter came first
    assert not limiter.try_acquire()
    await vt.run([waiter])
    assert limiter.waiting == 0


async def test_a_cancelled_waiter_does_not_block_those_behind_it() -> None:
    vt = VirtualTime()
    limiter = RateLimiter(1, 10.0, clock=vt.clock, sleep=vt.sleep, margin=0.0)
    assert limiter.try_acquire()
    head = asyncio.create_task(limiter.acquire())
    middle = asyncio.create_task(limiter.acquire())
    tail = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    head.cancel()
    middle.cancel()
    await vt.run([head, middle, tail])
    assert head.cancelled() and middle.cancelled()
    assert tail.done() and vt.now == pytest.approx(10.0)
    assert limiter.waiting == 0 and limiter.free_slots() == 0


async def test_margin_keeps_a_slot_taken_a_little_past_the_window() -> None:
    now = 0.0
    limiter = RateLimiter(1, 3.0, clock=lambda: now, margin=0.25)
    assert limiter.try_acquire()
    now = 3.1
    assert not limiter.try_acquire()
    assert limiter.next_free_in() == pytest.approx(0.15)
    now = 3.25
    assert limiter.try_acquire()


async def test_on_the_real_clock_acquire_waits_for_the_window() -> None:
    limiter = RateLimiter(2, 0.05, margin=0.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(4):
        await limiter.acquire()
    assert loop.time() - start >= 0.05


def test_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="limit"):
        RateLimiter(0)
