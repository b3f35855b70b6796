"""A standby's follower on the real broker: the store follows every partition outside
the group, drops what the active's commits show delivered (below their floors),
and says when it has caught up with them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from consumer.changes.mapping import Mapping
from consumer.checkpoint import CommitMark
from consumer.ingest import Ingest
from consumer.recovery.follower import Follower
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from testkit.shop import Shop, topics_for
from testkit.workbench import mapping_for_prefix, produce, recreate_topics

pytestmark = pytest.mark.kafka


def _commit(bootstrap: str, group: str, marks: dict[tuple[str, int], tuple[int, str]]) -> None:
    """What the active's commits look like (a consumer of the group that never joins)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.commit(
            {TopicPartition(*tp): OffsetAndMetadata(o, m, -1) for tp, (o, m) in marks.items()}
        )
    finally:
        consumer.close()


def _order_id(key: bytes) -> str:
    payload = orjson.loads(key)
    return str(payload.get("payload", payload)["id"])


async def test_it_follows_prunes_below_the_floors_and_says_when_it_caught_up(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"follow{tmp_path.name[-6:]}"
    topics = list(topics_for(prefix).values())
    recreate_topics(kafka_bootstrap, topics, partitions=1)
    shop = Shop(prefix=prefix, seed=5)
    for _ in range(6):
        shop.place_order(shop.sign_up(), items=1)
    produce(kafka_bootstrap, [(r.topic, r.key, r.value) for r in shop.records])
    (tmp_path / "mapping.yaml").write_text(mapping_for_prefix(prefix))
    obligations = Obligations(StateStore(tmp_path / "standby.db"))
    ingest = Ingest(obligations, Mapping.load(tmp_path / "mapping.yaml"), dead_letter=print)
    group = f"{prefix}-group"
    follower = Follower(
        ingest,
        obligations,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        topics=topics,
        extra={},
        prune_every=0.2,
    )
    ends = {(t, 0): sum(1 for r in shop.records if r.topic == t) for t in topics}
    stop = asyncio.Event()
    following = asyncio.create_task(follower.run(lambda: not stop.is_set()))
    try:
        async with asyncio.timeout(30):
            while ingest.applied != ends:
                await asyncio.sleep(0.1)
        owed = obligations.owed_count()
        assert owed == 12  # six customers, six orders: as the active owed them
        assert not follower.caught_up(15)  # no commits read yet
        # The active committed everything, but an import is pending: the floor of
        # the orders' partition stays at 2, so what its records touched stays owed.
        orders = topics_for(prefix)["orders"]
        marks = {
            tp: (end, CommitMark("active", 2 if tp[0] == orders else end, ("p-1",)).encode())
            for tp, end in ends.items()
        }
        _commit(kafka_bootstrap, group, marks)
        async with asyncio.timeout(30):
            while obligations.owed_count() == owed:
                await asyncio.sleep(0.1)
        order_records = [r for r in shop.records if r.topic == orders]
        waiting = {_order_id(r.key) for offset, r in enumerate(order_records) if offset >= 2}
        assert {doc.ref[1] for doc in obligations.take(100)} == waiting
        assert follower.caught_up(15)
    finally:
        stop.set()
        await following
