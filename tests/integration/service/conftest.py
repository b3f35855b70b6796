"""The whole service on the real broker against the emulator over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.emulator import EmulatorProcess
from testkit.pipeline import API_KEY, Pipeline


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    with EmulatorProcess(api_key=API_KEY, requests_per_minute=600) as api:
        line = Pipeline(kafka_bootstrap, tmp_path, api)
        yield line
        for service in line.services:
            if service.running():
                service.kill()
