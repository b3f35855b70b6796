"""``/healthz``, ``/readyz``, ``/metrics`` and ``/resync`` on a small aiohttp server.

Liveness says the process is not failing; readiness says the store was
restored and the consumer polls, as the active instance or as a standby;
metrics are Prometheus text from ``prometheus_client`` (consumer/ops/metrics.py).
The server starts before anything else, so a liveness probe never kills a
long start-up restore. ``POST /resync`` (from the same machine only) asks the
active instance for a resync; ``GET /resync`` reports it (consumer/cli/resync.py).

The server runs on a thread of its own, with its own event loop, so that the
probes' answers never wait for the service's loop, whatever it is doing (a
page of a 200 MB import being settled, a restore): ``/healthz`` and
``/readyz`` read flags. They still notice a service loop that stopped turning
altogether (a bug): the loop ticks a heartbeat every second, and ``/healthz``
answers 503 once it has been silent for ``LOOP_SILENT_SECONDS``. ``/metrics``
and ``/resync`` read the service's state, so they are answered by its loop,
in turn.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

LOOP_SILENT_SECONDS = 60.0  # the service's loop this long without a turn: not alive
_BEAT_SECONDS = 1.0
LOOPBACK = frozenset({"127.0.0.1", "::1"})

T = TypeVar("T")


class Control(Protocol):
    """What the service does on request: a resync (consumer/delivery/resync.py)."""

    def start_resync(self, since_ms: int | None) -> tuple[int, dict[str, Any]]: ...

    def resync_status(self) -> tuple[int, dict[str, Any]]: ...


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        metrics: CollectorRegistry,
        control: Control | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._alive, self._ready, self._metrics = alive, ready, metrics
        self._control = control
        self._runner: web.AppRunner | None = None
        self._service_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._beat = time.monotonic()
        self._beating: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Serve from a thread of its own; returns once it listens (or raises why not)."""
        self._service_loop = asyncio.get_running_loop()
        self._tick()
        started: asyncio.Future[None] = self._service_loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(started,), name="health", daemon=True
        )
        self._thread.start()
        await started

    async def stop(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        stopped = asyncio.run_coroutine_threadsafe(self._shut(), loop)
        await asyncio.wrap_future(stopped)
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)

    def _tick(self) -> None:
        """The service loop's heartbeat (runs on that loop)."""
        self._beat = time.monotonic()
        assert self._service_loop is not None
        self._beating = self._service_loop.call_later(_BEAT_SECONDS, self._tick)

    # -- the server's thread ------------------------------------------------------------

    def _serve(self, started: asyncio.Future[None]) -> None:
        service_loop = self._service_loop
        assert service_loop is not None
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # the port is taken, say: the service's start says so
            service_loop.call_soon_threadsafe(_settle, started, exc)
            loop.close()
            return
        service_loop.call_soon_threadsafe(_settle, started, None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _listen(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/resync", self._resync_status)
        app.router.add_post("/resync", self._resync_start)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def _shut(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _on_service_loop(self, work: Callable[[], T]) -> T:
        """``work()`` run by the service's loop (it reads the service's state)."""
        assert self._service_loop is not None

        async def call() -> T:
            return work()

        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(call(), self._service_loop)
        )

    # -- the answers ----------------------------------------------------------------------

    async def _healthz(self, _: web.Request) -> web.Response:
        silent = time.monotonic() - self._beat
        if silent > LOOP_SILENT_SECONDS:
            return web.Response(
                status=503, text=f"the service's event loop has not run for {silent:.0f} s\n"
            )
        ok = self._alive()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "stopped\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        ok = self._ready()
        return web.Response(status=200 if ok else 503, text="ready\n" if ok else "not ready\n")

    async def _metrics_page(self, _: web.Request) -> web.Response:
        body = await self._on_service_loop(lambda: generate_latest(self._metrics))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _resync_status(self, _: web.Request) -> web.Response:
        control = self._control
        if control is None:
            return web.json_response({"message": "not streaming yet"}, status=503)
        status, body = await self._on_service_loop(control.resync_status)
        return web.json_response(body, status=status)

    async def _resync_start(self, request: web.Request) -> web.Response:
        # Asking costs the key's budget: only from the same machine (kubectl exec).
        if request.remote not in LOOPBACK:
            return web.json_response(
                {"message": "resync requests are taken from this machine only"}, status=403
            )
        control = self._control
        if control is None:
            return web.json_response({"message": "not streaming yet: try again"}, status=503)
        try:
            payload = await request.json()
            since = payload.get("since_ms") if isinstance(payload, dict) else None
            if since is not None and not isinstance(since, int):
                raise ValueError(since)
        except ValueError:
            return web.json_response({"message": 'expected {"since_ms": int|null}'}, status=400)
        status, body = await self._on_service_loop(lambda: control.start_resync(since))
        return web.json_response(body, status=status)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
