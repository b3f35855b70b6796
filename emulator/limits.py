"""The per-key sliding window behind 429: at most N admitted requests in any window."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class SlidingWindow:
    """Admits a request when fewer than ``limit`` were admitted in the last ``window`` seconds.

    Refused requests take no slot, so a client that waits as told gets through.
    """

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._admitted: dict[str, deque[float]] = {}

    def admit(self, key: str) -> int | None:
        """Takes a slot for ``key``: None when admitted, else the whole seconds to wait (>= 1)."""
        now = self._clock()
        times = self._admitted.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.limit:
            times.append(now)
            return None
        # The slot of the oldest admitted request frees when it leaves the window.
        frees_in = times[len(times) - self.limit] + self.window - now
        return max(1, math.ceil(frees_in))

    def clear(self) -> None:
        self._admitted.clear()
