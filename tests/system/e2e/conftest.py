"""PostgreSQL and a Kafka Connect worker with Debezium, once per module; a run per test."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.e2e.database import Postgres, start_postgres
from testkit.e2e.debezium import ConnectWorker, start_connect
from testkit.e2e.harness import API_KEY, DebeziumRun
from testkit.emulator import EmulatorProcess

REPO = Path(__file__).resolve().parents[3]


def _running(script: str) -> bool:
    return (
        subprocess.run([REPO / "scripts" / script, "status"], capture_output=True).returncode == 0
    )


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """scripts/postgres's server (installed and started if needed; stopped if we started it)."""
    already = _running("postgres")
    server = Postgres(port=start_postgres())
    yield server
    if not already:
        subprocess.run([REPO / "scripts" / "postgres", "stop"], check=False)


@pytest.fixture(scope="module")
def connect_worker(kafka_bootstrap: str) -> Iterator[ConnectWorker]:
    """scripts/connect's worker on the tests' broker (its JVM starts once per module)."""
    already = _running("connect")
    worker = ConnectWorker(start_connect(kafka_bootstrap))
    yield worker
    if not already:
        subprocess.run([REPO / "scripts" / "connect", "stop"], check=False)


@pytest.fixture
def make_run(
    kafka_bootstrap: str, postgres: Postgres, connect_worker: ConnectWorker, tmp_path: Path
) -> Iterator[Callable[..., DebeziumRun]]:
    runs: list[DebeziumRun] = []
    with EmulatorProcess(api_key=API_KEY, requests_per_minute=600) as api:

        def make(decimals: str = "precise") -> DebeziumRun:
            run = DebeziumRun(kafka_bootstrap, tmp_path, api, postgres, connect_worker, decimals)
            runs.append(run)
            return run

        yield make
        for run in runs:
            run.close()
