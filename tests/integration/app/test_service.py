"""The service driven in-process: its lifecycle without a subprocess (as arq's worker
tests drive a Worker), on the real broker and the emulator over HTTP.

The subprocess tests (tests/integration/service) check what a process shows
(exit codes, signals, logs); these check the lifecycle's own steps."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from consumer.app.service import Service
from consumer.changes.mapping import Mapping
from consumer.config import load_settings
from consumer.errors import EXIT_API_REFUSED
from testkit.emulator import EmulatorProcess
from testkit.pipeline import API_KEY, Pipeline
from testkit.workbench import caught_up

pytestmark = pytest.mark.kafka


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    with EmulatorProcess(api_key=API_KEY, requests_per_minute=600) as api:
        yield Pipeline(kafka_bootstrap, tmp_path, api)


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    """The service tunes the garbage collector for streaming: not for the next test."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@asynccontextmanager
async def running(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, **sections: dict[str, Any]
) -> AsyncIterator[tuple[Service, asyncio.Task[int]]]:
    monkeypatch.setenv("RFMCUBE_API_KEY", API_KEY)
    settings = load_settings(pipeline.config("in-process.yaml", **sections))
    service = Service(settings, Mapping.load(settings.mapping))
    task = asyncio.create_task(service.run())
    try:
        yield service, task
    finally:
        if not task.done():
            service.request_stop()
            await asyncio.wait_for(task, 30)


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


async def test_it_starts_streams_and_stops_with_every_record_committed(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = pipeline.shop(seed=301)
    shop.workload(customers=15, guest_orders=3)
    pipeline.write_shop(shop)
    async with running(pipeline, monkeypatch, kafka={"consumer_process": False}) as (
        service,
        task,
    ):
        await until(lambda: service.role.sending_allowed, 30, "the active role")
        await until(
            lambda: caught_up(pipeline.bootstrap, pipeline.group, pipeline.topics),
            60,
            "every record committed",
        )
        service.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    pipeline.assert_equal(shop)
    assert service.shutdown.begun and service.fatal is None
    assert service.shutdown._watchdog is not None and service.shutdown._watchdog.finished.is_set()


async def test_a_task_that_fails_stops_every_task_with_the_code_its_error_carries(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = pipeline.shop(seed=302)
    shop.workload(customers=5, guest_orders=1)
    pipeline.write_shop(shop)
    async with running(pipeline, monkeypatch, kafka={"consumer_process": False}) as (
        service,
        task,
    ):
        monkeypatch.setenv("RFMCUBE_API_KEY", "wrong")  # too late: the settings hold the key
        pipeline.api.change(wrong_platform=True)  # 406: the connector is not for the API
        assert await asyncio.wait_for(task, 60) == EXIT_API_REFUSED
    assert service.fatal is not None and "406" in str(service.fatal)
    assert not any(t.get_name() in {"ingest", "flush"} for t in asyncio.all_tasks())
