"""The sliding window on a fake clock: exact Retry-After values without waiting."""

from __future__ import annotations

from emulator.limits import SlidingWindow


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_counts_until_the_oldest_admitted_request_leaves_the_window() -> None:
    clock = FakeClock()
    window = SlidingWindow(limit=2, window=60, clock=clock)
    assert window.admit("k") is None
    clock.now += 10.2
    assert window.admit("k") is None
    clock.now += 5
    assert window.admit("k") == 45  # 60 - 15.2 = 44.8, rounded up
    clock.now += 44.7
    assert window.admit("k") == 1  # never 0: 0.1 s left still means "wait"
    clock.now += 0.1
    assert window.admit("k") is None
    assert window.admit("k") == 11  # now the request taken at +10.2 is the oldest


def test_keys_have_separate_windows() -> None:
    window = SlidingWindow(limit=1, window=60, clock=FakeClock())
    assert window.admit("a") is None
    assert window.admit("b") is None
    assert window.admit("a") == 60


def test_clear_frees_every_slot() -> None:
    window = SlidingWindow(limit=1, window=60, clock=FakeClock())
    window.admit("a")
    window.clear()
    assert window.admit("a") is None
