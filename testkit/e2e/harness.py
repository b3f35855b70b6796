"""One end-to-end run: a shop database, its Debezium connector, topics, the service.

PostgreSQL (scripts/postgres) → Debezium on Kafka Connect (scripts/connect) →
Kafka → rfmcube-cdc → the API emulator. Each run has its own database,
replication slot, topic prefix and consumer group, and removes them after.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from testkit.e2e.database import (
    Postgres,
    create_shop_database,
    drop_shop_database,
    expected_state_from_sql,
    table_counts,
)
from testkit.e2e.debezium import ConnectWorker, connector_config
from testkit.e2e.workload import Workload
from testkit.emulator import EmulatorProcess
from testkit.shop import state_difference
from testkit.workbench import (
    ServiceProcess,
    caught_up,
    mapping_for_prefix,
    recreate_topics,
    write_config,
)

API_KEY = "e2e-debezium-key"
TABLES = ("customers", "orders", "order_items")
# The runs' mapping also sends notes (a TOASTed column) as a descriptor, so that
# an unchanged-TOAST placeholder on a sent column is checked; the default
# mapping never sends it.
SENT_NOTES = {"notes": "notes"}


def mapping_with_notes(prefix: str) -> str:
    text = mapping_for_prefix(prefix)
    marker = "      - phone\n"
    assert marker in text, "the default mapping's descriptors changed: update this test"
    return text.replace(marker, marker + "      - notes\n")


@dataclass
class DebeziumRun:
    """One test's database, connector, topics, group and service processes."""

    bootstrap: str
    folder: Path
    api: EmulatorProcess
    server: Postgres
    worker: ConnectWorker
    decimals: str = "precise"
    name: str = field(default_factory=lambda: f"e2e{uuid.uuid4().hex[:8]}")
    services: list[ServiceProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.connector = f"{self.name}-connector"
        self.slot = f"{self.name}_slot"
        self.topics = [f"{self.name}.public.{table}" for table in TABLES]
        self.dead_letters = f"{self.name}.dead-letters"
        self.group = f"{self.name}-group"
        # Made up front (3 partitions) so that the service can subscribe before
        # Debezium writes anything; Connect then finds them.
        recreate_topics(self.bootstrap, [*self.topics, self.dead_letters], partitions=3)
        self.db = create_shop_database(self.server, self.name)
        self.workload = Workload(self.db)

    # -- Debezium ------------------------------------------------------------------

    def start_connector(self, timeout: float = 60.0) -> None:
        """Registers the connector, waits for RUNNING and for its snapshot in the topics."""
        rows = sum(table_counts(self.db).values())
        self.worker.register(
            connector_config(
                self.connector,
                port=self.server.port,
                dbname=self.name,
                prefix=self.name,
                slot=self.slot,
                decimals=self.decimals,
            )
        )
        self.worker.wait_running(self.connector, timeout)
        deadline = time.monotonic() + timeout
        while self.records_in_topics() < rows:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the snapshot wrote {self.records_in_topics()} of {rows} rows in {timeout} s"
                )
            time.sleep(0.3)

    def wait_delivered(self, timeout: float = 60.0) -> None:
        """Writes a marker (an unmapped column, so nothing to send) after everything else
        and waits until Debezium wrote it: the slot streams in commit order."""
        marker = f"marker-{uuid.uuid4().hex}"
        cid = self.workload.customers[0]
        self.db.run(f"UPDATE customers SET password_hash = '{marker}' WHERE id = {cid};")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(
                (v["after"] or {}).get("password_hash") == marker
                for v in self.read_values("customers")
            ):
                return
            time.sleep(0.5)
        raise AssertionError(f"Debezium did not write the marker within {timeout} s")

    def wait_some_commits(self, service: ServiceProcess, timeout: float = 60.0) -> None:
        """Until the service commits more than it had: it is streaming."""
        deadline = time.monotonic() + timeout
        start = self.committed()
        while start < 0 and time.monotonic() < deadline:
            time.sleep(0.3)
            start = self.committed()
        while time.monotonic() < deadline:
            if not service.running():
                raise AssertionError(f"the service exited; its log:\n{service.log()[-4000:]}")
            if self.committed() > start:
                return
            time.sleep(0.3)
        raise AssertionError(
            f"the service committed nothing in {timeout} s; its log:\n{service.log()[-3000:]}"
        )

    def committed(self) -> int:
        """The group's committed records; -1 while the broker cannot say (it is still
        loading its group coordinator after a restart)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="e2e-offsets")
        try:
            offsets = admin.list_group_offsets(self.group).get(self.group, {})
            return sum(max(o.offset, 0) for tp, o in offsets.items() if tp.topic in self.topics)
        except KafkaError:
            return -1
        finally:
            admin.close()

    def records_in_topics(self) -> int:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in self.topics
                for p in consumer.partitions_for_topic(topic) or ()
            ]
            return sum(consumer.end_offsets(partitions).values())
        finally:
            consumer.close()

    def read_values(self, table: str) -> list[dict[str, Any]]:
        """Every non-tombstone record's payload of one table's topic (small topics)."""
        consumer = KafkaConsumer(
            f"{self.name}.public.{table}",
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=3000,
        )
        try:
            return [orjson.loads(r.value)["payload"] for r in consumer if r.value is not None]
        finally:
            consumer.close()

    # -- the service --------------------------------------------------------------------

    def start_service(self) -> ServiceProcess:
        config = write_config(
            self.folder,
            bootstrap=self.bootstrap,
            api_url=self.api.url,
            group=self.group,
            dead_letter_topic=self.dead_letters,
            mapping=mapping_with_notes(self.name),
            sections={
                "pacing": {"min_window_seconds": 0.3},
                # A SIGKILLed member holds its partitions until its session times
                # out: the broker's minimum (6 s) keeps the crash tests short.
                "kafka": {"extra": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}},
            },
        )
        log = self.folder / f"service-{len(self.services)}.log"
        service = ServiceProcess(config, API_KEY, log).start()
        self.services.append(service)
        return service

    def expected(self) -> dict[str, Any]:
        return expected_state_from_sql(self.db, sent_customer_columns=SENT_NOTES)

    def wait_equal(self, service: ServiceProcess, timeout: float = 90.0) -> None:
        """Until the service committed everything Debezium wrote and Rfmcube equals SQL."""
        self.wait_delivered()
        want = self.expected()
        deadline = time.monotonic() + timeout
        got: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if not service.running():
                raise AssertionError(f"the service exited; its log:\n{service.log()[-4000:]}")
            if caught_up(self.bootstrap, self.group, self.topics):
                got = self.api.state()
                if got == want:
                    return
            time.sleep(1.0)
        raise AssertionError(
            f"Rfmcube differs from the shop after {timeout} s: {state_difference(got, want)}"
            f"\nthe service's log:\n{service.log()[-3000:]}"
        )

    # -- clean-up -------------------------------------------------------------------------

    def close(self) -> None:
        for service in self.services:
            if service.running():
                service.kill()
        with contextlib.suppress(Exception):
            self.worker.delete(self.connector)
        # The task lets go of the slot asynchronously; drop_shop_database ends its backend.
        drop_shop_database(self.server, self.name, self.slot)
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="e2e-cleanup")
        try:
            with contextlib.suppress(Exception):
                admin.delete_topics([*self.topics, self.dead_letters])
        finally:
            admin.close()
