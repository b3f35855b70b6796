"""One deadline for every step of a stop, and a watchdog past it.

When the service is asked to stop (or a task fails), the flush gets the grace
(``service.shutdown_grace_seconds``); the last commit, closing the consumer and
the dead-letter producer share a fixed margin after it; then the process
exits whatever still waits (a broker that stopped answering), so it always
ends within grace + margin of the signal. deploy/ sets the pod's
``terminationGracePeriodSeconds`` above that (tests/system/deploy checks it).
Exiting under a step loses nothing: the store is crash-safe, and what was not
committed is read again at the next start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

__all__ = ["SHUTDOWN_MARGIN_SECONDS", "Shutdown"]

log = logging.getLogger("consumer.app.service")

SHUTDOWN_MARGIN_SECONDS = 4.0


class Shutdown:
    def __init__(self, grace: float, *, exit_code: Callable[[], int]) -> None:
        self._grace = grace
        self._exit_code = exit_code  # what the process exits with if it is cut short
        self.grace_ends: float | None = None  # time.monotonic(): the flush stops
        self.hard_stop: float | None = None  # time.monotonic(): the process ends
        self._watchdog: threading.Timer | None = None

    @property
    def begun(self) -> bool:
        return self.hard_stop is not None

    def begin(self) -> None:
        """Start the clock (once) and the watchdog."""
        if self.begun:
            return
        self.grace_ends = time.monotonic() + self._grace
        self.hard_stop = self.grace_ends + SHUTDOWN_MARGIN_SECONDS
        watchdog = self._watchdog = threading.Timer(
            self._grace + SHUTDOWN_MARGIN_SECONDS, self._cut_short
        )
        watchdog.daemon = True
        watchdog.start()

    def done(self) -> None:
        """Every step ended in time: the watchdog has nothing left to cut."""
        if self._watchdog is not None:
            self._watchdog.cancel()

    def left(self, until: float | None, least: float) -> float:
        """Seconds left until ``until`` (``grace_ends`` or ``hard_stop``), ``least`` at least."""
        return least if until is None else max(least, until - time.monotonic())

    def _cut_short(self) -> None:
        log.warning(
            "stopping took longer than the grace plus %.0f s: exiting now; what was not"
            " committed is read again at the next start",
            SHUTDOWN_MARGIN_SECONDS,
        )
        logging.shutdown()
        os._exit(self._exit_code())
