"""A rebalance never makes the source skip records it had polled but not handed over."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumer.source.base import SourceSettings, batch_bytes
from consumer.source.thread import KafkaSource
from schemas.debezium import RawRecord

pytestmark = pytest.mark.kafka

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 300}


async def test_records_polled_before_a_rebalance_are_delivered_after_it(
    kafka_bootstrap: str, make_topic: Callable[..., str], producer: KafkaProducer
) -> None:
    topic = make_topic("rebalance", 2)
    group = f"g-{uuid.uuid4().hex[:10]}"
    for i in range(40):
        producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2)
    producer.flush()
    source = KafkaSource(
        SourceSettings(kafka_bootstrap, group, (topic,), extra=FAST_GROUP, single_active=False)
    )
    source.start(asyncio.get_running_loop())
    try:
        # The source polls both partitions; nobody takes the records yet.
        async with asyncio.timeout(20):
            while len(source.assignment()) < 2 or source.waiting_records() < 40:
                await asyncio.sleep(0.1)
        # A member joins and leaves: two rebalances; the source keeps a partition
        # through the first and gets both back in the second.
        other = KafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            **FAST_GROUP,
        )
        async with asyncio.timeout(30):
            while not other.assignment():
                await asyncio.to_thread(other.poll, 200)
        await asyncio.to_thread(other.close, autocommit=False)
        got: list[RawRecord] = []
        async with asyncio.timeout(30):
            while {(r.partition, r.offset) for r in got} != {
                (p, o) for p in (0, 1) for o in range(20)
            }:
                batch = await source.get()
                got.extend(batch)
                source.release(batch_bytes(batch))
    finally:
        await source.stop()
