"""``rfmcube-cdc check-config --connect`` against the real broker and the emulator over
HTTP: what it finds, what it says to change, and its exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kafka.admin import KafkaAdminClient, NewTopic

from testkit.emulator import EmulatorProcess
from testkit.workbench import free_port, mapping_for_prefix

KEY = "check-config-key"
PASSWORD = "kafka-pw-5e3b21"
WEEK_MS = 7 * 24 * 3600 * 1000


@pytest.fixture(scope="module")
def api() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(api_key=KEY, requests_per_minute=600) as emulator:
        yield emulator


def run(config: Path, key: str = KEY, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RFMCUBE_")}
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli.main", "check-config", "--connect", *extra],
        env={**env, "RFMCUBE_API_KEY": key, "RFMCUBE_CDC_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class Shop:
    """A shop's topics, named afresh, and a configuration that points at them."""

    def __init__(self, admin: KafkaAdminClient, bootstrap: str, folder: Path) -> None:
        self.admin, self.bootstrap, self.folder = admin, bootstrap, folder
        self.prefix = f"chk{uuid.uuid4().hex[:8]}"
        self.customers, self.orders, self.items = (
            f"{self.prefix}.public.{table}" for table in ("customers", "orders", "order_items")
        )
        self.letters = f"{self.prefix}.dead-letters"
        self.created: list[str] = []

    def create(self, name: str, **configs: str) -> None:
        self.admin.create_topics([NewTopic(name, 2, 1, topic_configs=configs)])
        self.created.append(name)

    def config(
        self, api_url: str, registry: dict[str, object] | None = None, **extra: object
    ) -> Path:
        (self.folder / "mapping.yaml").write_text(mapping_for_prefix(self.prefix), "utf-8")
        path = self.folder / "rfmcube-cdc.yaml"
        config = {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "dead_letter_topic": self.letters,
                "extra": extra,
                "schema_registry": registry or {},
            },
            "api": {"base_url": api_url, "allow_insecure_http": True, "timeout_seconds": 3},
            "mapping": "mapping.yaml",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path


@pytest.fixture
def shop(kafka_admin: KafkaAdminClient, kafka_bootstrap: str, tmp_path: Path) -> Iterator[Shop]:
    made = Shop(kafka_admin, kafka_bootstrap, tmp_path)
    yield made
    if made.created:
        kafka_admin.delete_topics(made.created)


def lines(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The checks printed, by what was checked: "ok  ..." or "FAIL ..."."""
    found = {}
    for line in done.stdout.splitlines():
        if line.startswith("  ok") or line.startswith("  FAIL"):
            status, rest = line.split(maxsplit=1)
            what, says = rest.split(": ", 1)
            found[what] = f"{status} {says}"
    return found


def test_a_ready_cluster_and_a_good_key_pass(shop: Shop, api: EmulatorProcess) -> None:
    shop.create(shop.customers, **{"cleanup.policy": "compact"})
    shop.create(shop.orders, **{"cleanup.policy": "compact"})
    shop.create(shop.items, **{"retention.ms": "-1", "retention.bytes": "-1"})
    shop.create(shop.letters, **{"retention.ms": str(WEEK_MS)})
    done = run(shop.config(api.url))
    assert done.returncode == 0, done.stdout + done.stderr
    found = lines(done)
    assert found["Kafka"].startswith("ok 1 broker answered")
    for topic in (shop.customers, shop.orders, shop.items):
        assert found[f"topic {topic}"].endswith("a lost store can be rebuilt from it")
    assert found[f"dead-letter topic {shop.letters}"].startswith("ok 2 partitions")
    assert (
        found[f"Rfmcube API {api.url}"] == "ok the key is accepted (one request, a process look-up)"
    )
    calls = [r for r in api.requests() if r["call"] == "processes"]
    assert len(calls) == 1  # the key's budget: one request


def test_every_problem_is_named_with_what_to_change(shop: Shop, api: EmulatorProcess) -> None:
    shop.create(shop.customers, **{"cleanup.policy": "compact"})
    # orders: missing
    shop.create(shop.items, **{"retention.ms": str(WEEK_MS)})  # Kafka's default: 7 days
    shop.create(shop.letters, **{"cleanup.policy": "compact"})
    config = shop.config(api.url)
    done = run(config, key="not-the-key")
    found = lines(done)
    assert done.returncode == 5, done.stdout  # the first failure: a topic missing
    assert found[f"topic {shop.orders}"].startswith("FAIL does not exist")
    assert "entities.orders.topic" in found[f"topic {shop.orders}"]
    items = found[f"topic {shop.items}"]
    assert items.startswith("FAIL cleanup.policy=delete, retention.ms=604800000 (7 days)")
    assert f"--entity-name {shop.items} --add-config cleanup.policy=compact" in items
    assert "set cleanup.policy=delete" in found[f"dead-letter topic {shop.letters}"]
    assert "the API key was refused (401)" in found[f"Rfmcube API {api.url}"]
    assert "not-the-key" not in done.stdout + done.stderr
    assert "4 of 6 checks failed" in done.stdout

    # What is left once the rest is fixed: the retention alone, its own code.
    shop.create(shop.orders, **{"cleanup.policy": "compact"})
    shop.admin.delete_topics([shop.letters])
    shop.created.remove(shop.letters)
    shop.letters = f"{shop.letters}2"
    shop.create(shop.letters)
    done = run(shop.config(api.url))
    assert done.returncode == 8, done.stdout
    assert [w for w, s in lines(done).items() if s.startswith("FAIL")] == [f"topic {shop.items}"]


def test_a_broker_that_refuses_the_handshake_is_named_without_its_secrets(
    shop: Shop, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "RFMCUBE_CDC__KAFKA__EXTRA__SASL_PLAIN_PASSWORD").write_text(PASSWORD, "utf-8")
    # SASL against the test broker's plain listener, and an API nothing listens for.
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    config = shop.config(
        nowhere,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="shop",
        bootstrap_timeout_ms=2000,
    )
    done = run(config, KEY, "--secrets-dir", str(secrets))
    assert done.returncode == 5, done.stdout + done.stderr
    found = lines(done)
    kafka = found["Kafka"]
    assert kafka.startswith(f"FAIL no broker answered at {shop.bootstrap}")
    assert "Sasl" in kafka and "security_protocol SASL_PLAINTEXT" in kafka
    assert "not reached within api.timeout_seconds" in found[f"Rfmcube API {nowhere}"]
    assert PASSWORD not in done.stdout + done.stderr and KEY not in done.stdout + done.stderr


def test_a_schema_registry_that_does_not_answer_is_named(shop: Shop, api: EmulatorProcess) -> None:
    for topic in (shop.customers, shop.orders, shop.items):
        shop.create(topic, **{"cleanup.policy": "compact"})
    shop.create(shop.letters, **{"retention.ms": str(WEEK_MS)})
    url = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"  # nothing listens there
    done = run(shop.config(api.url, registry={"url": url, "allow_insecure_http": True}))
    assert done.returncode == 5, done.stdout
    says = lines(done)[f"schema registry {url}"]
    assert says.startswith("FAIL GET ") and "refused" in says.lower(), says
