"""Session-wide fixtures: the real Kafka broker, fresh topics, a producer; and what
the xdist workers of one run share (``make test`` runs ``-n 2``, see testkit/shared.py):
the services of scripts/, started once per run and stopped at its end if it started
them, and the turns that let a test marked ``serial`` run with no other beside it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from testkit.e2e.scripts import start_script
from testkit.shared import SharedServices, turn

RUN_FOLDER = pytest.StashKey[Path]()
WORKER_KEY = "rfmcube_run_folder"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # pytest alone, or xdist's controller
        config.stash[RUN_FOLDER] = Path(tempfile.mkdtemp(prefix="rfmcube-run-"))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist's controller, for each worker: the run's folder."""
    node.workerinput[WORKER_KEY] = str(node.config.stash[RUN_FOLDER])  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Once every worker has ended: stop what the run started."""
    folder = config.stash.get(RUN_FOLDER, None)
    if folder is None:
        return
    SharedServices(folder).stop_started()
    shutil.rmtree(folder, ignore_errors=True)


def run_folder(config: pytest.Config) -> Path:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return Path(workerinput[WORKER_KEY])
    return config.stash[RUN_FOLDER]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Under xdist, each test (its set-up, with any session fixture it starts, its
    call and its teardown) in its turn: alone if marked ``serial``."""
    if not hasattr(item.config, "workerinput"):
        return (yield)
    alone = item.get_closest_marker("serial") is not None
    with turn(run_folder(item.config), alone=alone):
        return (yield)


@pytest.fixture(scope="session")
def shared_services(pytestconfig: pytest.Config) -> SharedServices:
    """The services of scripts/ this run shares between its workers."""
    return SharedServices(run_folder(pytestconfig))


@pytest.fixture(scope="session")
def kafka_bootstrap(shared_services: SharedServices) -> str:
    """The bootstrap address of a real broker: $KAFKA_BOOTSTRAP_SERVERS, else the one
    of scripts/kafka (started if needed, and stopped at the end if this run started it)."""
    preset = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if preset:
        return preset
    try:
        return shared_services.use("kafka", lambda: start_script("kafka"))
    except RuntimeError as error:
        pytest.fail(f"could not start the broker: {error}")


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
