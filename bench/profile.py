"""Where the time goes in the throughput run: the service metered, stage by stage.

    .venv/bin/python -m bench.profile [--records 60000] [--repeat 1] [--alone]
        [--cprofile] [--consumer-in-thread] [--variant OPTIONS]...

The same rig and records as ``bench.pipeline throughput`` (the limit lifted,
the consumer in a child process unless ``--consumer-in-thread``), but the
service runs under ``bench.instrument``: per stage, the CPU and wall time of
the thread that runs it; per thread, CPU and run-queue wait. kafka-python's
stages (fetch parsing, the hand-over) are metered only with
``--consumer-in-thread``: the child process runs without meters.

With ``--alone`` the same records are then read back and pushed through the
same stages (decode, mapping, the safety net's check, the store, planning,
packing, settling) in one thread of this process, with no Kafka client running
beside them: the difference with the service is what sharing the GIL with
kafka-python (or the pipe from the child) costs.

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

from bench.pipeline import (
    API_KEY,
    CommitWatcher,
    MachineCpu,
    Rig,
    cpu_seconds,
    fill,
    machine_cpu,
    machine_line,
    measure_ceiling,
    rig,
    status_kib,
)
from consumer.changes.decode import decode_record, parse_hint
from consumer.changes.limits import RecordLimits
from consumer.changes.mapping import Mapping
from consumer.changes.records import _checked
from consumer.delivery.packing import draft_of
from consumer.delivery.planner import Planner
from consumer.source.replay import end_offsets, partitions_of, replay
from consumer.state.batch import open_batch
from consumer.state.obligations import Obligations, OwedDoc, Settlement
from consumer.state.store import StateStore
from schemas.debezium import ChangeEvent, RawRecord
from schemas.entities import DocRef, EntityChange, Kind
from testkit.workbench import REPO, ServiceProcess, descendants, mapping_for_prefix


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


def check_meters() -> None:
    """Fail now, not after filling the topics, when bench.instrument's meters point at
    names the service no longer has (it raises StaleMeter naming them)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.instrument", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench.instrument --check failed:\n{done.stderr.strip()}")


def run_service(r: Rig, options: list[str], consumer_process: bool) -> ServiceRun:
    config = r.config(
        requests_per_minute=1_000_000, min_window=0.2, consumer_process=consumer_process
    )
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
            tail = "\n".join(service.log().splitlines()[-20:])
            raise SystemExit(f"did not catch up; see {service.log_path}; its end:\n{tail}")
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
    ("consumer/changes/decode", "decode"),
    ("consumer/changes/mapping", "mapping"),
    ("consumer/records", "check (safety net)"),
    ("consumer/ingest", "ingest"),
    ("consumer/storeview", "plan: store reads"),
    ("consumer/store", "store"),  # store.py, storebatch.py
    ("consumer/obligations", "obligations (store)"),
    ("consumer/planner", "plan"),
    ("schemas/rfmcube", "plan and pack: documents, JSON"),
    ("consumer/packing", "pack"),
    ("consumer/flush", "flush"),
    ("consumer/commits", "commit"),
    ("consumer/source_process", "source process pipe (ours)"),
    ("consumer/source", "source thread (ours)"),
    ("consumer/sender", "send"),
    ("consumer/api", "send"),
    ("multiprocessing", "source process pipe: multiprocessing"),
    ("aiohttp", "send: aiohttp"),
    ("asyncio", "asyncio"),
    ("selectors", "asyncio/selectors"),
    ("threading", "threading"),
    ("logging", "logging"),
)

_BUILTINS = (
    ("sqlite3", "store: sqlite3 (C)"),
    ("orjson", "orjson (C)"),
    ("_pickle", "pickle (C)"),
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


def alone(bootstrap: str, topics: list[str], mapping_text: str) -> None:
    """The same records through the same stages in this one thread, no Kafka client beside:
    per batch of 2,000 what ``Ingest.ingest`` does (decode, map, check, one store
    transaction); every 10,000 records what a flush does without the requests (the
    owed documents taken page by page, planned and packed, then settled as accepted)."""
    records = [r for batch in _read_back(bootstrap, topics) for r in batch]
    count = len(records)
    folder = Path(tempfile.mkdtemp(prefix="rfmcube-profile-"))
    (folder / "mapping.yaml").write_text(mapping_text, encoding="utf-8")
    mapping = Mapping.load(folder / "mapping.yaml")
    hints = {
        topic: {col: parse_hint(h) for col, h in mapping.hints_for(topic).items()}
        for topic in mapping.topics()
    }
    limits = RecordLimits()
    store = StateStore(folder / "alone.db")
    obligations = Obligations(store)
    planner = Planner(
        store,
        obligations,
        mark_deleted=mapping.mark_deleted if mapping.order_delete.policy == "mark" else None,
        orphan_wait=30,
    )
    cpu = dict.fromkeys(("decode", "map", "check", "store", "plan", "pack", "settle"), 0.0)
    clock = time.thread_time
    for start in range(0, count, 2000):
        batch = records[start : start + 2000]
        t0 = clock()
        decoded = [decode_record(r, hints.get(r.topic)) for r in batch]
        t1 = clock()
        mapped: list[EntityChange | None] = [
            mapping.map_event(d) if isinstance(d, ChangeEvent) else None for d in decoded
        ]
        t2 = clock()
        changes = [_checked(c, mapping, limits) for c in mapped if c is not None]
        t3 = clock()
        with open_batch(
            obligations, guests_follow_deletes=mapping.customer_delete.policy == "delete"
        ) as writes:
            writes.now = time.time()
            writes.prefetch((c.kind, c.key) for c in changes)
            for change in changes:
                writes.apply(change)
            writes.set_offsets(_next_offsets(batch))
        cpu["decode"] += t1 - t0
        cpu["map"] += t2 - t1
        cpu["check"] += t3 - t2
        cpu["store"] += clock() - t3
        if (start + 2000) % 10_000 == 0 or start + 2000 >= count:
            _flush_alone(obligations, planner, cpu)
    store.close()
    total = sum(cpu.values())
    print(f"\n== alone: the same {count} records, one thread, no Kafka client running")
    for name, seconds in cpu.items():
        print(f"{name:10s} CPU {seconds:6.2f} s  {_cpu_us(seconds, count)} µs/record")
    print(f"{'all':10s} CPU {total:6.2f} s  {_cpu_us(total, count)} µs/record")


def _flush_alone(obligations: Obligations, planner: Planner, cpu: dict[str, float]) -> None:
    """What ``Flusher._flush`` does, without requests: every answer an acceptance."""
    clock = time.thread_time
    after: tuple[float, int] | None = None
    until = obligations.last_seq()
    while True:
        t0 = clock()
        owed = obligations.take(2000, after, until)
        if not owed:
            cpu["plan"] += clock() - t0
            return
        after = (owed[-1].since, owed[-1].seq)
        plan = planner.plan(owed, time.time())
        t1 = clock()
        drafts = [draft_of(group) for group in plan.groups]
        t2 = clock()
        accepted: dict[DocRef, str] = {}
        done: list[OwedDoc] = [*plan.done, *plan.parked, *(doc for doc, _ in plan.rejected)]
        for group, draft in zip(plan.groups, drafts, strict=True):
            # What settling remembers of an accepted import: each hash it carried.
            for kind, key, digest, *_ in draft.carried:
                if digest is not None:
                    accepted[(Kind(kind), key)] = digest
            done.extend(upsert.owed for upsert in group.upserts)
        done += [d.owed for d in plan.deletes if d.owed is not None]
        deleted = {d.ref: d.identity for d in plan.deletes}
        obligations.settle(Settlement(done=done, accepted=accepted, deleted=deleted))
        cpu["plan"] += t1 - t0
        cpu["pack"] += t2 - t1
        cpu["settle"] += clock() - t2


def _next_offsets(records: list[RawRecord]) -> dict[tuple[str, int], int]:
    offsets: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets


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
    parser.add_argument(
        "--consumer-in-thread",
        action="store_true",
        help="kafka.consumer_process: false (the consumer in a thread: its stages metered)",
    )
    args = parser.parse_args(argv)
    variants: list[str] = args.variant or [""]
    consumer_process = not args.consumer_in_thread
    if any("--no-meters" not in shlex.split(v) for v in variants):
        check_meters()
    where = "a child process" if consumer_process else "a thread of the service"
    print(f"load before: {_loadavg()}; the service's Kafka consumer in {where}")
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
                run = run_service(sub, options, consumer_process)
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
                alone(r.bootstrap, r.topics, mapping_for_prefix(r.shop.prefix))
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
