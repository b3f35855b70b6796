"""A test's pipeline: shop topics, emulator, group and service processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from testkit.emulator import EmulatorProcess
from testkit.shop import Record, Shop, expected_state, state_difference, topics_for
from testkit.workbench import (
    ServiceProcess,
    mapping_for_prefix,
    produce,
    recreate_topics,
    wait_caught_up,
    write_config,
)

API_KEY = "pipeline-test-key"


def until(
    condition: Callable[[], bool], timeout: float, what: str, log: Callable[[], str] = str
) -> None:
    """Wait for ``condition``; on timeout fail with the end of ``log()``, read then."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{log()[-3000:]}"
        time.sleep(0.1)


@dataclass
class Pipeline:
    """One test's shop topics, emulator, group and service configuration."""

    bootstrap: str
    folder: Path
    api: EmulatorProcess
    prefix: str = field(default_factory=lambda: f"shop{uuid.uuid4().hex[:8]}")
    services: list[ServiceProcess] = field(default_factory=list)
    positions: dict[tuple[str, int, int], Record] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mapping = mapping_for_prefix(self.prefix)  # what the next start maps with
        self.topics = list(topics_for(self.prefix).values())
        self.dead_letters = f"{self.prefix}.dead-letters"
        self.group = f"{self.prefix}-group"
        recreate_topics(self.bootstrap, [*self.topics, self.dead_letters], partitions=3)

    def shop(self, **options: Any) -> Shop:
        return Shop(prefix=self.prefix, **options)

    def write(self, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
        produce(self.bootstrap, records)

    def write_with_positions(self, records: list[Record]) -> list[tuple[str, int, int]]:
        """Write records and learn where each landed (kept in ``self.positions``)."""
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            sent = [(r, producer.send(r.topic, key=r.key, value=r.value)) for r in records]
            producer.flush()
            landed = []
            for record, future in sent:
                meta = future.get(timeout=30)
                position = (meta.topic, meta.partition, meta.offset)
                self.positions[position] = record
                landed.append(position)
            return landed
        finally:
            producer.close()

    def write_shop(self, shop: Shop, start: int = 0, stop: int | None = None) -> None:
        self.write([(r.topic, r.key, r.value) for r in shop.records[start:stop]])

    def config(self, name: str = "rfmcube-cdc.yaml", **sections: dict[str, Any]) -> Path:
        # The emulator's 600 a minute as 100 in any 10 s: a member taking over after
        # another waits out one window, 10 s rather than a minute.
        pacing = {
            "min_window_seconds": 0.3,
            "requests_per_minute": 100,
            "window_seconds": 10,
            **sections.pop("pacing", {}),
        }
        # A SIGKILLed member holds its partitions for the session timeout:
        # keep it short so that a restarted service gets them back quickly.
        kafka: dict[str, object] = {
            "extra": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
        }
        kafka.update(sections.pop("kafka", {}))
        return write_config(
            self.folder,
            bootstrap=self.bootstrap,
            api_url=self.api.url,
            group=self.group,
            dead_letter_topic=self.dead_letters,
            mapping=self.mapping,
            sections={"pacing": pacing, "kafka": kafka, **sections},
            name=name,
        )

    def start(self, **sections: dict[str, Any]) -> ServiceProcess:
        number = len(self.services)
        service = ServiceProcess(
            self.config(f"service-{number}.yaml", **sections),
            API_KEY,
            self.folder / f"service-{number}.log",
        ).start()
        self.services.append(service)
        return service

    def cli(
        self, service: ServiceProcess, *args: str, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """``rfmcube-cdc <args> --config <the service's configuration>``, to its end."""
        return subprocess.run(
            [sys.executable, "-m", "consumer.cli.main", *args, "--config", str(service.config)],
            env={**os.environ, "RFMCUBE_API_KEY": API_KEY},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli_background(self, service: ServiceProcess, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer.cli.main", *args, "--config", str(service.config)],
            env={**os.environ, "RFMCUBE_API_KEY": API_KEY},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_caught_up(self, service: ServiceProcess, timeout: float = 90.0) -> None:
        if not wait_caught_up(self.bootstrap, self.group, self.topics, service, timeout):
            raise AssertionError(f"the service did not catch up; its log:\n{service.log()[-4000:]}")

    def wait_imports_checked(self, service: ServiceProcess, timeout: float = 30.0) -> None:
        """Until every accepted import's process was polled (its outcome is known)."""

        def checked() -> bool:
            log = self.api.requests()
            polled = {r["processId"] for r in log if r["call"] == "processes"}
            accepted = (r for r in log if r["call"] == "import" and r["status"] == 200)
            return all(r["processId"] in polled for r in accepted)

        deadline = time.monotonic() + timeout
        while not checked():
            if time.monotonic() > deadline:
                raise AssertionError(f"imports left unchecked; the log:\n{service.log()[-3000:]}")
            time.sleep(0.1)

    def wait_equal(self, shop: Shop, timeout: float) -> None:
        """Until Rfmcube equals the shop (for work done after the commit)."""
        deadline = time.monotonic() + timeout
        while self.api.state() != expected_state(shop) and time.monotonic() < deadline:
            time.sleep(0.5)
        self.assert_equal(shop)

    def assert_equal(self, shop: Shop) -> None:
        state = self.api.state()
        want = expected_state(shop)
        assert state == want, state_difference(state, want)
