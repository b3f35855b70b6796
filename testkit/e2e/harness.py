"""One end-to-end run: a shop database, its Debezium connector, topics, the service.

PostgreSQL (scripts/postgres) or MariaDB (scripts/mariadb) → Debezium on Kafka
Connect (scripts/connect) → Kafka → rfmcube-cdc → the API emulator; records in
JSON (schemas on) or, given a registry (scripts/registry), in Avro through
Apicurio's converter. Each run has its own database, connector (and slot),
topic prefix and consumer group, and removes them after.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from consumer.changes.decode import decode_record
from consumer.config import SchemaRegistryConfig
from consumer.registry import Registry
from schemas.debezium import ChangeEvent, RawRecord
from testkit.e2e import database as pg
from testkit.e2e import mariadb
from testkit.e2e.database import Postgres
from testkit.e2e.debezium import (
    ConnectWorker,
    avro_converter_config,
    connector_config,
    mariadb_connector_config,
)
from testkit.e2e.mariadb import MariaDb
from testkit.e2e.mariadb_workload import MariaDbWorkload
from testkit.e2e.registry import apicurio_api
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
# MariaDB's runs send the JSON column too (as the text Debezium reads).
SENT_ATTRIBUTES = {"attributes": "attributes"}


def mapping_with_notes(prefix: str) -> str:
    text = mapping_for_prefix(prefix)
    marker = "      - phone\n"
    assert marker in text, "the default mapping's descriptors changed: update this test"
    return text.replace(marker, marker + "      - notes\n")


@dataclass
class DebeziumRun:
    """One test's database, connector, topics, group and service processes: the
    PostgreSQL chain (:class:`MariaDbRun` is the MariaDB one)."""

    bootstrap: str
    folder: Path
    api: EmulatorProcess
    server: Any  # Postgres, or MariaDb for MariaDbRun
    worker: ConnectWorker
    decimals: str = "precise"
    registry: str | None = None  # a Confluent-compatible URL: Avro through it
    name: str = field(default_factory=lambda: f"e2e{uuid.uuid4().hex[:8]}")
    services: list[ServiceProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.connector = f"{self.name}-connector"
        self.slot = f"{self.name}_slot"
        self.topics = [self.topic(table) for table in self.tables()]
        self.dead_letters = f"{self.name}.dead-letters"
        self.group = f"{self.name}-group"
        # Made up front (3 partitions) so that the service can subscribe before
        # Debezium writes anything; Connect then finds them.
        recreate_topics(self.bootstrap, [*self.topics, self.dead_letters], partitions=3)
        self._create_database()
        self._decoder = (
            None
            if self.registry is None
            else Registry.from_config(
                SchemaRegistryConfig(url=self.registry, allow_insecure_http=True)
            )
        )

    # -- what differs between the databases ----------------------------------------

    def tables(self) -> tuple[str, ...]:
        return TABLES

    def topic(self, table: str) -> str:
        return f"{self.name}.public.{table}"

    def _create_database(self) -> None:
        self.db: Any = pg.create_shop_database(self.server, self.name)
        self.workload: Any = Workload(db=self.db)

    def _connector_config(self) -> dict[str, str]:
        return connector_config(
            self.connector,
            port=self.server.port,
            dbname=self.name,
            prefix=self.name,
            slot=self.slot,
            decimals=self.decimals,
        )

    def _drop_database(self) -> None:
        # The task lets go of the slot asynchronously; drop_shop_database ends its backend.
        pg.drop_shop_database(self.server, self.name, self.slot)

    def _rows(self) -> int:
        return sum(pg.table_counts(self.db).values())

    def _mapping(self) -> str:
        return mapping_with_notes(self.name)

    def expected(self) -> dict[str, Any]:
        return pg.expected_state_from_sql(self.db, sent_customer_columns=SENT_NOTES)

    def _other_topics(self) -> list[str]:
        """Topics the connector writes beside the tables' (deleted after the run)."""
        return []

    # -- Debezium ------------------------------------------------------------------

    def start_connector(self, timeout: float = 60.0) -> None:
        """Registers the connector, waits for RUNNING and for its snapshot in the topics."""
        rows = self._rows()
        config = self._connector_config()
        if self.registry is not None:
            config.update(avro_converter_config(apicurio_api(self.registry)))
        self.worker.register(config)
        self.worker.wait_running(self.connector, timeout)
        deadline = time.monotonic() + timeout
        while self.records_in_topics() < rows:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the snapshot wrote {self.records_in_topics()} of {rows} rows in {timeout} s"
                )
            time.sleep(0.3)

    def restart_connector(self) -> None:
        """Restarts the connector's task (it goes on from its stored offsets)."""
        self.worker.restart(self.connector)

    def wait_delivered(self, timeout: float = 60.0) -> None:
        """Writes a marker (an unmapped column, so nothing to send) after everything else
        and waits until Debezium wrote it: the log streams in commit order."""
        marker = f"marker-{uuid.uuid4().hex}"
        cid = self.workload.customers[0]
        self.db.run(f"UPDATE customers SET password_hash = '{marker}' WHERE id = {cid};")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(
                (e.after or {}).get("password_hash") == marker
                for e in self.read_events("customers")
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

    def _records(self, table: str) -> list[RawRecord]:
        consumer = KafkaConsumer(
            self.topic(table),
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=3000,
        )
        try:
            return [
                RawRecord(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers))
                for r in consumer
            ]
        finally:
            consumer.close()

    def read_values(self, table: str) -> list[dict[str, Any]]:
        """Every non-tombstone record's JSON payload of one table's topic (JSON runs)."""
        return [orjson.loads(r.value)["payload"] for r in self._records(table) if r.value]

    def read_events(self, table: str) -> list[ChangeEvent]:
        """Every row change of one table's topic, decoded (JSON or Avro) as the service does."""
        records = self._records(table)
        avro = None if self._decoder is None else self._decoder.reader(records)
        events = (decode_record(r, None, avro) for r in records)
        return [e for e in events if isinstance(e, ChangeEvent)]

    # -- the service --------------------------------------------------------------------

    def start_service(self) -> ServiceProcess:
        kafka: dict[str, object] = {
            # A SIGKILLed member holds its partitions until its session times out:
            # the broker's minimum (6 s) keeps the crash tests short.
            "extra": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
        }
        if self.registry is not None:
            kafka["schema_registry"] = {"url": self.registry, "allow_insecure_http": True}
        config = write_config(
            self.folder,
            bootstrap=self.bootstrap,
            api_url=self.api.url,
            group=self.group,
            dead_letter_topic=self.dead_letters,
            mapping=self._mapping(),
            sections={"pacing": {"min_window_seconds": 0.3}, "kafka": kafka},
        )
        log = self.folder / f"service-{len(self.services)}.log"
        service = ServiceProcess(config, API_KEY, log).start()
        self.services.append(service)
        return service

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

    def dead_letter_count(self) -> int:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            partitions = [
                TopicPartition(self.dead_letters, p)
                for p in consumer.partitions_for_topic(self.dead_letters) or ()
            ]
            return sum(consumer.end_offsets(partitions).values())
        finally:
            consumer.close()

    # -- clean-up -------------------------------------------------------------------------

    def close(self) -> None:
        for service in self.services:
            if service.running():
                service.kill()
        with contextlib.suppress(Exception):
            self.worker.delete(self.connector)
        self._drop_database()
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="e2e-cleanup")
        try:
            with contextlib.suppress(Exception):
                existing = set(admin.list_topics())
                doomed = [*self.topics, self.dead_letters, *self._other_topics()]
                admin.delete_topics([t for t in doomed if t in existing])
        finally:
            admin.close()


class MariaDbRun(DebeziumRun):
    """The MariaDB chain: topics ``<name>.<name>.<table>``, order_lines as the items'
    table, the connector's DDL, history and heartbeat topics removed after."""

    def tables(self) -> tuple[str, ...]:
        return mariadb.TABLES

    def topic(self, table: str) -> str:
        return f"{self.name}.{self.name}.{table}"

    def _create_database(self) -> None:
        self.db = mariadb.create_shop_database(self.server, self.name)
        self.workload = MariaDbWorkload(db=self.db)

    def _connector_config(self) -> dict[str, str]:
        return mariadb_connector_config(
            self.connector,
            port=self.server.port,
            dbname=self.name,
            prefix=self.name,
            # a replica id of its own per connector, never the server's 1
            server_id=random.randint(5_000, 4_000_000_000),
            bootstrap=self.bootstrap,
            decimals=self.decimals,
        )

    def _drop_database(self) -> None:
        mariadb.drop_shop_database(self.server, self.name)

    def _rows(self) -> int:
        return sum(mariadb.table_counts(self.db).values())

    def _mapping(self) -> str:
        return mariadb.mapping_for(self.name, self.name)

    def expected(self) -> dict[str, Any]:
        return mariadb.expected_state_from_sql(self.db, sent_customer_columns=SENT_ATTRIBUTES)

    def _other_topics(self) -> list[str]:
        return [self.name, f"{self.name}.schema-history", f"__debezium-heartbeat.{self.name}"]


__all__ = ["API_KEY", "DebeziumRun", "MariaDb", "MariaDbRun", "Postgres"]
