"""Where the time goes in the throughput run: the service metered, stage by stage.

    .venv/bin/python -m bench.profile [--records 60000] [--cprofile]

The same rig and records as ``bench.pipeline throughput`` (the limit lifted),
but the service runs under ``bench.instrument``: per stage, the CPU and wall
time of the thread that runs it; per thread, CPU and run-queue wait. Then the
same records are read back and pushed through the same stages in one thread
of this process, with no Kafka client running beside them ("alone"): the
difference with the service is what sharing the GIL with kafka-python costs.

With ``--cprofile`` each thread of the service also runs under cProfile and
the top functions by own time are printed per thread (slower: compare only
the fractions).
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bench.pipeline import API_KEY, CommitWatcher, Rig, fill, rig
from consumer.coalesce import Window
from consumer.decode import decode_record, parse_hint
from consumer.mapping import Mapping
from consumer.planner import Planner
from consumer.replay import end_offsets, partitions_of, replay
from consumer.store import StateStore
from emulator.workbench import REPO, ServiceProcess
from schemas.debezium import ChangeEvent, RawRecord
from schemas.entities import EntityChange


class InstrumentedService(ServiceProcess):
    """``bench.instrument`` (the service with meters) as a child process."""

    def __init__(self, config: Path, report: Path, cprofile: Path | None, log: Path) -> None:
        super().__init__(config, API_KEY, log)
        self.report = report
        self.cprofile = cprofile

    def start(self) -> InstrumentedService:
        extra = ["--cprofile", str(self.cprofile)] if self.cprofile else []
        command = [sys.executable, "-m", "bench.instrument", "--config", str(self.config)]
        command += ["--report", str(self.report), *extra]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, "RFMCUBE_API_KEY": self.api_key},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return self


def run_service(r: Rig, count: int, cprofile: bool) -> tuple[dict[str, Any], float, Path | None]:
    config = r.config(requests_per_minute=1_000_000, min_window=0.2)
    report = r.folder / "report.json"
    profiles = r.folder / "profiles" if cprofile else None
    watcher = CommitWatcher(r.bootstrap, r.group, r.topics)
    try:
        started = time.monotonic()
        service = InstrumentedService(config, report, profiles, r.folder / "service.log").start()
        caught = watcher.wait_all(service, timeout=900)
        if caught is None:
            raise SystemExit(f"did not catch up; see {service.log_path}")
        elapsed = caught[1] - started
        service.stop()
    finally:
        watcher.close()
    return orjson.loads(report.read_bytes()), elapsed, profiles


def _cpu_us(seconds: float, records: int) -> str:
    return f"{seconds / records * 1e6:7.1f}"


def print_service(report: dict[str, Any], elapsed: float, count: int) -> None:
    print(f"\n== the service, metered: {count} records in {elapsed:.1f} s (to the last commit)")
    print(
        f"timeline: first batch ingested at {report['first_ingest']:.2f} s,"
        f" last at {report['last_ingest']:.2f} s (from the interpreter's start)"
    )
    flushes = [s for s in report["spans"] if s[0] == "flush"]
    commits = [s for s in report["spans"] if s[0] == "commit"]
    for name, spans in (("flushes", flushes), ("commits", commits)):
        busy = sum(e - s for _, s, e in spans)
        listed = ", ".join(f"{s:.1f}-{e:.1f}" for _, s, e in spans[:12])
        print(f"{name}: {len(spans)}, {busy:.2f} s in all: {listed}")
    print(
        f"\n{'stage':42s} {'thread':>16s} {'calls':>7s} {'CPU s':>7s} {'wall s':>7s}"
        f" {'off-CPU':>7s} {'CPU µs/rec':>10s}"
    )
    for name, stage in sorted(report["stages"].items(), key=lambda kv: -kv[1]["cpu"]):
        print(
            f"{name:42s} {stage['thread'][:16]:>16s} {stage['calls']:7d} {stage['cpu']:7.2f}"
            f" {stage['wall']:7.2f} {stage['wall'] - stage['cpu']:7.2f}"
            f" {_cpu_us(stage['cpu'], count):>10s}"
        )
    gc_seconds, collections = report["gc"]["seconds"], report["gc"]["collections"]
    print(
        f"garbage collector: {sum(gc_seconds):.2f} s in all; per generation 0/1/2:"
        f" {' / '.join(f'{s:.2f} s ({n})' for s, n in zip(gc_seconds, collections, strict=True))}"
    )
    print(f"\n{'thread':40s} {'CPU s':>7s} {'run-queue wait s':>17s}")
    for name, t in sorted(report["threads"].items(), key=lambda kv: -kv[1]["cpu"]):
        if t["cpu"] >= 0.01:
            print(f"{name:40s} {t['cpu']:7.2f} {t['runqueue_wait']:17.2f}")


def print_profiles(folder: Path, top: int = 25) -> None:
    for path in sorted(folder.glob("*.pstats")):
        stats = pstats.Stats(str(path))
        total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
        print(f"\n== cProfile {path.stem}: {total:.2f} s of own time")
        by_category: dict[str, float] = {}
        for (file, _, func), value in stats.stats.items():  # type: ignore[attr-defined]
            category = _category(file, func)
            by_category[category] = by_category.get(category, 0.0) + value[2]
        for category, seconds in sorted(by_category.items(), key=lambda kv: -kv[1]):
            if seconds / max(total, 1e-9) >= 0.01:
                print(f"  {category:32s} {seconds:7.2f} s {seconds / total:6.1%}")
        stats.sort_stats("tottime").print_stats(top)


_CATEGORIES = (
    ("kafka/record", "kafka-python: record parsing"),
    ("kafka/consumer", "kafka-python: fetcher"),
    ("kafka/protocol", "kafka-python: protocol"),
    ("kafka/net", "kafka-python: network loop"),
    ("kafka/", "kafka-python: other"),
    ("consumer/decode", "decode"),
    ("consumer/mapping", "mapping"),
    ("consumer/store", "store"),
    ("consumer/planner", "plan"),
    ("schemas/rfmcube", "plan: documents"),
    ("consumer/source", "source thread (ours)"),
    ("consumer/sender", "send"),
    ("consumer/api", "send"),
    ("aiohttp", "send: aiohttp"),
    ("asyncio", "asyncio"),
    ("selectors", "asyncio/selectors"),
    ("threading", "threading"),
    ("logging", "logging"),
)

_BUILTINS = (
    ("sqlite3", "store: sqlite3 (C)"),
    ("orjson", "orjson (C)"),
    ("select", "select/epoll (C)"),
    ("acquire", "locks (C)"),
    ("wait", "locks (C)"),
    ("crc32c", "kafka-python: crc32c (C)"),
    ("_hashlib", "hashing (C)"),
    ("blake2b", "hashing (C)"),
    ("recv", "socket (C)"),
    ("send", "socket (C)"),
)


def _category(file: str, func: str) -> str:
    if file == "~":
        for needle, name in _BUILTINS:
            if needle in func:
                return name
        return "other builtins (C)"
    for needle, name in _CATEGORIES:
        if needle in file:
            return name
    return "other Python"


def alone(bootstrap: str, topics: list[str], mapping_file: Path) -> None:
    """The same records through the same stages in this one thread, no Kafka client beside."""
    records = [r for batch in _read_back(bootstrap, topics) for r in batch]
    count = len(records)
    mapping = Mapping.load(mapping_file)
    hints = {
        topic: {col: parse_hint(h) for col, h in mapping.hints_for(topic).items()}
        for topic in mapping.topics()
    }
    folder = Path(tempfile.mkdtemp(prefix="rfmcube-profile-"))
    store = StateStore(folder / "alone.db")
    planner = Planner(store, mark_deleted=mapping.mark_deleted, orphan_wait=30)
    cpu: dict[str, float] = {"decode": 0.0, "map": 0.0, "store": 0.0, "plan": 0.0}
    window = Window()
    clock = time.thread_time
    for start in range(0, count, 2000):
        batch = records[start : start + 2000]
        t0 = clock()
        decoded = [decode_record(r, hints.get(r.topic)) for r in batch]
        t1 = clock()
        changes: list[EntityChange | None] = [
            mapping.map_event(d) if isinstance(d, ChangeEvent) else None for d in decoded
        ]
        t2 = clock()
        with store.batch() as writes:
            writes.prefetch((c.kind, c.key) for c in changes if c is not None)
            for record, change in zip(batch, changes, strict=True):
                if change is not None:
                    window.add(record.position, writes.apply(change), 0.0)
        t3 = clock()
        if start % 10_000 == 0 or start + 2000 >= count:
            planner.plan(window.take(), 1e9)
        t4 = clock()
        for name, seconds in zip(cpu, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            cpu[name] += seconds
    store.close()
    total = sum(cpu.values())
    print(f"\n== alone: the same {count} records, one thread, no Kafka client running")
    for name, seconds in cpu.items():
        print(f"{name:10s} CPU {seconds:6.2f} s  {_cpu_us(seconds, count)} µs/record")
    print(f"{'all':10s} CPU {total:6.2f} s  {_cpu_us(total, count)} µs/record")


def _read_back(bootstrap: str, topics: list[str]) -> Iterator[list[RawRecord]]:
    ends = end_offsets(bootstrap, partitions_of(bootstrap, topics))
    yield from replay(bootstrap, {}, ends, batch_size=2000)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args(argv)
    print(f"load before: {Path('/proc/loadavg').read_text().split()[:3]}")
    with rig(requests_per_minute=1_000_000) as r:
        count = fill(r, args.records)
        report, elapsed, profiles = run_service(r, count, args.cprofile)
        print_service(report, elapsed, count)
        if profiles is not None:
            print_profiles(profiles)
        alone(r.bootstrap, r.topics, r.folder / "mapping.yaml")
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
