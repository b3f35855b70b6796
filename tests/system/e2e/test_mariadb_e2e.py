"""End to end with real Debezium on MariaDB: MariaDB 10.11 (its binlog) → Debezium's
MariaDB connector (Kafka Connect) → Kafka, in JSON and in Avro through Apicurio →
rfmcube-cdc → the API emulator. Rfmcube must end equal to what SQL says, across a
SIGKILL of the service and a restart of the connector."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from schemas.debezium import Op
from testkit.e2e.harness import DebeziumRun

MakeRun = Callable[..., DebeziumRun]


@pytest.mark.parametrize("converter", ["json", "avro"])
def test_mariadb_ends_equal_after_a_kill_of_the_service_and_a_connector_restart(
    make_run: MakeRun, converter: str
) -> None:
    run = make_run(database="mariadb", avro=converter == "avro")
    phases = run.workload.phases()
    phases[0]()  # what the snapshot reads
    run.start_connector()
    first = run.start_service()
    phases[1]()
    run.wait_some_commits(first)
    first.kill()  # SIGKILL mid-stream: nothing flushed, nothing committed
    run.restart_connector()  # the task goes on from its binlog position
    phases[2]()
    second = run.start_service()
    phases[3]()
    run.wait_equal(second, timeout=120)
    assert second.stop() == 0
    assert run.dead_letter_count() == 0

    # What went through: the snapshot, binlog inserts, updates and deletes, an item
    # moved between orders, TINYINT(1) as booleans, ENUM statuses, exact DECIMALs.
    customers = run.read_events("customers")
    assert {Op.READ, Op.CREATE, Op.UPDATE, Op.DELETE} <= {e.op for e in customers}
    assert all(isinstance(e.after["newsletter"], bool) for e in customers if e.after)
    lines = run.read_events("order_lines")
    assert any(
        e.before and e.after and e.before["order_id"] != e.after["order_id"] for e in lines
    ), "an item moved between orders"
    orders = run.read_events("orders")
    assert {e.after["status"] for e in orders if e.after} >= {"pending", "cancelled"}
    framed = [r.value for r in run._records("orders") if r.value]
    assert all(v[:1] == (b"\x00" if converter == "avro" else b"{") for v in framed)
