"""A large resync never stops the service answering its probes (issue 20).

The store is filled directly (rows of 100,000 customers and 500,000 orders,
written in SQL: building it through Kafka would take minutes), as the bench of
``bench/resync.py`` does at full size; the real service then runs against the
real broker and the emulator, and ``rfmcube-cdc resync`` asks it for a resync
while a thread asks ``/healthz`` ten times a second (:mod:`testkit.probe`), as a liveness probe with
a one-second timeout would.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from testkit.pipeline import Pipeline, until
from testkit.probe import HealthProbe
from testkit.workbench import free_port

CUSTOMERS = 100_000  # and five orders each: 600,000 documents to owe


def _fill_store(path: Path, customers: int) -> None:
    """Rows as the mapper writes them for the default mapping: customers, then five
    orders each (no items: owing the scope reads customers and orders only)."""
    store = StateStore(path)
    Obligations(store)  # the obligations' tables, as the service creates them
    stamp = "2026-01-05T10:00:00Z"
    with store.transaction() as db:
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO rows (kind, key, parent, email, fields, deleted, changed_ms)"
            " SELECT 'customer', i, NULL, 'customer' || i || '@example.com',"
            " json_object('email', 'customer' || i || '@example.com', 'id', CAST(i AS TEXT),"
            " 'createdAt', ?2, 'updatedAt', ?2, 'firstName', 'Anna'), 0, 1767607200000 FROM n",
            (customers, stamp),
        )
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO rows (kind, key, parent, email, fields, deleted, changed_ms)"
            " SELECT 'order', i, CAST((i - 1) / 5 + 1 AS TEXT), NULL,"
            " json_object('status', '40', 'id', CAST(i AS TEXT), 'createdAt', ?2,"
            " 'updatedAt', ?2, 'amount', json('85.85')), 0, 1767607200000 FROM n",
            (5 * customers, stamp),
        )
    store.close()


@pytest.mark.serial  # the one-second bound: no other test's load beside it under xdist
def test_healthz_answers_within_a_second_while_a_large_resync_is_owed(
    pipeline: Pipeline,
) -> None:
    _fill_store(pipeline.folder / "state.db", CUSTOMERS)
    port = free_port()
    service = pipeline.start(service={"health_port": port, "health_host": "127.0.0.1"})
    until(lambda: "active:" in service.log(), 60, "the active role", service.log)
    follower = pipeline.cli_background(service, "resync")
    try:
        with HealthProbe(port, every=0.1) as probe:
            # Owing the scope is done once the service counts all of it as owed.
            until(
                lambda: f"{6 * CUSTOMERS} documents owed" in service.log(),
                120,
                "the resync's scope owed",
                service.log,
            )
            time.sleep(1.0)
    finally:
        follower.kill()
        follower.communicate()
        service.kill()
    assert probe.answers, "no health answer at all"
    assert probe.failures == 0, f"{probe.failures} of {probe.answers} health answers failed"
    assert probe.slowest < 1.0, f"the slowest /healthz answer took {probe.slowest:.2f} s"
