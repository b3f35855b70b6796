"""Where the time goes in the throughput run: the service metered, stage by stage.

    .venv/bin/python -m bench.profile [--records 60000] [--repeat 1] [--alone]
        [--cprofile] [--variant OPTIONS]...

The same rig and records as ``bench.pipeline throughput`` (the limit lifted),
but the service runs under ``bench.instrument``: per stage, the CPU and wall
time of the thread that runs it; per thread, CPU and run-queue wait. Then the
same records are read back and pushed through the same stages in one thread
of this process, with no Kafka client running beside them ("alone"): the
difference with the service is what sharing the GIL with kafka-python costs.

With ``--cprofile`` each thread of the service also runs under cProfile and
the top functions by own time are printed per thread (slower: compare only
the fractions).

``--variant`` runs the service with other ``bench.instrument`` options, one
after the other on the same records (each with its own group and store), the
bare consumer first: e.g. ``--variant "--no-meters" --variant "--no-meters
--gc-freeze"`` compares the service as it is with the collector's variant in
one run. With ``--repeat N`` the medians of rates and ratios are printed.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from consumer.coalesce import Window

from bench.pipeline import (
    API_KEY,
    CommitWatcher,
    MachineCpu,
    Rig,
    cpu_seconds,
    descendants,
    fill,
    machine_cpu,
    machine_line,
    measure_ceiling,
    rig,
    status_kib,
)
from consumer.decode import decode_record, parse_hint
from consumer.mapping import Mapping
from consumer.planner import Planner
from consumer.replay import end_offsets, partitions_of, replay
from consumer.store import StateStore
from emulator.workbench import REPO, ServiceProcess
from schemas.debezium import ChangeEvent, RawRecord
from schemas.entities import EntityChange


class InstrumentedService(ServiceProcess):
    """``bench.instrument`` (the service with meters, or a variant) as a child process."""

    def __init__(self, config: Path, report: Path, options: list[str], log: Path) -> None:
        super().__init__(config, API_KEY, log)
        self.report = report
        self.options = options

    def start(self) -> InstrumentedService:
        command = [sys.executable, "-m", "bench.instrument", "--config", str(self.config)]
        command += ["--report", str(self.report), *self.options]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, "RFMCUBE_API_KEY": self.api_key},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return self


@dataclass
class ServiceRun:
    report: dict[str, Any]
    seconds: float
    cpu: float  # the service's process, all threads
    rss_mib: float  # VmHWM of the service's process
    workers_rss_mib: float  # VmHWM summed over its child processes
    workers_cpu: float
    machine: MachineCpu


def run_service(r: Rig, options: list[str]) -> ServiceRun:
    config = r.config(requests_per_minute=1_000_000, min_window=0.2)
    report = r.folder / "report.json"
    watcher = CommitWatcher(r.bootstrap, r.group, r.topics)
    service: InstrumentedService | None = None
    try:
        before = machine_cpu()
        started = time.monotonic()
        service = InstrumentedService(config, report, options, r.folder / "service.log").start()
        assert service.process is not None
        caught = watcher.wait_all(service, timeout=900)
        machine = machine_cpu() - before
        if caught is None:
            raise SystemExit(f"did not catch up; see {service.log_path}")
        pid = service.process.pid
        children = descendants(pid)
        run = ServiceRun(
            report={},
            seconds=caught[1] - started,
            cpu=cpu_seconds(pid),
            rss_mib=status_kib(pid, "VmHWM") / 1024,
            workers_rss_mib=sum(status_kib(p, "VmHWM") for p in children) / 1024,
            workers_cpu=sum(cpu_seconds(p) for p in children),
            machine=machine,
        )
        service.stop()
    finally:
        watcher.close()
        if service is not None and service.running():
            service.kill()  # a failed run must not leave the service behind
    run.report = orjson.loads(report.read_bytes())
    return run


def _cpu_us(seconds: float, records: int) -> str:
    return f"{seconds / records * 1e6:7.1f}"


def print_service(report: dict[str, Any], elapsed: float, count: int) -> None:
    print(f"\n== the service, metered: {count} records in {elapsed:.1f} s (to the last commit)")
    print_timeline(report)
    print_stages(report, count)


def print_timeline(report: dict[str, Any]) -> None:
    print(
        f"timeline: first batch ingested at {report['first_ingest']:.2f} s,"
        f" last at {report['last_ingest']:.2f} s (from the interpreter's start)"
    )
    calls = [s for s in report["spans"] if s[0] == "api call"]
    if calls:
        last = report["last_ingest"]
        tail = [c for c in calls if c[2] > last]
        print(
            f"API calls: {len(calls)}, {sum(e - s for _, s, e in calls):.2f} s awaited in all;"
            f" after the last batch was ingested: {len(tail)},"
            f" {sum(e - max(s, last) for _, s, e in tail):.2f} s"
        )
    flushes = [s for s in report["spans"] if s[0] == "flush"]
    commits = [s for s in report["spans"] if s[0] == "commit"]
    for name, spans in (("flushes", flushes), ("commits", commits)):
        busy = sum(e - s for _, s, e in spans)
        listed = ", ".join(f"{s:.1f}-{e:.1f}" for _, s, e in spans[:12])
        print(f"{name}: {len(spans)}, {busy:.2f} s in all: {listed}")
    gc_seconds, collections = report["gc"]["seconds"], report["gc"]["collections"]
    print(
        f"garbage collector: {sum(gc_seconds):.2f} s in all; per generation 0/1/2:"
        f" {' / '.join(f'{s:.2f} s ({n})' for s, n in zip(gc_seconds, collections, strict=True))}"
    )


def print_stages(report: dict[str, Any], count: int) -> None:
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
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--variant",
        action="append",
        help="options for bench.instrument: --variant='--no-meters --gc-freeze' (repeatable;"
        " default: the service as it is, metered)",
    )
    parser.add_argument("--alone", action="store_true", help="also the one-thread pass")
    parser.add_argument("--cprofile", action="store_true", help="every thread under cProfile")
    args = parser.parse_args(argv)
    variants: list[str] = args.variant or [""]
    print(f"load before: {_loadavg()}")
    ratios: dict[str, list[float]] = {v: [] for v in variants}
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for n in range(args.repeat):
        with rig(requests_per_minute=1_000_000) as r:
            count = fill(r, args.records)
            print(f"\nrun {n + 1}: load {_loadavg()}")
            ceilings = [measure_ceiling(r, count, "ceiling-before").seconds]
            runs: list[tuple[str, ServiceRun]] = []
            for i, variant in enumerate(variants):
                sub = replace(r, folder=r.folder / f"variant-{i}", group=f"{r.group}-{i}")
                sub.folder.mkdir()
                options = shlex.split(variant)
                if args.cprofile:
                    options += ["--cprofile", str(sub.folder / "profiles")]
                run = run_service(sub, options)
                rate = count / run.seconds
                rates[variant].append(rate)
                runs.append((variant, run))
                workers = (
                    f", workers CPU {run.workers_cpu:.1f} s, RSS {run.workers_rss_mib:.0f} MiB"
                    if run.workers_rss_mib
                    else ""
                )
                print(
                    f"  [{variant or 'as is, metered'}] {run.seconds:.1f} s ="
                    f" {rate:,.0f} records/s;"
                    f" CPU {run.cpu:.1f} s, peak RSS {run.rss_mib:.0f} MiB{workers}\n"
                    f"    {machine_line(run.machine, run.seconds, run.cpu + run.workers_cpu)}"
                )
                if run.report["stages"] and args.repeat == 1:
                    print_service(run.report, run.seconds, count)
                elif args.repeat == 1:
                    print_timeline(run.report)
                if args.cprofile:
                    print_profiles(sub.folder / "profiles")
            ceilings.append(measure_ceiling(r, count, "ceiling-after").seconds)
            ceiling_rate = count / statistics.mean(ceilings)
            print(
                f"run {n + 1}: bare consumer {ceiling_rate:,.0f} records/s (before and after:"
                f" {', '.join(f'{count / c:,.0f}' for c in ceilings)}); load {_loadavg()}"
            )
            for variant, run in runs:
                ratios[variant].append(count / run.seconds / ceiling_rate)
                print(f"  [{variant or 'as is, metered'}] ratio {ratios[variant][-1]:.2f}")
            if args.alone:
                alone(r.bootstrap, r.topics, r.folder / "mapping.yaml")
    if args.repeat > 1:
        print(f"\nmedians of {args.repeat} runs:")
        for variant in variants:
            print(
                f"  [{variant or 'as is, metered'}] {statistics.median(rates[variant]):,.0f}"
                f" records/s, ratio {statistics.median(ratios[variant]):.2f}"
            )
    print(f"load after: {_loadavg()}")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
