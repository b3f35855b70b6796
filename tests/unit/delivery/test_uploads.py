"""An import's upload is not held up by the settling of the import before it.

A body goes out a slice per turn of the service's loop; a page of settling holds
the loop for a fraction of a second. Beside the settling of a 200 MB import, a
66 MB import took 5 s to upload (bench/README.md, issue 20), all of it before the
API could start reading it. Settling waits while a body is being written, unless
the API reads none of it (busy with the import before): then settling would only
idle the service, and goes on.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from consumer.delivery.http.body import SlicedBody, Uploads
from consumer.state.obligations import Obligations
from testkit.storeshop import build_store_shop, shop_flusher


class UploadingApi:
    """Accepts every import; each body is "written" over many turns of the loop, and
    the settling pages the service ran meanwhile are counted."""

    def __init__(self, uploads: Uploads, settled_pages: list[int]) -> None:
        self.uploads = uploads
        self._pages = settled_pages
        self.imports = 0
        self.pages_during_uploads = 0

    async def send(self, call: str, body: Any) -> dict[str, Any]:
        with self.uploads.writing():
            before = len(self._pages)
            for _ in range(200):  # slices, each written on a turn of the loop
                await asyncio.sleep(0)
            self.pages_during_uploads += len(self._pages) - before
        self.imports += 1
        return {"processId": self.imports}

    async def process(self, process_id: int | str) -> dict[str, Any]:
        return {"processId": process_id, "status": "completed"}


@pytest.mark.parametrize("gated", [True, False])
async def test_settling_waits_while_the_next_import_is_uploaded(
    tmp_path: Path, gated: bool
) -> None:
    store = build_store_shop(tmp_path / "state.db", customers=120)
    obligations = Obligations(store)
    obligations.owe_everything(since_ms=None, forget=True)
    pages: list[int] = []
    settle_page = obligations.settle_page

    def counted(limit: int, sources: list[int] | None = None) -> int:
        done = settle_page(limit, sources)
        if done:
            pages.append(done)
        return done

    obligations.settle_page = counted  # type: ignore[method-assign]
    uploads = Uploads()
    api = UploadingApi(uploads, pages)
    flusher = shop_flusher(
        obligations,
        api,
        max_request_bytes=6_000,  # several imports, each settled in pages
        dead_letter_doc=lambda *_: pytest.fail("nothing is dead-lettered"),
        chunk=40,
        workers=0,
        settle_page=5,
        uploads_idle=uploads.idle if gated else None,
    )
    try:
        await flusher.flush_once()
    finally:
        flusher.close()
    assert api.imports >= 3 and len(pages) > 3 * api.imports  # settled in many pages
    assert obligations.owed_count() == 0
    if gated:
        assert api.pages_during_uploads == 0
    else:  # what the gate prevents: pages settled while a body was being written
        assert api.pages_during_uploads > 0
    store.close()


async def test_settling_goes_on_while_the_api_reads_nothing_of_the_body(tmp_path: Path) -> None:
    """Over real HTTP: an API busy with the import before (here, it waits before it
    reads the body) takes no slice of the next; settling may run meanwhile (it would
    only idle the service), and no sooner than the body stopped moving."""
    read: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(2.0)  # busy: applying the import before this one
        read.append(time.monotonic())
        await request.read()
        return web.json_response({"processId": 1})

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/import", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    uploads = Uploads()
    body = SlicedBody(b"x" * (48 << 20), uploads)  # more than the sockets' buffers hold
    try:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            upload = asyncio.ensure_future(
                session.post(f"http://127.0.0.1:{port}/import", data=body)
            )
            await asyncio.sleep(0.05)  # the body is being written
            await asyncio.wait_for(uploads.idle(), timeout=1.5)
            free = time.monotonic()
            assert not upload.done() and not read, "the body was still waiting on the API"
            assert free - started >= Uploads.STALLED_SECONDS
            async with await upload as answer:
                assert answer.status == 200
    finally:
        await runner.cleanup()
