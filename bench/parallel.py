"""What the parallel path buys: decode + map inline against the worker pool.

    .venv/bin/python -m bench.parallel [--records 60000] [--repeat 3] [--batch 2000]
        [--gc-threshold 50000,50,100]

Records are the synthetic shop's (``emulator.shop``, JSON converter with
schemas, about 3.4 KB each), spread over 3 partitions per topic. Three ways:

- inline: ``RecordDecoder.result_of`` per record in this process, as the
  service does today;
- pool, 1 and 2 workers: ``consumer.parallel.DecodeStage``, batches of
  ``--batch`` records submitted while there is room, results collected in order.

For each: wall time, records/s, and the CPU this process spent per record
(all its threads: pickling the records, the executor's threads, rebuilding
the results). That last figure is what the service's process, whose GIL is
the bottleneck, would still pay per record. The workers' CPU is read from
/proc. Then the transport alone: pickling the records to the workers and the
results back, as RawRecord / EntityChange objects and as the tuples the stage
uses.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import statistics
import time
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer.decode_worker import (
    RecordDecoder,
    Result,
    result_from_wire,
    result_to_wire,
    to_wire,
)
from consumer.mapping import Mapping
from consumer.parallel import DecodeJob, DecodeStage
from emulator.shop import Shop
from schemas.debezium import RawRecord

MAPPING = Path(__file__).resolve().parent.parent / "consumer" / "default_mapping.yaml"
_TICKS = os.sysconf("SC_CLK_TCK")


def shop_records(count: int) -> list[RawRecord]:
    shop = Shop()
    while len(shop.records) < count:
        shop.workload(customers=200, guest_orders=40)
    offsets: dict[tuple[str, int], int] = {}
    records = []
    for r in shop.records[:count]:
        partition = zlib.crc32(r.key) % 3
        offset = offsets.get((r.topic, partition), 0)
        offsets[(r.topic, partition)] = offset + 1
        records.append(RawRecord(r.topic, partition, offset, r.key, r.value))
    return records


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def run_inline(records: list[RawRecord], batch: int) -> tuple[float, float]:
    """(wall, CPU) to decode and map every record here; results dropped batch by batch,
    as the service drops them once applied."""
    decoder = RecordDecoder(Mapping.load(MAPPING))
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(records), batch):
        _consume([decoder.result_of(r) for r in records[start : start + batch]])
    return time.perf_counter() - wall, time.process_time() - cpu


def run_pool(
    records: list[RawRecord], workers: int, batch: int, keep: list[Result] | None = None
) -> tuple[float, float, float]:
    """(wall, this process's CPU, the workers' CPU); results appended to ``keep`` if given."""
    with DecodeStage(MAPPING.read_text(), workers=workers) as stage:
        pids = stage.worker_pids()
        workers_before = sum(_cpu_of(p) for p in pids)
        wall, cpu = time.perf_counter(), time.process_time()
        jobs: deque[DecodeJob] = deque()
        for start in range(0, len(records), batch):
            while not stage.has_room():
                _consume(jobs.popleft().result(), keep)
            jobs.append(stage.submit(records[start : start + batch]))
        while jobs:
            _consume(jobs.popleft().result(), keep)
        elapsed, used = time.perf_counter(), time.process_time()
        workers_cpu = sum(_cpu_of(p) for p in pids) - workers_before
    return elapsed - wall, used - cpu, workers_cpu


def _consume(results: list[Result], keep: list[Result] | None = None) -> None:
    if keep is not None:
        keep.extend(results)


def _per_record_us(work: Callable[[], Any], count: int, repeat: int = 3) -> float:
    best = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        best.append(time.process_time() - started)
    return min(best) / count * 1e6


def transport(records: list[RawRecord], results: list[Result]) -> None:
    n = len(records)
    wire_in = [to_wire(r) for r in records]
    wire_out = [result_to_wire(r) for r in results]
    objects_out = pickle.dumps(results, 5)
    tuples_out = pickle.dumps(wire_out, 5)
    rows = [
        ("records out, RawRecord objects: dumps", lambda: pickle.dumps(records, 5)),
        ("records out, tuples: build + dumps", lambda: pickle.dumps([to_wire(r) for r in records])),
        ("results back, EntityChange objects: loads", lambda: pickle.loads(objects_out)),
        (
            "results back, tuples: loads + rebuild",
            lambda: [
                result_from_wire(w, r)
                for w, r in zip(pickle.loads(tuples_out), records, strict=True)
            ],
        ),
    ]
    print(f"\ntransport, CPU µs per record in the service's process (best of 3, {n} records):")
    for label, work in rows:
        print(f"  {label:44s} {_per_record_us(work, n):6.2f}")
    in_size = len(pickle.dumps(wire_in, 5)) // n
    print(
        f"  sizes: records {in_size} B, results as objects {len(objects_out) // n} B,"
        f" as tuples {len(tuples_out) // n} B"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--gc-threshold", default=None, help="e.g. 50000,50,100")
    args = parser.parse_args()
    records = shop_records(args.records)
    n = len(records)
    if args.gc_threshold:
        gc.set_threshold(*(int(x) for x in args.gc_threshold.split(",")))
    print(f"{n} records; load before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    decoder = RecordDecoder(Mapping.load(MAPPING))
    expected = [decoder.result_of(r) for r in records]
    got: list[Result] = []
    run_pool(records, 2, args.batch, keep=got)
    if got != expected:
        raise SystemExit("the pool gave other results than inline decoding")
    transport(records, expected)
    del got, expected
    gc.collect()
    rows: dict[str, list[tuple[float, float, float]]] = {"inline": [], "pool 1": [], "pool 2": []}
    for _ in range(args.repeat):
        wall, cpu = run_inline(records, args.batch)
        rows["inline"].append((wall, cpu, 0.0))
        for workers in (1, 2):
            rows[f"pool {workers}"].append(run_pool(records, workers, args.batch))
    print(
        f"\n{'':8s} {'records/s':>10s} {'wall s':>7s} {'this process CPU µs/rec':>24s}"
        f" {'workers CPU µs/rec':>19s}   (median of {args.repeat})"
    )
    for name, runs in rows.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        wcpu = statistics.median(r[2] for r in runs)
        print(
            f"{name:8s} {n / wall:10,.0f} {wall:7.2f} {cpu / n * 1e6:24.1f} {wcpu / n * 1e6:19.1f}"
        )
    print(f"load after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
