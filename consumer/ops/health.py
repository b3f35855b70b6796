"""``/healthz``, ``/readyz``, ``/metrics`` and ``/resync`` on a small aiohttp server.

Liveness says the process is not failing; readiness says the store was
restored and the consumer polls, as the active instance or as a standby;
metrics are Prometheus text from ``prometheus_client`` (consumer/ops/metrics.py).
The server starts before anything else, so a liveness probe never kills a
long start-up restore. ``POST /resync`` (from the same machine only) asks the
active instance for a resync; ``GET /resync`` reports it (consumer/cli/resync.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

LOOPBACK = frozenset({"127.0.0.1", "::1"})


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

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/resync", self._resync_status)
        app.router.add_post("/resync", self._resync_start)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        ok = self._alive()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "stopped\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        ok = self._ready()
        return web.Response(status=200 if ok else 503, text="ready\n" if ok else "not ready\n")

    async def _metrics_page(self, _: web.Request) -> web.Response:
        body = generate_latest(self._metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _resync_status(self, _: web.Request) -> web.Response:
        if self._control is None:
            return web.json_response({"message": "not streaming yet"}, status=503)
        status, body = self._control.resync_status()
        return web.json_response(body, status=status)

    async def _resync_start(self, request: web.Request) -> web.Response:
        # Asking costs the key's budget: only from the same machine (kubectl exec).
        if request.remote not in LOOPBACK:
            return web.json_response(
                {"message": "resync requests are taken from this machine only"}, status=403
            )
        if self._control is None:
            return web.json_response({"message": "not streaming yet: try again"}, status=503)
        try:
            payload = await request.json()
            since = payload.get("since_ms") if isinstance(payload, dict) else None
            if since is not None and not isinstance(since, int):
                raise ValueError(since)
        except ValueError:
            return web.json_response({"message": 'expected {"since_ms": int|null}'}, status=400)
        status, body = self._control.start_resync(since)
        return web.json_response(body, status=status)
