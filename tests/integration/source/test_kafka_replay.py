"""Replay of the topics up to the group's committed offsets, on the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from consumer.source.replay import committed_offsets, end_offsets, partitions_of, replay
from schemas.debezium import RawRecord

pytestmark = pytest.mark.kafka


def fill(producer: KafkaProducer, topic: str, per_partition: dict[int, int]) -> None:
    for partition, count in per_partition.items():
        for i in range(count):
            producer.send(topic, key=f"{partition}-{i}".encode(), value=b"v", partition=partition)
    producer.flush()


def commit_as_group(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.commit(
            {TopicPartition(*tp): OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
        )
    finally:
        consumer.close(autocommit=False)


def positions(batches: list[list[RawRecord]]) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for batch in batches for r in batch]


def test_replay_from_nothing_returns_exactly_the_records_below_the_committed_offsets(
    kafka_bootstrap: str, make_topic: Callable[..., str], producer: KafkaProducer
) -> None:
    topic = make_topic("replay", 3)
    fill(producer, topic, {0: 12, 1: 5, 2: 0})
    group = f"g-{uuid.uuid4().hex[:10]}"
    commit_as_group(kafka_bootstrap, group, {(topic, 0): 7, (topic, 1): 5})

    partitions = partitions_of(kafka_bootstrap, [topic])
    assert partitions == [(topic, 0), (topic, 1), (topic, 2)]
    committed = committed_offsets(kafka_bootstrap, group, partitions)
    assert committed == {(topic, 0): 7, (topic, 1): 5, (topic, 2): None}
    assert end_offsets(kafka_bootstrap, partitions) == {
        (topic, 0): 12,
        (topic, 1): 5,
        (topic, 2): 0,
    }

    end = {tp: offset for tp, offset in committed.items() if offset is not None}
    batches = list(replay(kafka_bootstrap, {}, end, batch_size=4))
    got = positions(batches)
    assert sorted(got) == [(0, o) for o in range(7)] + [(1, o) for o in range(5)]
    for partition in (0, 1):  # offset order within a partition
        mine = [o for p, o in got if p == partition]
        assert mine == sorted(mine)
    assert all(0 < len(batch) <= 4 for batch in batches)
    assert all(r.key == f"{r.partition}-{r.offset}".encode() for b in batches for r in b)


def test_replay_starts_at_the_given_offsets_and_skips_partitions_already_done(
    kafka_bootstrap: str, make_topic: Callable[..., str], producer: KafkaProducer
) -> None:
    topic = make_topic("replay", 3)
    fill(producer, topic, {0: 10, 1: 10, 2: 10})
    start = {(topic, 0): 6, (topic, 1): 8, (topic, 2): 9}
    end = {(topic, 0): 9, (topic, 1): 8, (topic, 2): 10}
    got = positions(list(replay(kafka_bootstrap, start, end)))
    assert sorted(got) == [(0, 6), (0, 7), (0, 8), (2, 9)]


def test_replay_with_end_offsets_of_zero_or_an_empty_partition_yields_nothing(
    kafka_bootstrap: str, make_topic: Callable[..., str], producer: KafkaProducer
) -> None:
    topic = make_topic("replay", 2)
    fill(producer, topic, {0: 3})
    assert list(replay(kafka_bootstrap, {}, {(topic, 0): 0, (topic, 1): 0})) == []
    assert list(replay(kafka_bootstrap, {}, {})) == []
    # A partition that stays empty does not hold up the others.
    got = positions(list(replay(kafka_bootstrap, {}, {(topic, 0): 3, (topic, 1): 0})))
    assert got == [(0, 0), (0, 1), (0, 2)]


def test_replay_ends_at_a_gap_left_by_transaction_markers(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    # A transactional producer leaves a commit marker after its records: the
    # offset just below the log end holds no record, as after compaction.
    topic = make_topic("replay", 1)
    txn = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"tx-{topic}")
    try:
        txn.init_transactions()
        txn.begin_transaction()
        for i in range(3):
            txn.send(topic, key=str(i).encode(), value=b"v", partition=0)
        txn.commit_transaction()
    finally:
        txn.close()
    end = end_offsets(kafka_bootstrap, [(topic, 0)])
    assert end == {(topic, 0): 4}  # three records and one marker
    got = positions(list(replay(kafka_bootstrap, {}, end, stall_timeout_s=10)))
    assert got == [(0, 0), (0, 1), (0, 2)]
