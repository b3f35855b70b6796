"""The poison corpus among a shop's stream, through the running service on the real broker."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from testkit.pipeline import Pipeline
from testkit.poison import POISON, Poison, hostile_but_valid

MIB = 1024 * 1024
Position = tuple[str, int, int]


def _produce(
    bootstrap: str, records: list[tuple[str, bytes | None, bytes | None]]
) -> list[Position]:
    """Write records in order (large ones included) and learn where each landed."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=20 * MIB)
    try:
        futures = [producer.send(topic, key=key, value=value) for topic, key, value in records]
        producer.flush()
        metadata = [future.get(timeout=30) for future in futures]
        return [(m.topic, m.partition, m.offset) for m in metadata]
    finally:
        producer.close()


def _dead_letters(bootstrap: str, topic: str, want: int) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    try:
        letters: list[Any] = []
        deadline = time.monotonic() + 30
        while len(letters) < want and time.monotonic() < deadline:
            letters.extend(consumer)
        return letters
    finally:
        consumer.close()


def test_every_poison_is_dead_lettered_with_its_reason_and_the_shop_arrives_whole(
    pipeline: Pipeline, kafka_admin: KafkaAdminClient
) -> None:
    customers_topic = pipeline.topics[0]
    # The corpus holds records of 10 and 16 MiB (one over the record limit): let the
    # topics take them.
    kafka_admin.alter_configs(
        [
            ConfigResource(
                ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(20 * MIB)}
            )
            for topic in pipeline.topics
        ]
    )
    shop = pipeline.shop(seed=43)
    shop.workload(customers=20, guest_orders=4)

    # The shop's records in order; after some customer records, the same record
    # with a hostile column the mapping never sends (it must change nothing);
    # every few records, one poison.
    records: list[tuple[str, bytes | None, bytes | None]] = []
    poison_at: dict[int, Poison] = {}
    poisons = list(POISON)
    hostile = 0
    for number, record in enumerate(shop.records):
        records.append((record.topic, record.key, record.value))
        if record.topic == customers_topic and record.value is not None and number % 3 == 0:
            for _name, value in hostile_but_valid(record.value):
                records.append((record.topic, record.key, value))
                hostile += 1
        if poisons and number % 4 == 1:
            poison = poisons.pop()
            poison_at[len(records)] = poison
            records.append((poison.topic(pipeline.prefix), poison.key, poison.value))
    for poison in poisons:
        poison_at[len(records)] = poison
        records.append((poison.topic(pipeline.prefix), poison.key, poison.value))
    assert hostile > 0
    landed = _produce(pipeline.bootstrap, records)
    expected = {landed[index]: poison for index, poison in poison_at.items()}
    assert len(expected) == len(POISON)

    service = pipeline.start()
    pipeline.wait_caught_up(service, timeout=180)
    pipeline.wait_equal(shop, timeout=30)
    assert service.running(), "the service must never exit for a record"

    letters = _dead_letters(pipeline.bootstrap, pipeline.dead_letters, len(POISON))
    found: dict[Position, str] = {}
    for letter in letters:
        headers = {name: (value or b"").decode("utf-8") for name, value in letter.headers}
        position = (
            headers["rfmcube.source.topic"],
            int(headers["rfmcube.source.partition"]),
            int(headers["rfmcube.source.offset"]),
        )
        found[position] = headers["rfmcube.reason"]
        if expected[position].name == "a record over the size limit":
            assert headers["rfmcube.truncated"] == "value"
            assert int(headers["rfmcube.original.bytes"]) > 16 * MIB
            assert len(letter.value) < MIB
    assert set(found) == set(expected), "every poison, and nothing else, is dead-lettered"
    for position, poison in expected.items():
        assert poison.reason in found[position], (poison.name, found[position])

    assert service.stop() == 0
    assert "Traceback" not in service.log()
