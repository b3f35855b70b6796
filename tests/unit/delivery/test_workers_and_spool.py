"""Documents built in worker processes, and imports spooled to a file, send exactly
what planning and packing in the service sends (issue 20).

A store on a file (workers read it from their own processes), the service's
flush and sender, a stand-in API that keeps every body it was sent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.delivery import sender as sender_module
from consumer.errors import ApiTooLarge
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from testkit.storeshop import build_store_shop, shop_flusher


class Api:
    """Accepts imports (refusing those above ``largest`` bytes with a 416)."""

    def __init__(self, largest: int | None = None) -> None:
        self.bodies: list[bytes] = []
        self.streamed = 0  # bodies that came as a stream (a spool), not bytes
        self._largest = largest

    async def send(self, call: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, bytes):
            self.streamed += 1
            body = body.read_all()
        if self._largest is not None and len(body) > self._largest:
            raise ApiTooLarge(f"{len(body)} bytes", status=416)
        self.bodies.append(body)
        return {"processId": len(self.bodies)}

    async def process(self, process_id: int | str) -> dict[str, Any]:
        return {"processId": process_id, "status": "completed"}

    def customers(self) -> list[dict[str, Any]]:
        return [c for body in self.bodies for c in orjson.loads(body)["customers"]]


async def _resync(
    path: Path, api: Api, *, workers: int, max_request_bytes: int = 200_000_000
) -> StateStore:
    store = StateStore(path)
    obligations = Obligations(store)
    obligations.owe_everything(since_ms=None, forget=True)
    flusher = shop_flusher(
        obligations,
        api,
        max_request_bytes=max_request_bytes,
        dead_letter_doc=lambda *_: pytest.fail("nothing is dead-lettered"),
        chunk=40,
        workers=workers,
        workers_from=0,
    )
    try:
        await flusher.flush_once()
    finally:
        flusher.close()
    assert obligations.owed_count() == 0
    return store


def _accepted(store: StateStore) -> set[tuple[str, str, str]]:
    return set(store.db.execute("SELECT kind, key, hash FROM accepted"))


async def test_documents_built_in_worker_processes_are_the_bytes_built_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="consumer.delivery.workers")
    for name in ("here", "workers"):
        build_store_shop(tmp_path / f"{name}.db", customers=120).close()
    here, workers = Api(), Api()
    store_here = await _resync(tmp_path / "here.db", here, workers=0)
    store_workers = await _resync(tmp_path / "workers.db", workers, workers=2)
    assert "building documents in 2 worker processes" in caplog.text
    assert len(here.customers()) > 3 * 40  # several pages: the workers planned most
    assert workers.bodies == here.bodies
    # The same hashes remembered: planned in a worker or here, the live stream agrees.
    assert _accepted(store_workers) == _accepted(store_here)


async def test_a_large_import_goes_from_its_spool_file_and_splits_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_store_shop(tmp_path / "memory.db", customers=120).close()
    build_store_shop(tmp_path / "spool.db", customers=120).close()
    in_memory = Api()
    await _resync(tmp_path / "memory.db", in_memory, workers=0)
    (whole,) = in_memory.bodies
    # Spooled from 2 kB on, and refused above a third of the whole (416): halves, from
    # the file.
    monkeypatch.setattr(sender_module, "IN_MEMORY_BYTES", 2_000)
    spooled = Api(largest=len(whole) // 3)
    await _resync(tmp_path / "spool.db", spooled, workers=0)
    assert spooled.streamed >= 1
    assert len(spooled.bodies) >= 4
    assert spooled.customers() == in_memory.customers()
