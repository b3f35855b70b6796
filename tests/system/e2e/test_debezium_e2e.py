"""End to end with real Debezium: PostgreSQL → Debezium (Kafka Connect) → Kafka →
rfmcube-cdc → the API emulator. Rfmcube must end equal to what SQL says, with the
JsonConverter and (once) with Avro through a schema registry."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest

from schemas.debezium import UNAVAILABLE
from testkit.e2e.database import REPO
from testkit.e2e.harness import DebeziumRun

MakeRun = Callable[..., DebeziumRun]


def test_debezium_writes_the_workload_with_snapshot_toast_and_precise_decimals(
    make_run: MakeRun,
) -> None:
    run = make_run()
    phases = run.workload.phases()
    phases[0]()
    run.start_connector()
    for phase in phases[1:]:
        phase()
    run.wait_delivered()
    customers = run.read_values("customers")
    ops = {v["op"] for v in customers}
    assert {"r", "c", "u", "d"} <= ops
    edited = [v for v in customers if v["op"] == "u" and v["after"]["notes"].startswith("__deb")]
    assert edited, "an update that leaves notes alone carries Debezium's TOAST placeholder"
    orders = run.read_values("orders")
    assert all(isinstance(v["after"]["amount"], str) for v in orders if v["after"])
    # created_at as ZonedTimestamp strings in UTC, whatever zone the session wrote in
    assert all(v["after"]["created_at"].endswith("Z") for v in orders if v["after"])


def test_a_clean_run_ends_equal_to_the_shop(make_run: MakeRun) -> None:
    run = make_run()
    phases = run.workload.phases()
    phases[0]()
    run.start_connector()
    service = run.start_service()
    for phase in phases[1:]:
        phase()
    run.wait_equal(service)
    assert service.stop() == 0
    calls = {r["call"] for r in run.api.requests()}
    assert "delete_customer" in calls


def _restart_broker() -> None:
    for action in ("stop", "start"):
        subprocess.run([REPO / "scripts" / "kafka", action], check=True, capture_output=True)


@pytest.mark.serial  # it restarts the broker every test shares: alone under xdist
@pytest.mark.parametrize("decimals", ["precise", "string"])
def test_crashes_and_a_broker_restart_still_end_equal(make_run: MakeRun, decimals: str) -> None:
    local = subprocess.run(
        [REPO / "scripts" / "kafka", "status"], capture_output=True, text=True, check=False
    )
    run = make_run(decimals)
    if local.stdout.strip() != run.bootstrap:
        pytest.fail(
            f"this test restarts the broker of scripts/kafka; the tests use {run.bootstrap}"
        )
    phases = run.workload.phases()
    phases[0]()
    run.start_connector()
    first = run.start_service()
    phases[1]()
    run.wait_some_commits(first)
    first.kill()  # SIGKILL mid-stream: nothing flushed, nothing committed
    second = run.start_service()
    phases[2]()
    run.wait_some_commits(second)
    _restart_broker()  # while the service streams and Debezium writes
    phases[3]()
    run.wait_some_commits(second)
    second.kill()
    third = run.start_service()
    run.wait_equal(third, timeout=120)
    assert third.stop() == 0
    amounts = [v["after"]["amount"] for v in run.read_values("orders") if v["after"] is not None]
    plain = [a for a in amounts if re.fullmatch(r"-?[0-9]+\.[0-9]{2}", a)]
    # precise: Connect Decimal (base64 bytes); string: plain text with cents
    assert len(plain) == (len(amounts) if decimals == "string" else 0)


def test_avro_through_the_registry_ends_equal(make_run: MakeRun) -> None:
    """The PostgreSQL chain once in Avro (the MariaDB one kills the service in Avro)."""
    run = make_run(avro=True)
    phases = run.workload.phases()
    phases[0]()
    run.start_connector()
    service = run.start_service()
    for phase in phases[1:]:
        phase()
    run.wait_equal(service, timeout=120)
    assert service.stop() == 0
    assert run.dead_letter_count() == 0
    values = [r.value for r in run._records("customers") if r.value]
    assert values and all(v[:1] == b"\x00" for v in values), "the Confluent wire format"
    edited = [e for e in run.read_events("customers") if e.op == "u"]
    assert any(e.after and e.after["notes"] is UNAVAILABLE for e in edited), "TOAST in Avro"
