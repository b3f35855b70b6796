"""One emulator subprocess for the suite, reset before every test; an HTTP client to call it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from testkit.emulator import EmulatorProcess
from testkit.emulator_api import API_KEY, Api


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(
        api_key=API_KEY, requests_per_minute=100_000, process_delay_ms=0, seed=7
    ) as process:
        yield process


@pytest.fixture
def emulator(emulator_process: EmulatorProcess) -> EmulatorProcess:
    """The shared emulator, empty and with its start-up settings."""
    emulator_process.reset()
    return emulator_process


@pytest.fixture
async def api(emulator: EmulatorProcess) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, emulator.url, API_KEY)
