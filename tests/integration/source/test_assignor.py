"""One active member per group, on the real broker: placement, failover and zombie fencing.

Members that the tests SIGKILL or SIGSTOP run as child processes
(testkit/group_member.py); the others run in-process. Sessions are short
(6 s, heartbeats every second) so a failover fits in a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from consumer.errors import ConfigError, SourceError
from consumer.source.assignor import lease_clock
from consumer.source.base import SourceSettings, batch_bytes
from consumer.source.thread import KafkaSource
from schemas.debezium import PartitionId, RawRecord

pytestmark = pytest.mark.kafka

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SESSION_S = 6.0
HEARTBEAT_S = 1.0
GROUP_TIMEOUTS = {
    "session_timeout_ms": int(SESSION_S * 1000),
    "heartbeat_interval_ms": int(HEARTBEAT_S * 1000),
}
# Session expiry, the standby's next heartbeat, and a rejoin on a loaded 2-core machine.
FAILOVER_BOUND_S = SESSION_S + HEARTBEAT_S + 3.0

Event = dict[str, Any]


def group_name() -> str:
    return f"sa-{uuid.uuid4().hex[:10]}"


def produce_everywhere(producer: KafkaProducer, topics: list[str], per_partition: int) -> None:
    for topic in topics:
        for partition in range(3):
            for i in range(per_partition):
                producer.send(topic, key=f"k{i}".encode(), value=b"v", partition=partition)
    producer.flush()


def group_state(admin: KafkaAdminClient, group: str) -> tuple[str, int]:
    info = admin.describe_groups([group])[group]
    return info["group_state"], len(info["members"])


def wait_stable(admin: KafkaAdminClient, group: str, members: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group_state(admin, group) == ("Stable", members):
            return
        time.sleep(0.1)
    raise AssertionError(
        f"group {group} not stable with {members} members: {group_state(admin, group)}"
    )


def committed(admin: KafkaAdminClient, group: str) -> dict[PartitionId, int]:
    offsets = admin.list_group_offsets({group: None})[group]
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


# -- in-process members ------------------------------------------------------


class Calls:
    """What the source told one member, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, list[PartitionId]]] = []

    def on_revoke(self, partitions: list[PartitionId]) -> Mapping[PartitionId, int]:
        self.log.append(("revoke", partitions))
        return {}

    def on_lost(self, partitions: list[PartitionId]) -> None:
        self.log.append(("lost", partitions))

    def on_assign(self, partitions: list[PartitionId]) -> None:
        self.log.append(("assign", partitions))


def member(bootstrap: str, group: str, topics: list[str], calls: Calls) -> KafkaSource:
    return KafkaSource(
        SourceSettings(bootstrap, group, tuple(topics), extra=GROUP_TIMEOUTS),
        on_revoke=calls.on_revoke,
        on_lost=calls.on_lost,
        on_assign=calls.on_assign,
    )


async def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def drain(source: KafkaSource, into: list[RawRecord]) -> None:
    while True:
        batch = await source.get()
        source.release(batch_bytes(batch))
        into.extend(batch)


async def test_one_member_holds_every_partition_while_others_join_and_leave(
    kafka_bootstrap: str,
    kafka_admin: KafkaAdminClient,
    make_topic: Callable[..., str],
    producer: KafkaProducer,
) -> None:
    topics = [make_topic("sa", 3) for _ in range(3)]
    everything = {(t, p) for t in topics for p in range(3)}
    group = group_name()
    loop = asyncio.get_running_loop()
    calls = {name: Calls() for name in "abc"}
    sources = {name: member(kafka_bootstrap, group, topics, calls[name]) for name in "abc"}
    a, b, c = sources["a"], sources["b"], sources["c"]
    got: list[RawRecord] = []
    drains: list[asyncio.Task[None]] = []
    samples: list[int] = []

    async def watch_a() -> None:
        while True:
            samples.append(len(a.assignment()))
            await asyncio.sleep(0.02)

    try:
        a.start(loop)
        await wait_until(lambda: a.assignment() == everything)
        drains.append(asyncio.create_task(drain(a, got)))
        watcher = asyncio.create_task(watch_a())

        b.start(loop)
        produce_everywhere(producer, topics, 2)  # while b joins
        wait_stable(kafka_admin, group, 2)
        assert (a.assignment(), b.assignment()) == (everything, set())

        c.start(loop)
        wait_stable(kafka_admin, group, 3)
        assert (a.assignment(), b.assignment(), c.assignment()) == (everything, set(), set())

        await b.stop()
        wait_stable(kafka_admin, group, 2)
        assert (a.assignment(), c.assignment()) == (everything, set())
        # The active kept reading all along: every record produced while b joined.
        await wait_until(lambda: len(got) == 18)
        assert {(r.topic, r.partition) for r in got} == everything

        watcher.cancel()
        assert samples and min(samples) == len(everything)  # never revoked, not for a moment
        assert calls["a"].log == [("assign", sorted(everything))]
        assert calls["b"].log == calls["c"].log == []  # standbys: never told anything
        await wait_until(a.is_active)  # the lease follows the heartbeats
        assert not c.is_active()

        await a.stop()  # the active leaves: the standby takes everything at once
        await wait_until(lambda: c.assignment() == everything, timeout=15)
        assert calls["c"].log == [("assign", sorted(everything))]
        wait_stable(kafka_admin, group, 1)
    finally:
        for task in drains:
            task.cancel()
        for source in sources.values():
            await source.stop()


async def test_positions_returned_by_on_assign_are_where_reading_starts(
    kafka_bootstrap: str, make_topic: Callable[..., str], producer: KafkaProducer
) -> None:
    topics = [make_topic("sa", 3)]
    produce_everywhere(producer, topics, 10)
    start = {(topics[0], 0): 7, (topics[0], 1): 0}  # partition 2: the committed offset (none)

    def on_assign(partitions: list[PartitionId]) -> Mapping[PartitionId, int]:
        return start

    source = KafkaSource(
        SourceSettings(kafka_bootstrap, group_name(), tuple(topics), extra=GROUP_TIMEOUTS),
        on_assign=on_assign,
    )
    source.start(asyncio.get_running_loop())
    got: list[RawRecord] = []
    try:
        async with asyncio.timeout(20):
            while len(got) < 3 + 10 + 10:
                batch = await source.get()
                source.release(batch_bytes(batch))
                got.extend(batch)
    finally:
        await source.stop()
    first = {p: min(r.offset for r in got if r.partition == p) for p in range(3)}
    assert first == {0: 7, 1: 0, 2: 0}
    assert len(got) == 23


def test_an_override_of_the_assignor_is_refused_with_the_key_that_sets_it() -> None:
    settings = SourceSettings(
        "127.0.0.1:1", group_name(), ("t",), extra={"partition_assignment_strategy": ["range"]}
    )
    with pytest.raises(ConfigError, match=r"kafka\.extra\.partition_assignment_strategy"):
        KafkaSource(settings)


async def test_a_position_the_consumer_cannot_take_stops_the_source(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topics = [make_topic("sa", 1)]
    source = KafkaSource(
        SourceSettings(kafka_bootstrap, group_name(), tuple(topics), extra=GROUP_TIMEOUTS),
        on_assign=lambda partitions: dict.fromkeys(partitions, -1),
    )
    source.start(asyncio.get_running_loop())
    try:
        with pytest.raises(SourceError, match="failed"):
            async with asyncio.timeout(20):
                await source.get()
    finally:
        await source.stop()


# -- members in child processes ---------------------------------------------


class MemberProcess:
    """testkit/group_member.py as a child process, its events collected as they come."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], stderr: Path) -> None:
        self._stderr = stderr.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "testkit.group_member", bootstrap, group, *topics],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=REPO,
            text=True,
            bufsize=1,
        )
        self.events: list[Event] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()

    def send(self, *lines: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(line + "\n" for line in lines))
        self.process.stdin.flush()

    def wait_for(self, check: Callable[[Event], bool], timeout: float, after: int = 0) -> Event:
        """The first event at index ``after`` or later that passes ``check``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events[after:]:
                    if check(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise AssertionError(f"no such event within {timeout}s: {self.events[after:]}")
                self._changed.wait(left)

    def named(self, name: str) -> list[Event]:
        with self._changed:
            return [e for e in self.events if e["event"] == name]

    def records(self) -> list[tuple[str, int, int]]:
        return [(t, p, o) for e in self.named("records") for t, p, o in e["records"]]

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.process.pid, sig)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # works on a stopped process too
        self.process.wait()
        self._reader.join(timeout=5)
        for stream in (self.process.stdin, self.process.stdout, self._stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def members(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., MemberProcess]]:
    started: list[MemberProcess] = []

    def start(group: str, topics: list[str]) -> MemberProcess:
        process = MemberProcess(
            kafka_bootstrap, group, topics, tmp_path / f"member-{len(started)}.err"
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def all_of(partitions: set[PartitionId]) -> Callable[[Event], bool]:
    wanted = sorted([t, p] for t, p in partitions)
    return lambda e: e["event"] == "assigned" and sorted(e["partitions"]) == wanted


def first_offsets(records: list[tuple[str, int, int]]) -> dict[PartitionId, int]:
    first: dict[PartitionId, int] = {}
    for topic, partition, offset in records:
        first[(topic, partition)] = min(offset, first.get((topic, partition), offset))
    return first


def test_the_standby_takes_over_from_a_killed_active_at_its_committed_offsets(
    kafka_admin: KafkaAdminClient,
    make_topic: Callable[..., str],
    producer: KafkaProducer,
    members: Callable[..., MemberProcess],
) -> None:
    topics = [make_topic("sa", 3) for _ in range(3)]
    everything = {(t, p) for t in topics for p in range(3)}
    group = group_name()
    produce_everywhere(producer, topics, 4)

    active = members(group, topics)
    active.wait_for(all_of(everything), timeout=20)
    active.wait_for(lambda e: len(active.records()) >= 36, timeout=20)
    active.send("commit")
    done = active.wait_for(lambda e: e["event"] == "commit", timeout=10)
    assert done["ok"], done
    assert committed(kafka_admin, group) == dict.fromkeys(everything, 4)

    produce_everywhere(producer, topics, 3)  # the active reads these but never commits them
    standby = members(group, topics)
    wait_stable(kafka_admin, group, 2)
    assert standby.named("assigned") == []

    active.signal(signal.SIGKILL)
    killed_at = lease_clock()
    taken = standby.wait_for(all_of(everything), timeout=FAILOVER_BOUND_S + 5)
    failover = taken["t"] - killed_at
    print(f"\nSIGKILL -> standby holds all {len(everything)} partitions: {failover:.2f} s")
    assert failover < FAILOVER_BOUND_S

    standby.wait_for(lambda e: len(standby.records()) >= 27, timeout=20)
    records = standby.records()
    assert first_offsets(records) == dict.fromkeys(everything, 4)
    assert sorted(records) == sorted((t, p, o) for t, p in everything for o in range(4, 7))


def test_a_paused_active_is_fenced_and_told_it_lost_its_partitions(
    kafka_admin: KafkaAdminClient,
    make_topic: Callable[..., str],
    producer: KafkaProducer,
    members: Callable[..., MemberProcess],
) -> None:
    topics = [make_topic("sa", 3) for _ in range(3)]
    everything = {(t, p) for t in topics for p in range(3)}
    group = group_name()
    produce_everywhere(producer, topics, 2)

    zombie = members(group, topics)
    zombie.wait_for(all_of(everything), timeout=20)
    zombie.wait_for(lambda e: len(zombie.records()) >= 18, timeout=20)
    standby = members(group, topics)
    wait_stable(kafka_admin, group, 2)
    zombie.send("status")
    before = zombie.wait_for(lambda e: e["event"] == "status", timeout=10)
    assert before["active"] and len(before["partitions"]) == len(everything)

    zombie.signal(signal.SIGSTOP)  # a pause longer than the session: GC, a frozen VM...
    stopped_at = lease_clock()
    taken = standby.wait_for(all_of(everything), timeout=FAILOVER_BOUND_S + 5)
    standby.wait_for(lambda e: len(standby.records()) >= 18, timeout=20)
    standby.send("commit")
    done = standby.wait_for(lambda e: e["event"] == "commit", timeout=10)
    assert done["ok"], done
    assert committed(kafka_admin, group) == dict.fromkeys(everything, 2)

    # What the zombie does first when it wakes: look at its role, commit a rewind.
    seen = len(zombie.events)
    rewind = " ".join(f"{t}:{p}:0" for t, p in sorted(everything))
    zombie.send("status", f"commit {rewind}", "status")
    zombie.signal(signal.SIGCONT)
    resumed_at = lease_clock()
    status = zombie.wait_for(lambda e: e["event"] == "status", timeout=10, after=seen)
    refused = zombie.wait_for(lambda e: e["event"] == "commit", timeout=20, after=seen)
    lost = zombie.wait_for(lambda e: e["event"] == "lost", timeout=20, after=seen)

    assert not status["active"]  # its lease ran out while it was stopped
    assert status["active_until"] is not None and status["active_until"] < taken["t"]
    assert not refused["ok"]
    assert "CommitFailed" in refused["error"]
    # Refused by the group's generation, not by the source's own ownership check.
    assert any(
        why in refused["error"]
        for why in ("UnknownMemberId", "IllegalGeneration", "RebalanceInProgress", "active group")
    ), refused["error"]
    assert sorted(lost["partitions"]) == sorted([t, p] for t, p in everything)
    assert zombie.named("revoked") == []  # lost, never "revoked": nothing to commit
    assert committed(kafka_admin, group) == dict.fromkeys(everything, 2)

    # It comes back as a standby; the active keeps everything.
    wait_stable(kafka_admin, group, 2)
    standby.send("status")
    after = standby.wait_for(lambda e: e["event"] == "status" and e["t"] > lost["t"], timeout=10)
    assert after["active"] and len(after["partitions"]) == len(everything)
    assert [e for e in zombie.named("assigned") if e["t"] > lost["t"]] == []
    print(
        f"\nSIGSTOP -> standby holds all partitions: {taken['t'] - stopped_at:.2f} s;"
        f" zombie's lease ran out {taken['t'] - status['active_until']:.2f} s before that;"
        f" after SIGCONT: commit refused in {refused['t'] - resumed_at:.2f} s,"
        f" partitions lost in {lost['t'] - resumed_at:.2f} s; {refused['error']}"
    )
