"""The databases, the schema registry and a Kafka Connect worker with Debezium, once per
session (started through the project's scripts if needed, stopped again if we started
them); a run per test."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.e2e.database import Postgres, start_postgres
from testkit.e2e.debezium import ConnectWorker, start_connect
from testkit.e2e.harness import API_KEY, DebeziumRun, MariaDbRun
from testkit.e2e.mariadb import MariaDb, start_mariadb
from testkit.e2e.registry import registry_running, start_registry, stop_registry
from testkit.emulator import EmulatorProcess

REPO = Path(__file__).resolve().parents[3]


def _running(script: str) -> bool:
    return (
        subprocess.run([REPO / "scripts" / script, "status"], capture_output=True).returncode == 0
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """scripts/postgres's server (installed and started if needed; stopped if we started it)."""
    already = _running("postgres")
    server = Postgres(port=start_postgres())
    yield server
    if not already:
        subprocess.run([REPO / "scripts" / "postgres", "stop"], check=False)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDb]:
    """scripts/mariadb's server (installed and started if needed; stopped if we started it)."""
    already = _running("mariadb")
    server = MariaDb(port=start_mariadb())
    yield server
    if not already:
        subprocess.run([REPO / "scripts" / "mariadb", "stop"], check=False)


@pytest.fixture(scope="session")
def e2e_registry() -> Iterator[str]:
    """scripts/registry's Apicurio Registry: its Confluent-compatible URL."""
    already = registry_running()
    url = start_registry()
    yield url
    if not already:
        stop_registry()


@pytest.fixture(scope="session")
def connect_worker(kafka_bootstrap: str) -> Iterator[ConnectWorker]:
    """scripts/connect's worker on the tests' broker (its JVM starts once)."""
    already = _running("connect")
    worker = ConnectWorker(start_connect(kafka_bootstrap))
    yield worker
    if not already:
        subprocess.run([REPO / "scripts" / "connect", "stop"], check=False)


MakeRun = Callable[..., DebeziumRun]


@pytest.fixture
def make_run(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    connect_worker: ConnectWorker,
    tmp_path: Path,
) -> Iterator[MakeRun]:
    """``make_run(decimals="precise", database="postgres", avro=False)``: a run of the
    chain; its database server and (for Avro) the registry start on first use."""
    runs: list[DebeziumRun] = []
    with EmulatorProcess(api_key=API_KEY, requests_per_minute=600) as api:

        def make(
            decimals: str = "precise", *, database: str = "postgres", avro: bool = False
        ) -> DebeziumRun:
            registry = request.getfixturevalue("e2e_registry") if avro else None
            kind = MariaDbRun if database == "mariadb" else DebeziumRun
            server = request.getfixturevalue("mariadb" if database == "mariadb" else "postgres")
            run = kind(kafka_bootstrap, tmp_path, api, server, connect_worker, decimals, registry)
            runs.append(run)
            return run

        yield make
        for run in runs:
            run.close()
