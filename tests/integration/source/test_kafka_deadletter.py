"""Dead letters on the real broker: what goes in comes back with its reason and origin."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import MessageSizeTooLargeError

from consumer.source.deadletter import DeadLetterFailed, DeadLetters
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
            Position("shop.public.customers", 0, 9),
            b"customer:9",
            b'{"id":"9"}',
            "import rejected: import: rejected (422): email",
        )
        dead.send_entity(
            Position("", -1, -1), b"order:5", b"", "order 5: neither customer id nor email"
        )
        dead.flush()
        assert dead.count == 3
    finally:
        dead.close()

    first, second, third = read_all(kafka_bootstrap, topic, 3)
    assert (first.key, first.value) == (record.key, record.value)
    assert dict(first.headers) == {
        "trace": b"abc",
        "empty": b"",
        "rfmcube.reason": "cannot decode: bad magic byte \u00e9".encode(),
        "rfmcube.source.topic": b"shop.public.orders",
        "rfmcube.source.partition": b"2",
        "rfmcube.source.offset": b"41",
        "rfmcube.kind": b"record",
        # Kafka Connect's dead-letter headers, for the tooling that reads them
        "__connect.errors.topic": b"shop.public.orders",
        "__connect.errors.partition": b"2",
        "__connect.errors.offset": b"41",
        "__connect.errors.exception.class.name": b"consumer.errors.BadRecord",
        "__connect.errors.exception.message": "cannot decode: bad magic byte \u00e9".encode(),
    }
    assert (second.key, second.value) == (b"customer:9", b'{"id":"9"}')
    assert dict(second.headers) == {
        "rfmcube.reason": b"import rejected: import: rejected (422): email",
        "rfmcube.source.topic": b"shop.public.customers",
        "rfmcube.source.partition": b"0",
        "rfmcube.source.offset": b"9",
        "rfmcube.kind": b"entity",
        "__connect.errors.topic": b"shop.public.customers",
        "__connect.errors.partition": b"0",
        "__connect.errors.offset": b"9",
        "__connect.errors.exception.class.name": b"consumer.errors.ApiRejected",
        "__connect.errors.exception.message": b"import rejected: import: rejected (422): email",
    }
    # A document no record holds any more: no position to name, for Connect either.
    headers = dict(third.headers)
    assert headers["rfmcube.source.topic"] == b"" and "__connect.errors.topic" not in headers
    assert headers["__connect.errors.exception.class.name"] == b"consumer.errors.BadRecord"


def test_flush_with_nothing_sent_returns_at_once(kafka_bootstrap: str, topic: str) -> None:
    dead = DeadLetters(kafka_bootstrap, topic)
    try:
        started = time.monotonic()
        dead.flush()
        assert time.monotonic() - started < 1
        assert dead.count == 0
    finally:
        dead.close()


def _topic_with(admin: KafkaAdminClient, **configs: str) -> str:
    name = f"dlq-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
    return name


def test_a_dead_letter_larger_than_the_topic_allows_is_cut_and_says_so(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient
) -> None:
    topic = _topic_with(kafka_admin, **{"max.message.bytes": "1000"})
    big = RawRecord("shop.public.orders", 2, 41, b"k" * 50, b"v" * 5000, (("trace", b"abc"),))
    small = RawRecord("shop.public.orders", 2, 42, b"k", b"v", ())
    dead = DeadLetters(kafka_bootstrap, topic)
    try:
        dead.send(big, "column \ud800: a lone surrogate in a column name")
        dead.send(small, "truncated JSON")
        dead.flush()
        assert (dead.count, dead.truncated) == (2, 1)
        # the cut one was sent again: it comes after the other
        second, first = read_all(kafka_bootstrap, topic, 2)
    finally:
        dead.close()
        kafka_admin.delete_topics([topic])
    headers = dict(first.headers)
    assert first.key == big.key
    assert 0 < len(first.value) < 1000 and big.value.startswith(first.value)
    assert headers["rfmcube.truncated"] == b"value"
    assert headers["rfmcube.original.bytes"] == b"5050"
    assert headers["rfmcube.reason"] == b"column \\ud800: a lone surrogate in a column name"
    assert headers["rfmcube.source.offset"] == b"41" and headers["trace"] == b"abc"
    # the partition takes other dead letters whole
    assert (second.key, second.value) == (b"k", b"v")
    assert "rfmcube.truncated" not in dict(second.headers)


def test_a_record_over_the_producers_max_request_size_is_cut_before_it_is_sent(
    kafka_bootstrap: str, topic: str
) -> None:
    # kafka-python refuses it in send() itself, not through the future
    plain = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4096)
    try:
        with pytest.raises(MessageSizeTooLargeError):
            plain.send(topic, value=b"v" * 100_000)
    finally:
        plain.close()
    dead = DeadLetters(kafka_bootstrap, topic, extra={"max_request_size": 4096})
    try:
        dead.send(RawRecord("shop.public.customers", 0, 9, None, b"v" * 100_000), "too big")
        dead.flush()
    finally:
        dead.close()
    (letter,) = read_all(kafka_bootstrap, topic, 1)
    assert letter.key is None and 3000 < len(letter.value) < 4096
    assert dict(letter.headers)["rfmcube.original.bytes"] == b"100000"


def test_a_topic_that_refuses_even_a_cut_dead_letter_fails_every_later_flush(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient
) -> None:
    topic = _topic_with(kafka_admin, **{"max.message.bytes": "100"})
    dead = DeadLetters(kafka_bootstrap, topic)
    try:
        dead.send_entity(Position("t", 0, 1), None, b"x" * 2000, "422")
        with pytest.raises(DeadLetterFailed, match=r"raise the topic's max\.message\.bytes"):
            dead.flush()
        with pytest.raises(DeadLetterFailed):
            dead.flush()  # still: offsets past the lost one must never commit
    finally:
        dead.close()
        kafka_admin.delete_topics([topic])


def test_a_topic_that_refuses_a_record_says_what_to_fix(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient
) -> None:
    # a compacted topic refuses a record without a key: a misconfigured dead-letter topic
    topic = _topic_with(kafka_admin, **{"cleanup.policy": "compact"})
    dead = DeadLetters(kafka_bootstrap, topic)
    try:
        dead.send(RawRecord("shop.public.orders", 0, 3, None, b"x"), "value is not JSON")
        with pytest.raises(DeadLetterFailed) as caught:
            dead.flush()
        message = str(caught.value)
        assert "\n" not in message
        assert f"a dead letter to {topic} was lost (InvalidRecordError)" in message
        assert "use cleanup.policy=delete" in message
    finally:
        dead.close()
        kafka_admin.delete_topics([topic])
