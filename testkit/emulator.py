"""Run the emulator as a subprocess from synchronous code (tests, the demo, benchmarks).

    with EmulatorProcess(api_key="k", requests_per_minute=600) as emulator:
        ...  # talk to emulator.url (ends in /v1) with header api-key: k
        assert emulator.state()["customers"] == [...]

Standard library only. The emulator binds a free loopback port itself
(``--port 0``) and reports it, so parallel runs never race for a port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any

_LISTENING = "emulator listening on "
_API_KEY_VARIABLE = "RFMCUBE_EMULATOR_API_KEY"
# Loopback only: never send these calls through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmulatorProcess:
    """A ``python -m emulator`` subprocess; a context manager that starts and stops it."""

    def __init__(
        self,
        *,
        api_key: str = "test-api-key",
        requests_per_minute: int = 60,
        window_seconds: float = 60.0,
        max_request_bytes: int = 200_000_000,
        fail_rate: float = 0.0,
        latency_ms: int = 0,
        wrong_platform: bool = False,
        process_delay_ms: int = 200,
        process_fail_rate: float = 0.0,
        seed: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 15.0,
    ) -> None:
        self.api_key = api_key
        self._host = host
        self._startup_timeout = startup_timeout
        self._options = [
            f"--requests-per-minute={requests_per_minute}",
            f"--window-seconds={window_seconds}",
            f"--max-request-bytes={max_request_bytes}",
            f"--fail-rate={fail_rate}",
            f"--latency-ms={latency_ms}",
            f"--process-delay-ms={process_delay_ms}",
            f"--process-fail-rate={process_fail_rate}",
        ]
        if wrong_platform:
            self._options.append("--wrong-platform")
        if seed is not None:
            self._options.append(f"--seed={seed}")
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._base: str | None = None

    def __repr__(self) -> str:
        return f"EmulatorProcess(base={self._base!r})"

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> EmulatorProcess:
        """Starts the subprocess and waits until ``/_emulator/health`` answers."""
        if self._process is not None:
            raise RuntimeError("the emulator is already started")
        # A file, not a pipe: nobody reads the output, and a full pipe would block the server.
        # It lives as long as the subprocess; stop() closes (and so deletes) it.
        self._output = tempfile.NamedTemporaryFile(prefix="emulator-", suffix=".log")  # noqa: SIM115
        env = {**os.environ, _API_KEY_VARIABLE: self.api_key}
        command = [sys.executable, "-m", "emulator", f"--host={self._host}", "--port=0"]
        self._process = subprocess.Popen(
            [*command, *self._options],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            self._base = self._wait_for_address()
            self._wait_for_health()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops the subprocess (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------

    @property
    def base(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:40123`` (no trailing slash)."""
        if self._base is None:
            raise RuntimeError("the emulator is not started")
        return self._base

    @property
    def pid(self) -> int:
        """The subprocess's id (benchmarks read its memory and CPU in /proc)."""
        if self._process is None:
            raise RuntimeError("the emulator is not started")
        return self._process.pid

    @property
    def url(self) -> str:
        """The API's base URL, ending in ``/v1`` (as ``https://api.rfmcube.com/v1``)."""
        return f"{self.base}/v1"

    # -- test-only endpoints ----------------------------------------------------

    def state(self) -> dict[str, Any]:
        """``GET /_emulator/state``: every customer with its orders, numbers as exact Decimals."""
        result: dict[str, Any] = self._call("GET", "/_emulator/state")
        return result

    def requests(self) -> list[dict[str, Any]]:
        """``GET /_emulator/requests``: one entry per ``/v1`` request, oldest first."""
        answer = self._call("GET", "/_emulator/requests", exact=False)
        entries: list[dict[str, Any]] = answer["requests"]
        return entries

    def reset(self, **changes: Any) -> None:
        """Clears state, log and rate window; restores the start-up settings, then applies
        ``changes`` (fail_rate, latency_ms, wrong_platform, requests_per_minute, ...)."""
        self._call("POST", "/_emulator/reset", changes)

    def change(self, **changes: Any) -> None:
        """Changes settings (``outage=True``, ``fail_rate``...) keeping state and log."""
        self._call("POST", "/_emulator/settings", changes)

    def log_text(self) -> str:
        """What the subprocess printed so far (for a failing test's message)."""
        if self._output is None:
            return ""
        return Path(self._output.name).read_text(errors="replace")

    # -- internals ------------------------------------------------------------

    def _call(self, method: str, path: str, payload: Any = None, *, exact: bool = True) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        with _OPENER.open(request, timeout=30) as response:
            return json.loads(response.read(), parse_float=Decimal if exact else float)

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            for line in self.log_text().splitlines():
                if line.startswith(_LISTENING):
                    return line[len(_LISTENING) :].strip()
            self._check_alive()
            time.sleep(0.02)
        raise RuntimeError(f"the emulator did not start in time:\n{self.log_text()}")

    def _wait_for_health(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            try:
                self._call("GET", "/_emulator/health")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                self._check_alive()
                time.sleep(0.02)

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"the emulator exited at start-up:\n{self.log_text()}")
