"""The databases, the schema registry and a Kafka Connect worker with Debezium, once per
run (started through the project's scripts if needed, stopped at the end of the run if
it started them: tests/conftest.py); a run per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.e2e.database import Postgres, start_postgres
from testkit.e2e.debezium import ConnectWorker, start_connect
from testkit.e2e.harness import API_KEY, DebeziumRun, MariaDbRun
from testkit.e2e.mariadb import MariaDb, start_mariadb
from testkit.e2e.registry import start_registry
from testkit.emulator import EmulatorProcess
from testkit.shared import SharedServices


@pytest.fixture(scope="session")
def postgres(shared_services: SharedServices) -> Postgres:
    """scripts/postgres's server (installed and started if needed)."""
    return Postgres(port=shared_services.use("postgres", start_postgres))


@pytest.fixture(scope="session")
def mariadb(shared_services: SharedServices) -> MariaDb:
    """scripts/mariadb's server (installed and started if needed)."""
    return MariaDb(port=shared_services.use("mariadb", start_mariadb))


@pytest.fixture(scope="session")
def e2e_registry(shared_services: SharedServices) -> str:
    """scripts/registry's Apicurio Registry: its Confluent-compatible URL."""
    return shared_services.use("registry", start_registry)


@pytest.fixture(scope="session")
def connect_worker(kafka_bootstrap: str, shared_services: SharedServices) -> ConnectWorker:
    """scripts/connect's worker on the tests' broker (its JVM starts once)."""
    return ConnectWorker(shared_services.use("connect", lambda: start_connect(kafka_bootstrap)))


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
