"""The parallel decode stage: worker processes, results in order, dead workers noticed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from consumer.errors import ConfigError
from consumer.mapping import Mapping
from consumer.parallel import (
    DecodeStage,
    RecordDecoder,
    Rejected,
    Result,
    StageBroken,
    StageFull,
    StageStalled,
)
from emulator.shop import Shop
from schemas.debezium import Position, RawRecord, Skipped
from schemas.entities import EntityChange

REPO = Path(__file__).resolve().parents[2]
MAPPING_TEXT = (REPO / "consumer" / "default_mapping.yaml").read_text(encoding="utf-8")
ORDERS = "shop.public.orders"


def shop_stream(count: int, partitions: int = 3) -> list[RawRecord]:
    """The synthetic shop's records, keyed into partitions, offsets counted per partition."""
    shop = Shop()
    while len(shop.records) < count:
        shop.workload(customers=40, guest_orders=10)
    offsets: dict[tuple[str, int], int] = {}
    records = []
    for record in shop.records[:count]:
        partition = sum(record.key) % partitions
        offset = offsets.get((record.topic, partition), 0)
        offsets[(record.topic, partition)] = offset + 1
        records.append(RawRecord(record.topic, partition, offset, record.key, record.value))
    return records


def position_of(result: Result) -> Position | None:
    return result.position if isinstance(result, EntityChange | Skipped) else None


@pytest.fixture(scope="module")
def stage() -> Iterator[DecodeStage]:
    """A healthy stage shared by the tests that do not break it."""
    with DecodeStage(MAPPING_TEXT, workers=2, chunk_records=37) as shared:
        yield shared


def test_results_are_what_inline_decoding_gives(stage: DecodeStage) -> None:
    records = shop_stream(1500)
    heartbeat = RawRecord("__debezium-heartbeat.shop", 0, 0, b'{"serverName":"shop"}', b"{}")
    unmapped = RawRecord("shop.public.coupons", 0, 0, records[0].key, records[0].value)
    records += [heartbeat, unmapped]
    inline = RecordDecoder(Mapping.from_text(MAPPING_TEXT))

    results = stage.submit(records).result()

    assert results == [inline.result_of(r) for r in records]
    assert sum(isinstance(r, EntityChange) for r in results) == 1500
    assert isinstance(results[-2], Skipped) and results[-2].kind == "heartbeat"
    assert results[-1] is None  # the mapping does not know the topic


def test_bad_records_come_back_as_reasons_not_exceptions(stage: DecodeStage) -> None:
    good = shop_stream(3)
    records = [
        good[0],
        RawRecord(ORDERS, 0, 10, b'{"id": 1}', b"{not json"),
        RawRecord(ORDERS, 0, 11, b'{"id": 2}', b"\x00\x00\x00\x00\x01avro"),
        RawRecord(ORDERS, 0, 12, b'{"id": 3}', b'{"id": 3, "customer_id": 1}'),
        good[1],
    ]

    results = stage.submit(records).result()

    assert isinstance(results[0], EntityChange) and isinstance(results[4], EntityChange)
    reasons = [r.reason for r in results[1:4] if isinstance(r, Rejected)]
    assert len(reasons) == 3
    assert "not JSON" in reasons[0]
    assert "Schema Registry" in reasons[1]
    assert reasons[2] == "column created_at: mandatory for an order but absent"


def test_each_partition_keeps_its_offset_order_through_many_batches() -> None:
    records = shop_stream(4000)
    # Batches of very different sizes, cut into small chunks over two workers:
    # later chunks often finish before earlier ones.
    sizes = [1, 250, 3, 90, 7, 400, 1, 33]
    batches: list[list[RawRecord]] = []
    start = 0
    while start < len(records):
        size = sizes[len(batches) % len(sizes)]
        batches.append(records[start : start + size])
        start += size
    pending = list(batches)

    async def get() -> Sequence[RawRecord]:
        await asyncio.sleep(0)
        if not pending:
            await asyncio.sleep(3600)  # the source has nothing more: wait like it would
        return pending.pop(0)

    async def run(stage: DecodeStage) -> list[tuple[Sequence[RawRecord], list[Result]]]:
        out = []
        async for records_and_results in stage.decoded(get):
            out.append(records_and_results)
            if len(out) == len(batches):
                break
        return out

    with DecodeStage(MAPPING_TEXT, workers=2, chunk_records=11, max_in_flight_records=600) as stage:
        delivered = asyncio.run(run(stage))

    assert [list(r) for r, _ in delivered] == batches  # batches in the order they were read
    seen: dict[tuple[str, int], list[int]] = {}
    for batch, results in delivered:
        assert len(results) == len(batch)
        for record, result in zip(batch, results, strict=True):
            assert position_of(result) == record.position
            seen.setdefault((record.topic, record.partition), []).append(record.offset)
    for offsets in seen.values():
        assert offsets == list(range(len(offsets)))  # every offset, in order, once
    assert sum(len(o) for o in seen.values()) == len(records)


def test_leaving_the_iterator_early_gives_its_room_back() -> None:
    records = shop_stream(400)

    async def get() -> Sequence[RawRecord]:
        await asyncio.sleep(0)
        return records

    async def first_batch(stage: DecodeStage) -> None:
        async with contextlib.aclosing(stage.decoded(get)) as batches:
            yielded = 0
            async for _ in batches:
                yielded += 1
                # Leave while a batch read ahead is in flight. Whether one is depends
                # on how fast the worker ran: under load it may finish a batch first.
                if stage.in_flight > len(records):
                    break
                assert yielded < 200, "the stage never read ahead"
        assert stage.in_flight == 0

    with DecodeStage(MAPPING_TEXT, workers=1, max_in_flight_records=1000) as stage:
        asyncio.run(first_batch(stage))
        assert len(stage.submit(records).result()) == len(records)


def test_a_refused_mapping_is_a_config_error_before_any_worker_starts() -> None:
    stage = DecodeStage("entities: {customers: {topic: ''}}", mapping_source="bad.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        stage.start()
    assert stage.worker_pids() == []


def test_submit_refuses_past_the_in_flight_bound() -> None:
    records = shop_stream(300)
    with DecodeStage(MAPPING_TEXT, workers=1, max_in_flight_records=250) as stage:
        first = stage.submit(records[:200])
        second = stage.submit(records[200:260])  # 200 in flight: still room
        assert not stage.has_room()
        with pytest.raises(StageFull):
            stage.submit(records[260:])
        first.result()
        assert stage.in_flight == 60 and stage.has_room()
        stage.submit(records[260:]).result()
        second.result()
        assert stage.in_flight == 0


def test_a_collected_job_frees_its_records_without_the_garbage_collector(
    stage: DecodeStage,
) -> None:
    # With a service's GC thresholds raised, a job caught in a reference cycle
    # would hold its batch (megabytes) until a full collection.
    records = shop_stream(50)
    gc.disable()
    try:
        job = stage.submit(records)
        job.result()
        gone = weakref.ref(job)
        del job
        assert gone() is None
    finally:
        gc.enable()


def test_a_worker_killed_mid_run_breaks_the_stage_within_seconds() -> None:
    records = shop_stream(3000)
    with DecodeStage(
        MAPPING_TEXT, workers=2, chunk_records=50, max_in_flight_records=10**6
    ) as stage:
        jobs = [stage.submit(records) for _ in range(20)]  # about 60,000 records of work
        jobs[0].result()
        os.kill(stage.worker_pids()[0], signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(StageBroken, match="died"):
            for job in jobs[1:]:
                job.result()
        assert time.monotonic() - started < 10
        with pytest.raises(StageBroken):
            stage.submit(records[:10])


def test_a_worker_killed_while_idle_is_found_by_the_next_submit() -> None:
    records = shop_stream(20)
    with DecodeStage(MAPPING_TEXT, workers=2) as stage:
        stage.submit(records).result()
        victim = stage.worker_pids()[1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        with pytest.raises(StageBroken):
            while time.monotonic() < deadline:  # the executor notices within moments
                stage.submit(records).result()
                time.sleep(0.05)


def test_the_async_iterator_raises_when_a_worker_dies() -> None:
    records = shop_stream(2000)

    async def get() -> Sequence[RawRecord]:
        await asyncio.sleep(0)
        return records

    async def run(stage: DecodeStage) -> None:
        batches = 0
        async for _ in stage.decoded(get):
            batches += 1
            if batches == 2:
                os.kill(stage.worker_pids()[0], signal.SIGKILL)
            assert batches < 1000, "the stage kept going after a worker died"

    with DecodeStage(MAPPING_TEXT, workers=2, chunk_records=100) as stage:
        started = time.monotonic()
        with pytest.raises(StageBroken):
            asyncio.run(asyncio.wait_for(run(stage), 60))
        assert time.monotonic() - started < 30


def test_a_stuck_worker_stalls_the_job_and_close_still_returns() -> None:
    records = shop_stream(400)
    stage = DecodeStage(MAPPING_TEXT, workers=1, chunk_records=100, stall_seconds=1.0)
    stage.start()
    (pid,) = stage.worker_pids()
    os.kill(pid, signal.SIGSTOP)  # alive, but never finishes its chunk
    try:
        job = stage.submit(records)
        started = time.monotonic()
        with pytest.raises(StageStalled):
            job.result()
        assert 0.9 < time.monotonic() - started < 5
        started = time.monotonic()
        stage.close(timeout=1.0)
        assert time.monotonic() - started < 10
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


_ORPHAN_CHECK = """
import sys
from consumer.parallel import DecodeStage
if __name__ == "__main__":  # workers import the main module again
    stage = DecodeStage(open(sys.argv[1]).read(), workers=2)
    stage.start()
    print(*stage.worker_pids(), flush=True)
    sys.stdin.read()
"""


def test_workers_and_their_forkserver_exit_when_the_service_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(_ORPHAN_CHECK, encoding="utf-8")
    owner = subprocess.Popen(
        [sys.executable, str(script), str(REPO / "consumer" / "default_mapping.yaml")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert owner.stdout is not None
        workers = [int(p) for p in owner.stdout.readline().split()]
        assert len(workers) == 2
        pids = [*workers, *{_parent_of(p) for p in workers} - {owner.pid}]  # and a forkserver
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids)
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait()
        assert owner.stdin is not None and owner.stdout is not None
        owner.stdin.close()
        owner.stdout.close()


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
