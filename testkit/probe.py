"""A liveness probe from outside: ``/healthz`` asked on a thread of its own, as
Kubernetes would with a one-second timeout (more often, so that a stall shows):
the slowest answer, when the slow ones came, and the failures. For the tests
and the benches of large runs (issue 20: a service answers within a second).
"""

from __future__ import annotations

import threading
import time
import urllib.request

__all__ = ["HealthProbe"]


class HealthProbe:
    """GET /healthz every ``every`` seconds: the slowest answer, and the slow ones."""

    def __init__(self, port: int, every: float = 0.2) -> None:
        self._url = f"http://127.0.0.1:{port}/healthz"
        self._every = every
        self._stop = threading.Event()
        self.slowest = 0.0
        self.answers = 0
        self.slow: list[tuple[float, float]] = []  # (wall clock, seconds) of answers > 0.5 s
        self.failures = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        answered = False  # failures count once the server answered (a service starting)
        while not self._stop.wait(self._every):
            started = time.monotonic()
            try:
                with opener.open(self._url, timeout=60) as answer:
                    answer.read()
                    ok = answer.status == 200
            except OSError:
                ok = False
            if not ok and not answered:
                continue
            answered = True
            if not ok:
                self.failures += 1
            took = time.monotonic() - started
            self.answers += 1
            self.slowest = max(self.slowest, took)
            if took > 0.5:
                self.slow.append((time.time() - took, took))
