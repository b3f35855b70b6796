"""KafkaSource on the real broker: delivery, commits, back-pressure, rebalances, shutdown.

The same tests run against ProcessSource, the consumer in a child process, which
must behave the same; what only a child process can do (die) is tested below."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from kafka import KafkaProducer

from consumer.errors import CommitFailed, SourceError
from consumer.source.base import SourceSettings, batch_bytes
from consumer.source.process import ProcessSource
from consumer.source.thread import KafkaSource
from schemas.debezium import RawRecord

pytestmark = pytest.mark.kafka

# Small group timeouts keep rebalances quick (6 s is the broker's minimum session).
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 300}

Produced = tuple[str, int, int, bytes, bytes, tuple[tuple[str, bytes], ...]]


def produce(producer: KafkaProducer, topic: str, count: int, partitions: int) -> list[Produced]:
    """Sends ``count`` records round-robin over the partitions; returns what was written."""
    futures = []
    for i in range(count):
        key, value = f"k{i}".encode(), f"v{i}".encode()
        headers = [("trace", f"t{i}".encode())]
        partition = i % partitions
        future = producer.send(topic, key=key, value=value, headers=headers, partition=partition)
        futures.append((future, key, value, tuple(headers)))
    producer.flush()
    written: list[Produced] = []
    for future, key, value, sent_headers in futures:
        meta = future.get(timeout=10)
        written.append((topic, meta.partition, meta.offset, key, value, sent_headers))
    return written


def as_tuple(r: RawRecord) -> Produced:
    assert r.key is not None and r.value is not None
    headers = tuple((name, value or b"") for name, value in r.headers)
    return (r.topic, r.partition, r.offset, r.key, r.value, headers)


def settings(bootstrap: str, topic: str, group: str, **kw: Any) -> SourceSettings:
    extra = {**FAST_GROUP, **kw.pop("extra", {})}
    return SourceSettings(bootstrap, group, (topic,), extra=extra, **kw)


async def collect(source: Source, want: int, timeout: float = 20.0) -> list[RawRecord]:
    got: list[RawRecord] = []
    async with asyncio.timeout(timeout):
        while len(got) < want:
            batch = await source.get()
            got.extend(batch)
            source.release(batch_bytes(batch))
    return got


async def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


Source = KafkaSource | ProcessSource
SourceClass = type[KafkaSource] | type[ProcessSource]


@pytest.fixture(params=[KafkaSource, ProcessSource], ids=["thread", "process"])
def source_class(request: pytest.FixtureRequest) -> SourceClass:
    cls: SourceClass = request.param
    return cls


def group_name() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


async def test_every_produced_record_arrives_with_its_position_key_value_and_headers(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    producer: KafkaProducer,
    source_class: SourceClass,
) -> None:
    topic = make_topic("src", 3)
    written = produce(producer, topic, 30, 3)
    source = source_class(settings(kafka_bootstrap, topic, group_name()))
    source.start(asyncio.get_running_loop())
    try:
        got = await collect(source, 30)
    finally:
        await source.stop()
    assert sorted(as_tuple(r) for r in got) == sorted(written)
    assert all(r.timestamp_ms is not None for r in got)


async def test_committed_offsets_are_where_the_next_member_of_the_group_resumes(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    producer: KafkaProducer,
    source_class: SourceClass,
) -> None:
    topic = make_topic("src", 3)
    produce(producer, topic, 30, 3)  # 10 per partition
    group = group_name()
    first = source_class(settings(kafka_bootstrap, topic, group))
    first.start(asyncio.get_running_loop())
    try:
        await collect(first, 30)
        commit = {(topic, 0): 4, (topic, 1): 10, (topic, 2): 0}
        await first.commit(commit)
        assert await first.committed(commit) == commit
    finally:
        await first.stop()

    second = source_class(settings(kafka_bootstrap, topic, group))
    second.start(asyncio.get_running_loop())
    try:
        got = await collect(second, 6 + 0 + 10)
        await asyncio.sleep(0.5)  # nothing more may come
        late = await asyncio.wait_for(_drain(second), 1.0)
    finally:
        await second.stop()
    offsets = sorted((r.partition, r.offset) for r in got + late)
    assert offsets == [(0, o) for o in range(4, 10)] + [(2, o) for o in range(10)]


async def _drain(source: Source) -> list[RawRecord]:
    try:
        return await asyncio.wait_for(source.get(), 0.3)
    except TimeoutError:
        return []


async def test_a_slow_consumer_is_paused_but_stays_in_the_group(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    producer: KafkaProducer,
    source_class: SourceClass,
) -> None:
    topic = make_topic("src", 3)
    produce(producer, topic, 60, 3)
    revoked: list[list[tuple[str, int]]] = []

    def on_revoke(partitions: list[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        revoked.append(partitions)
        return {}

    source = source_class(
        settings(
            kafka_bootstrap,
            topic,
            group_name(),
            max_pending_bytes=1,
            max_poll_records=5,
            extra={"max_poll_interval_ms": 3000},
        ),
        on_revoke=on_revoke,
    )
    source.start(asyncio.get_running_loop())
    try:
        held: list[RawRecord] = await source.get()  # never released for now
        await asyncio.sleep(5)  # longer than max_poll_interval_ms
        held += await _drain(source)
        assert 0 < len(held) <= 10  # paused after the first poll or two
        assert revoked == []  # no eviction, no rebalance
        assert len(source.assignment()) == 3

        source.release(batch_bytes(held))
        rest = await collect(source, 60 - len(held))
        everything = held + rest
        assert len({(r.partition, r.offset) for r in everything}) == 60
        ends = {(topic, p): 20 for p in range(3)}
        await source.commit(ends)
        assert await source.committed(ends) == ends
        assert revoked == []
    finally:
        await source.stop()


async def test_a_new_member_may_act_soon_after_its_assignment_not_a_heartbeat_later(
    kafka_bootstrap: str, make_topic: Callable[..., str], source_class: SourceClass
) -> None:
    """The lease starts with the first acknowledged heartbeat; kafka-python sends it one
    ``heartbeat_interval_ms`` after the join, which held back every first request (and
    every takeover) by that long. The service asks for it as soon as the join completes."""
    topic = make_topic("src", 3)
    interval_ms = 5000  # long enough that waiting for it cannot pass by chance
    source = source_class(
        settings(
            kafka_bootstrap,
            topic,
            group_name(),
            extra={"session_timeout_ms": 30_000, "heartbeat_interval_ms": interval_ms},
        )
    )
    source.start(asyncio.get_running_loop())
    try:
        await wait_until(lambda: len(source.assignment()) == 3)
        assigned_at = asyncio.get_running_loop().time()
        await wait_until(source.is_active, timeout=interval_ms / 1000 + 10)
        waited = asyncio.get_running_loop().time() - assigned_at
        assert waited < 1.5, f"the lease came {waited:.1f} s after the assignment"
    finally:
        await source.stop()


async def test_a_joining_member_makes_the_first_revoke_and_commit_what_on_revoke_returns(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    producer: KafkaProducer,
    source_class: SourceClass,
) -> None:
    topic = make_topic("src", 3)
    produce(producer, topic, 30, 3)
    group = group_name()
    loop = asyncio.get_running_loop()
    revoked: list[list[tuple[str, int]]] = []
    revoke_threads: list[threading.Thread] = []

    async def flush(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        # What the service does: finish work on the loop, then name the offsets to commit.
        await asyncio.sleep(0.05)
        return {tp: 3 + tp[1] for tp in partitions}

    def on_revoke(partitions: list[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        revoke_threads.append(threading.current_thread())
        revoked.append(partitions)
        return asyncio.run_coroutine_threadsafe(flush(partitions), loop).result(5)

    # Two members sharing the partitions: the range assignor, not the single-active one.
    shared = {"single_active": False}
    first = source_class(settings(kafka_bootstrap, topic, group, **shared), on_revoke=on_revoke)
    first.start(loop)
    second_assigned: list[list[tuple[str, int]]] = []
    second = source_class(
        settings(kafka_bootstrap, topic, group, **shared), on_assign=second_assigned.append
    )
    try:
        await collect(first, 30)
        assert first.assignment() == {(topic, p) for p in range(3)}

        second.start(loop)
        await wait_until(lambda: bool(second_assigned and second_assigned[-1]))
        assert revoked[0] == [(topic, 0), (topic, 1), (topic, 2)]
        assert threading.main_thread() not in revoke_threads
        assert await second.committed([(topic, p) for p in range(3)]) == {
            (topic, 0): 3,
            (topic, 1): 4,
            (topic, 2): 5,
        }
        # The second member reads its partitions from the offsets committed on revoke.
        mine = second_assigned[-1]
        got = await collect(second, sum(10 - (3 + p) for _, p in mine))
        first_offsets = {p: min(r.offset for r in got if r.partition == p) for _, p in mine}
        assert first_offsets == {p: 3 + p for _, p in mine}
        everything = {(topic, p) for p in range(3)}
        await wait_until(lambda: first.assignment() | second.assignment() == everything)
        assert not first.assignment() & second.assignment()
    finally:
        await second.stop()
        await first.stop()


async def test_stop_leaves_no_thread_running(
    kafka_bootstrap: str, make_topic: Callable[..., str], producer: KafkaProducer
) -> None:
    topic = make_topic("src", 1)
    produce(producer, topic, 3, 1)
    source = KafkaSource(settings(kafka_bootstrap, topic, group_name(), client_id="stop-test"))
    source.start(asyncio.get_running_loop())
    await collect(source, 3)
    names = {t.name for t in threading.enumerate()}
    assert any(name.startswith("kafka-source-") for name in names)
    await source.stop()
    left = [t.name for t in threading.enumerate() if t.is_alive()]
    assert not [n for n in left if n.startswith("kafka-source-") or n == "kafka-io-stop-test"]
    with pytest.raises(Exception, match="stopped"):
        await source.get()
    with pytest.raises(Exception, match="stopped"):
        await source.commit({(topic, 0): 1})


async def test_records_of_each_partition_cross_the_process_boundary_in_order(
    kafka_bootstrap: str, make_topic: Callable[..., str], producer: KafkaProducer
) -> None:
    topic = make_topic("src", 3)
    written = produce(producer, topic, 3000, 3)
    source = ProcessSource(settings(kafka_bootstrap, topic, group_name(), max_poll_records=100))
    source.start(asyncio.get_running_loop())
    try:
        got = await collect(source, 3000)
    finally:
        await source.stop()
    for partition in range(3):
        offsets = [r.offset for r in got if r.partition == partition]
        assert offsets == list(range(1000)), f"partition {partition} out of order"
    assert sorted(as_tuple(r) for r in got) == sorted(written)


async def test_a_dead_consumer_process_is_noticed_by_get_and_commit(
    kafka_bootstrap: str, make_topic: Callable[..., str], producer: KafkaProducer
) -> None:
    topic = make_topic("src", 1)
    produce(producer, topic, 3, 1)
    source = ProcessSource(settings(kafka_bootstrap, topic, group_name()))
    source.start(asyncio.get_running_loop())
    try:
        await collect(source, 3)
        pid = source.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # The service's ingest loop waits in get(): it must fail, not wait for ever.
        with pytest.raises(SourceError, match="process died unexpectedly"):
            await asyncio.wait_for(source.get(), 10)
        with pytest.raises(SourceError, match="died"):
            await source.commit({(topic, 0): 3})
        assert source.assignment() == set()
        assert not source.is_active()
    finally:
        await source.stop()


async def test_stop_leaves_no_consumer_process_and_leaves_the_group(
    kafka_bootstrap: str, make_topic: Callable[..., str], producer: KafkaProducer
) -> None:
    topic = make_topic("src", 1)
    produce(producer, topic, 3, 1)
    group = group_name()
    source = ProcessSource(settings(kafka_bootstrap, topic, group))
    source.start(asyncio.get_running_loop())
    await collect(source, 3)
    await source.commit({(topic, 0): 3})
    pid = source.pid()
    await source.stop()
    assert pid is not None and not _alive(pid)
    with pytest.raises(SourceError, match="stopped"):
        await source.get()
    # It left the group on close: a new member gets the partition at once,
    # not after the old one's session timed out.
    second = ProcessSource(settings(kafka_bootstrap, topic, group))
    second.start(asyncio.get_running_loop())
    try:
        await wait_until(lambda: second.assignment() == {(topic, 0)}, timeout=5.5)
        assert await second.committed([(topic, 0)]) == {(topic, 0): 3}
    finally:
        await second.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie until reaped counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


async def test_a_commit_racing_a_revocation_is_left_to_it_and_never_stops_the_source(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    producer: KafkaProducer,
    source_class: SourceClass,
) -> None:
    """The commit loop may ask to commit while the group takes the partitions away:
    that commit is refused as a CommitFailed (the revocation commits for itself),
    never as a failure of the source, which the service turns into exit 5."""
    topic = make_topic("src", 2)
    produce(producer, topic, 20, 2)
    group = group_name()
    loop = asyncio.get_running_loop()
    raced: list[BaseException | None] = []
    failures: list[BaseException] = []
    first: Source

    async def commit_now() -> None:
        try:
            await first.commit({(topic, 0): 1})
        except BaseException as exc:
            raced.append(exc)
        else:
            raced.append(None)

    def on_revoke(partitions: list[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        asyncio.run_coroutine_threadsafe(commit_now(), loop).result(5)
        return {tp: 2 for tp in partitions}

    async def commit_loop(stop: asyncio.Event) -> None:
        """What the service's commit loop does, as often as it can."""
        while not stop.is_set():
            try:
                await first.commit({tp: 1 for tp in first.assignment()})
            except CommitFailed:
                pass  # refused: the next round, or the next owner, commits
            except SourceError as exc:
                if not first.revoking():
                    failures.append(exc)
            await asyncio.sleep(0.005)

    shared = {"single_active": False}
    first = source_class(settings(kafka_bootstrap, topic, group, **shared), on_revoke=on_revoke)
    first.start(loop)
    second_assigned: list[list[tuple[str, int]]] = []
    second = source_class(
        settings(kafka_bootstrap, topic, group, **shared), on_assign=second_assigned.append
    )
    stop = asyncio.Event()
    hammer = asyncio.create_task(commit_loop(stop))
    try:
        await collect(first, 20)
        second.start(loop)
        await wait_until(lambda: bool(second_assigned and second_assigned[-1]))
        stop.set()
        await hammer
        assert raced, "the revocation did not run"
        assert all(isinstance(exc, CommitFailed) for exc in raced), raced
        assert not failures, failures
        moved = second_assigned[-1]  # what the revocation committed before handing over
        assert await second.committed(moved) == dict.fromkeys(moved, 2)
    finally:
        stop.set()
        await second.stop()
        await first.stop()
