"""Session-wide fixtures: the real Kafka broker, fresh topics, a producer."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a real broker: $KAFKA_BOOTSTRAP_SERVERS, else
    one started through scripts/kafka (and stopped again if we started it)."""
    preset = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if preset:
        yield preset
        return
    already = subprocess.run([REPO / "scripts/kafka", "status"], capture_output=True, text=True)
    started = subprocess.run(
        [REPO / "scripts/kafka", "start"], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"could not start the broker: {started.stderr.strip()}")
    yield started.stdout.strip().splitlines()[-1]
    if already.returncode != 0:
        subprocess.run([REPO / "scripts/kafka", "stop"], check=False)


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-admin")
    yield admin
    admin.close()


TopicFactory = Callable[..., str]


@pytest.fixture
def make_topic(kafka_admin: KafkaAdminClient) -> Iterator[TopicFactory]:
    """Creates fresh, uniquely named topics; deletes them after the test."""
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        kafka_admin.create_topics([NewTopic(name, partitions, 1)])
        created.append(name)
        return name

    yield make
    if created:
        # Best effort: a unique name never collides anyway.
        with contextlib.suppress(Exception):
            kafka_admin.delete_topics(created)


@pytest.fixture
def topic(make_topic: TopicFactory) -> str:
    return make_topic()


@pytest.fixture
def producer(kafka_bootstrap: str) -> Iterator[KafkaProducer]:
    """A plain bytes producer; tests flush it after sending.

    One per test: kafka-python 3.0.12's producer that sends to a topic after
    another topic it wrote to was deleted spins its network thread at a full
    core, and a session's producer slowed every later test up to 40-fold."""
    prod = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    yield prod
    prod.close()
