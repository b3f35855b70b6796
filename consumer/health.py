"""``/healthz``, ``/readyz`` and ``/metrics`` on a small aiohttp server.

Liveness says the loops are running; readiness says the store was restored
and the consumer is polling; metrics are Prometheus text, written by hand
(a few counters do not justify a client library).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

Metrics = Callable[[], Mapping[str, float | Mapping[str, float]]]


def _prometheus(metrics: Mapping[str, float | Mapping[str, float]]) -> str:
    lines: list[str] = []
    for name, value in sorted(metrics.items()):
        metric = f"rfmcube_cdc_{name}"
        if isinstance(value, Mapping):
            for label, number in sorted(value.items()):
                lines.append(f'{metric}{{kind="{label}"}} {number}')
        else:
            lines.append(f"{metric} {value}")
    return "\n".join(lines) + "\n"


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        metrics: Metrics,
    ) -> None:
        self._host, self._port = host, port
        self._alive, self._ready, self._metrics = alive, ready, metrics
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
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
        return web.Response(text=_prometheus(self._metrics()), content_type="text/plain")
