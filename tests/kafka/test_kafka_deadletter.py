"""Dead letters on the real broker: what goes in comes back with its reason and origin."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from consumer.deadletter import DeadLetterFailed, DeadLetters
from schemas.debezium import Position, RawRecord

pytestmark = pytest.mark.kafka


def read_all(bootstrap: str, topic: str, want: int) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while len(got) < want and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=200).values():
                got.extend(messages)
        return got
    finally:
        consumer.close(autocommit=False)


def test_dead_letters_come_back_with_key_value_reason_and_position(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("dlq", 1)
    record = RawRecord(
        "shop.public.orders",
        2,
        41,
        key=b'{"id":7}',
        value=b"\x00not json",
        headers=(("trace", b"abc"), ("empty", None)),
    )
    dead = DeadLetters(kafka_bootstrap, topic, extra={"session_timeout_ms": 6000})
    try:
        dead.send(record, "cannot decode: bad magic byte \u00e9")
        dead.send_entity(
            Position("shop.public.customers", 0, 9), b"c-9", b'{"id":"c-9"}', "422: email"
        )
        dead.flush()
        assert dead.count == 2
    finally:
        dead.close()

    first, second = read_all(kafka_bootstrap, topic, 2)
    assert (first.key, first.value) == (record.key, record.value)
    assert dict(first.headers) == {
        "trace": b"abc",
        "empty": b"",
        "rfmcube.reason": "cannot decode: bad magic byte \u00e9".encode(),
        "rfmcube.source.topic": b"shop.public.orders",
        "rfmcube.source.partition": b"2",
        "rfmcube.source.offset": b"41",
        "rfmcube.kind": b"record",
    }
    assert (second.key, second.value) == (b"c-9", b'{"id":"c-9"}')
    assert dict(second.headers) == {
        "rfmcube.reason": b"422: email",
        "rfmcube.source.topic": b"shop.public.customers",
        "rfmcube.source.partition": b"0",
        "rfmcube.source.offset": b"9",
        "rfmcube.kind": b"entity",
    }


def test_flush_with_nothing_sent_returns_at_once(kafka_bootstrap: str, topic: str) -> None:
    dead = DeadLetters(kafka_bootstrap, topic)
    try:
        started = time.monotonic()
        dead.flush()
        assert time.monotonic() - started < 1
        assert dead.count == 0
    finally:
        dead.close()


def test_a_dead_letter_the_broker_refuses_fails_every_later_flush(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient
) -> None:
    topic = f"dlq-small-{uuid.uuid4().hex[:10]}"
    kafka_admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "300"})])
    dead = DeadLetters(kafka_bootstrap, topic)
    try:
        dead.send_entity(Position("t", 0, 1), None, b"x" * 2000, "422")
        with pytest.raises(DeadLetterFailed, match="lost"):
            dead.flush()
        with pytest.raises(DeadLetterFailed):
            dead.flush()  # still: offsets past the lost one must never commit
    finally:
        dead.close()
        kafka_admin.delete_topics([topic])
