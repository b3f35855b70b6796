"""Running it: bounded shutdown in every state, health from the first second, bounded work."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from consumer.app.shutdown import SHUTDOWN_MARGIN_SECONDS
from testkit.pipeline import Pipeline, until
from testkit.workbench import ServiceProcess, descendants, listening_pid

GRACE = 4.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            status: int = answer.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _stops_within_grace(service: ServiceProcess) -> None:
    """SIGTERM ends the process within the configured grace plus 5 s, whatever waits."""
    assert service.process is not None
    started = time.monotonic()
    code = service.stop(timeout=GRACE + 15)
    took = time.monotonic() - started
    assert code == 0, service.log()[-3000:]
    assert SHUTDOWN_MARGIN_SECONDS < 5
    assert took < GRACE + 5, f"took {took:.1f} s to stop\n{service.log()[-3000:]}"


# Serial (alone under xdist): it freezes the broker every test shares, and bounds the stop.
@pytest.mark.serial
@pytest.mark.parametrize("consumer_process", [False, True], ids=["thread", "process"])
def test_sigterm_with_the_broker_lost_mid_stream_stops_within_the_grace(
    pipeline: Pipeline, consumer_process: bool
) -> None:
    """The broker stops answering (its process frozen: no reset, no answer) while work
    is owed and commits are due: the stop must not wait for it."""
    port = int(pipeline.bootstrap.rsplit(":", 1)[1])
    broker = listening_pid(port)
    assert broker is not None, f"no process listens on {pipeline.bootstrap}"
    pipeline.api.change(latency_ms=1500)  # requests in flight when the broker goes
    shop = pipeline.shop(seed=84)
    shop.workload(customers=20, guest_orders=3)
    service = pipeline.start(
        kafka={"consumer_process": consumer_process}, service={"shutdown_grace_seconds": GRACE}
    )
    until(lambda: "active for 9 partitions" in service.log(), 30, "an active", service.log)
    pipeline.write_shop(shop)
    until(lambda: pipeline.api.requests(), 30, "a first request", service.log)
    os.kill(broker, signal.SIGSTOP)
    try:
        time.sleep(1.0)
        _stops_within_grace(service)
    finally:
        os.kill(broker, signal.SIGCONT)
    service = pipeline.start()  # nothing was lost: what was owed goes out now
    until(lambda: "active for 9 partitions" in service.log(), 60, "an active", service.log)
    pipeline.wait_caught_up(service)
    pipeline.wait_equal(shop, timeout=30)
    assert service.stop() == 0


@pytest.mark.serial  # the stop's bound (grace + 5 s): no other test's load
def test_health_answers_while_kafka_is_unreachable_and_sigterm_stops_it(
    pipeline: Pipeline,
) -> None:
    port = _free_port()
    service = pipeline.start(
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        service={"health_port": port, "health_host": "127.0.0.1", "shutdown_grace_seconds": GRACE},
    )
    until(lambda: _status(port, "/healthz") == 200, 20, "/healthz", service.log)
    assert _status(port, "/readyz") == 503
    time.sleep(2.0)
    assert _status(port, "/healthz") == 200 and _status(port, "/readyz") == 503
    _stops_within_grace(service)


@pytest.mark.serial  # the stop's bound (grace + 5 s): no other test's load
def test_sigterm_during_an_api_outage_stops_within_the_grace(pipeline: Pipeline) -> None:
    pipeline.api.change(outage=True)
    shop = pipeline.shop(seed=83)
    shop.workload(customers=10, guest_orders=2)
    pipeline.write_shop(shop)
    service = pipeline.start(service={"shutdown_grace_seconds": GRACE})
    until(
        lambda: any(r["status"] == 0 for r in pipeline.api.requests()),
        30,
        "a send into the outage",
        service.log,
    )
    _stops_within_grace(service)
    pipeline.api.change(outage=False)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    pipeline.wait_equal(shop, timeout=30)
    assert service.stop() == 0


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_dead_consumer_process_stops_the_service_with_code_5_and_loses_nothing(
    pipeline: Pipeline,
) -> None:
    """The consumer's child process is SIGKILLed while the service owes the API work
    (an outage): the service must notice and exit, not stall as a live pod that reads
    nothing, and a restart must deliver everything."""
    shop = pipeline.shop(seed=89)
    shop.workload(customers=10, guest_orders=2)
    pipeline.write_shop(shop)
    pipeline.api.change(outage=True)
    service = pipeline.start(
        kafka={"consumer_process": True}, service={"shutdown_grace_seconds": GRACE}
    )
    assert service.process is not None
    until(
        lambda: any(r["status"] == 0 for r in pipeline.api.requests()),
        30,
        "a send into the outage",
        service.log,
    )
    # multiprocessing's spawn also starts its resource tracker: the consumer is spawn_main
    children = [pid for pid in descendants(service.process.pid) if b"spawn_main" in _cmdline(pid)]
    assert len(children) == 1, children
    os.kill(children[0], signal.SIGKILL)
    started = time.monotonic()
    code = service.process.wait(timeout=GRACE + 20)
    assert code == 5, service.log()[-3000:]
    assert time.monotonic() - started < GRACE + 15
    assert "the Kafka source process died unexpectedly" in service.log()

    pipeline.api.change(outage=False)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    pipeline.wait_equal(shop, timeout=30)
    assert service.stop() == 0


@pytest.mark.serial  # the stop's bound (grace + 5 s): no other test's load
def test_sigterm_during_a_long_429_pause_stops_within_the_grace(pipeline: Pipeline) -> None:
    # The server allows one request an hour; the service believes it may send more.
    pipeline.api.change(requests_per_minute=1, window_seconds=3600)
    shop = pipeline.shop(seed=89)
    shop.workload(customers=10, guest_orders=2)
    pipeline.write_shop(shop)
    service = pipeline.start(service={"shutdown_grace_seconds": GRACE})
    until(
        lambda: any(r["status"] == 429 for r in pipeline.api.requests()),
        30,
        "a 429",
        service.log,
    )
    _stops_within_grace(service)
    assert "waiting 600 s" in service.log()  # the hour asked for is cut to the cap


@pytest.mark.serial  # the stop's bound (grace + 5 s): no other test's load
def test_sigterm_during_the_start_up_restore_stops_within_the_grace(
    pipeline: Pipeline, kafka_bootstrap: str
) -> None:
    # A group that committed a large shop, and a store that is empty: a long restore.
    shop = pipeline.shop(seed=97)
    shop.workload(customers=300, guest_orders=40)
    records = [(r.topic, r.key, r.value) for r in shop.records]
    pipeline.write(records * 12)
    _commit_everything(kafka_bootstrap, pipeline.group, pipeline.topics)
    port = _free_port()
    service = pipeline.start(
        service={"health_port": port, "health_host": "127.0.0.1", "shutdown_grace_seconds": GRACE}
    )
    until(lambda: "restoring the store" in service.log(), 30, "the restore", service.log)
    assert _status(port, "/healthz") == 200 and _status(port, "/readyz") == 503
    _stops_within_grace(service)
    assert "store restored" not in service.log(), "the restore ended before SIGTERM"
    # What the restore did not finish, the next start finishes, sending nothing.
    service = pipeline.start()
    until(lambda: "store restored" in service.log(), 120, "the restore", service.log)
    assert service.stop() == 0
    assert pipeline.api.requests() == []


def _commit_everything(bootstrap: str, group: str, topics: list[str]) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.partitions_for_topic(topic)
        ]
        ends = consumer.end_offsets(partitions)
        consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
    finally:
        consumer.close()


def test_records_with_large_headers_never_pause_reading_for_good(
    pipeline: Pipeline, kafka_bootstrap: str
) -> None:
    # Debezium's add.headers: every record carries headers; they count in the bound.
    shop = pipeline.shop(seed=101)
    shop.workload(customers=30, guest_orders=6)
    service = pipeline.start(kafka={"max_pending_bytes": 200_000})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        bursts = 4  # several polls: what one batch leaves counted must not add up
        size = len(shop.records)
        for burst in range(bursts):
            for record in shop.records[size * burst // bursts : size * (burst + 1) // bursts]:
                producer.send(
                    record.topic,
                    key=record.key,
                    value=record.value,
                    headers=[("__debezium.context", b"x" * 4000)],
                )
            producer.flush()
            time.sleep(1.0)
    finally:
        producer.close()
    pipeline.wait_caught_up(service, timeout=90)
    pipeline.wait_equal(shop, timeout=30)
    assert service.stop() == 0


@pytest.mark.parametrize("bound", [5])
def test_reading_pauses_above_the_owed_bound_and_resumes_below_it(
    pipeline: Pipeline, bound: int
) -> None:
    pipeline.api.change(outage=True)
    shop = pipeline.shop(seed=103)
    shop.workload(customers=30, guest_orders=6)
    pipeline.write_shop(shop)
    service = pipeline.start(store={"max_owed_documents": bound})
    until(lambda: "pausing reading" in service.log(), 30, "the pause", service.log)
    pipeline.api.change(outage=False)
    pipeline.wait_caught_up(service, timeout=90)
    pipeline.wait_equal(shop, timeout=30)
    # The owed documents are counted once a second: the resume may follow the
    # last commit (every record may have been read before the pause took hold).
    until(lambda: "resuming reading" in service.log(), 10, "the resume", service.log)
    assert service.stop() == 0
