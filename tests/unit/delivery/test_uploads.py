"""An import's upload is not held up by the settling of the import before it.

A body goes out a slice per turn of the service's loop; a page of settling holds
the loop for a fraction of a second. Beside the settling of a 200 MB import, a
66 MB import took 5 s to upload (bench/README.md, issue 20), all of it before the
API could start reading it. Settling waits while a body is being written.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from consumer.delivery.http.body import Uploads
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
