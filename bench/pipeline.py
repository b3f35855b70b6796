"""End-to-end benchmarks: the real broker, the service, the emulator over HTTP.

python -m bench.pipeline throughput [--records 60000] [--repeat 3] [--format json|avro|both]
    records/s from the broker to the emulator with the rate limit lifted,
    beside the ceiling: a bare kafka-python consumer (bench/ceiling.py, the
    service's client settings) reading the same records and doing nothing;
    both rates, their ratio, the service's CPU and peak RSS. --format avro:
    the same shop's records as the Avro converter writes them (Confluent
    framing) through the registry of scripts/registry; both: JSON (schemas
    on) and Avro alternately in one run, and the two medians
python -m bench.pipeline steady [--rate 200] [--seconds 300] [--consumer-process]
    a live shop at RATE events/s against the 60 requests/min limit, once the
    service has joined its group:
    requests per 10,000 events (against one request per event), delay
    from the event's ts_ms to the API's acceptance (p50, p99), peak RSS
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from kafka.admin import KafkaAdminClient

from consumer.source.replay import end_offsets, partitions_of
from schemas.debezium import RawRecord
from testkit.avro import ApicurioRegistry, avro_twin
from testkit.e2e.registry import start_registry
from testkit.emulator import EmulatorProcess
from testkit.shop import Shop, document_of
from testkit.workbench import (
    ServiceProcess,
    descendants,
    mapping_for_prefix,
    produce,
    recreate_topics,
    start_broker,
    wait_caught_up,
    write_config,
)

API_KEY = "bench-key"
ConsumerProcess = bool | Literal["auto"]  # kafka.consumer_process


Format = Literal["json", "avro"]


@dataclass
class Rig:
    bootstrap: str
    api: EmulatorProcess
    folder: Path
    shop: Shop
    group: str
    registry: str | None = None  # Avro records through this Confluent-compatible registry

    @property
    def topics(self) -> list[str]:
        return list(self.shop.topics.values())

    def service(
        self,
        requests_per_minute: int,
        min_window: float = 1.0,
        *,
        consumer_process: ConsumerProcess = True,
    ) -> ServiceProcess:
        config = self.config(requests_per_minute, min_window, consumer_process=consumer_process)
        return ServiceProcess(config, API_KEY, self.folder / "service.log").start()

    def config(
        self,
        requests_per_minute: int,
        min_window: float = 1.0,
        *,
        consumer_process: ConsumerProcess = True,
    ) -> Path:
        kafka: dict[str, object] = {"consumer_process": consumer_process}
        if self.registry is not None:
            kafka["schema_registry"] = {"url": self.registry, "allow_insecure_http": True}
        return write_config(
            self.folder,
            bootstrap=self.bootstrap,
            api_url=self.api.url,
            group=self.group,
            dead_letter_topic=f"{self.shop.prefix}.dead-letters",
            mapping=mapping_for_prefix(self.shop.prefix),
            sections={
                "kafka": kafka,
                "pacing": {
                    "requests_per_minute": requests_per_minute,
                    "min_window_seconds": min_window,
                },
            },
        )


@contextmanager
def rig(
    requests_per_minute: int, *, live: bool = False, registry: str | None = None
) -> Iterator[Rig]:
    bootstrap = start_broker()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    shop = Shop(prefix=prefix, live=live)
    recreate_topics(bootstrap, [*shop.topics.values(), f"{prefix}.dead-letters"], partitions=3)
    folder = Path(tempfile.mkdtemp(prefix="rfmcube-bench-"))
    with EmulatorProcess(
        api_key=API_KEY, requests_per_minute=requests_per_minute, process_delay_ms=50
    ) as api:
        yield Rig(bootstrap, api, folder, shop, f"{prefix}-group", registry)


def peak_rss_mib(service: ServiceProcess) -> float:
    assert service.process is not None
    return status_kib(service.process.pid, "VmHWM") / 1024


def status_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def busiest_thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of the process's busiest thread: near the wall time, one core is the wall."""
    best = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            best = max(best, (int(fields[11]) + int(fields[12])) / _TICKS)
    return best


_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class MachineCpu:
    """CPU seconds used so far: the whole machine (all cores), the emulator, the broker."""

    busy: float
    emulator: float
    broker: float

    def __sub__(self, other: MachineCpu) -> MachineCpu:
        return MachineCpu(
            self.busy - other.busy, self.emulator - other.emulator, self.broker - other.broker
        )


def machine_cpu() -> MachineCpu:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    idle = int(fields[3]) + int(fields[4])  # idle + iowait
    busy = (sum(int(f) for f in fields[:8]) - idle) / _TICKS
    emulator = broker = 0.0
    for child in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            if b"emulator" in Path(f"/proc/{child}/cmdline").read_bytes():
                emulator += cpu_seconds(child)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if b"kafka.Kafka" in (proc / "cmdline").read_bytes():
                    broker += cpu_seconds(int(proc.name))
    return MachineCpu(busy, emulator, broker)


class CommitWatcher:
    """Watches a group's committed offsets with one long-lived admin client.

    The end offsets are read once (the records are all produced before the
    clock starts); a look-up every 0.1 s is one OffsetFetch request, light
    enough not to steal the CPU the service is measured on.
    """

    def __init__(self, bootstrap: str, group: str, topics: list[str]) -> None:
        self.group = group
        self.ends = end_offsets(bootstrap, partitions_of(bootstrap, topics))
        self._admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rfmcube-bench")

    def close(self) -> None:
        self._admin.close()

    def committed(self) -> int:
        """How many records the group has committed so far, over all partitions."""
        found = self._admin.list_group_offsets({self.group: None}).get(self.group, {})
        offsets = {(tp.topic, tp.partition): o.offset for tp, o in found.items()}
        return sum(min(max(offsets.get(p, 0), 0), end) for p, end in self.ends.items())

    def total(self) -> int:
        return sum(self.ends.values())

    def wait_all(self, service: ServiceProcess, timeout: float) -> tuple[float, float] | None:
        """Monotonic times of the first commit and of the commit covering every record
        (None if the service died or the timeout passed)."""
        deadline = time.monotonic() + timeout
        first: float | None = None
        total = self.total()
        while time.monotonic() < deadline and service.running():
            done = self.committed()
            now = time.monotonic()
            if done and first is None:
                first = now
            if done >= total:
                return (first or now), now
            time.sleep(0.1)
        return None


@dataclass(frozen=True)
class Ceiling:
    """One run of the bare consumer (bench/ceiling.py)."""

    seconds: float  # process start to the last record read
    streaming: float  # first to last record read
    rss_mib: float
    cpu: float  # its own CPU seconds
    machine: MachineCpu


@dataclass
class Run:
    records: int
    ceilings: list[Ceiling]  # the bare consumer, before and after the service
    service_seconds: float  # process start to every record committed
    service_first_commit: float  # process start to the first commit
    service_cpu: float  # CPU seconds of the service process (all threads)
    service_busiest_thread: float  # CPU seconds of its busiest thread
    service_rss_mib: float  # VmHWM of the service process
    workers_rss_mib: float  # VmHWM summed over its child processes (0 without any)
    workers_cpu: float  # CPU seconds of its child processes (the consumer process)
    requests: int
    machine: MachineCpu  # during the service's run

    @property
    def ceiling_rate(self) -> float:
        """Records/s of the bare consumer: the mean time of its runs around the service's."""
        return self.records / statistics.mean(c.seconds for c in self.ceilings)

    @property
    def service_rate(self) -> float:
        return self.records / self.service_seconds

    @property
    def ratio(self) -> float:
        return self.service_rate / self.ceiling_rate


def measure_ceiling(r: Rig, count: int, tag: str = "ceiling") -> Ceiling:
    """The bare consumer, in a child process, on a group of its own."""
    before = machine_cpu()
    started = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ceiling",
            "--bootstrap",
            r.bootstrap,
            "--group",
            f"{r.group}-{tag}",
            "--records",
            str(count),
            *r.topics,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    return Ceiling(
        seconds=result["last_record_at"] - started,
        streaming=result["last_record_at"] - result["first_record_at"],
        rss_mib=result["peak_rss_mib"],
        cpu=result["cpu_seconds"],
        machine=machine_cpu() - before,
    )


def fill(r: Rig, records: int) -> int:
    """Produce the shop's workload until at least ``records`` records are in the topics
    (as the Avro converter writes them when the rig has a registry)."""
    while len(r.shop.records) < records:
        r.shop.workload(customers=200, guest_orders=40)
    rows: list[tuple[str, bytes | None, bytes | None]] = [
        (x.topic, x.key, x.value) for x in r.shop.records
    ]
    if r.registry is not None:
        registry = ApicurioRegistry(r.registry)
        twins = (avro_twin(RawRecord(t, 0, 0, k, v), registry) for t, k, v in rows)
        rows = [(twin.topic, twin.key, twin.value) for twin in twins]
    produce(r.bootstrap, rows)
    return len(r.shop.records)


def throughput_run(r: Rig, records: int, consumer_process: bool = True) -> Run:
    count = fill(r, records)
    ceilings = [measure_ceiling(r, count, "ceiling-before")]
    watcher = CommitWatcher(r.bootstrap, r.group, r.topics)
    service: ServiceProcess | None = None
    try:
        assert watcher.total() == count, (watcher.total(), count)
        before = machine_cpu()
        started = time.monotonic()
        service = r.service(
            requests_per_minute=1_000_000, min_window=0.2, consumer_process=consumer_process
        )
        assert service.process is not None
        caught = watcher.wait_all(service, timeout=900)
        machine = machine_cpu() - before
        if caught is None:
            raise SystemExit(f"did not catch up; see {service.log_path}")
        first_commit, finished = caught
        pid = service.process.pid
        cpu, busiest = cpu_seconds(pid), busiest_thread_cpu_seconds(pid)
        rss = peak_rss_mib(service)
        children = descendants(pid)
        workers_rss = sum(status_kib(p, "VmHWM") for p in children) / 1024
        workers_cpu = sum(cpu_seconds(p) for p in children)
        service.stop()
    finally:
        watcher.close()
        if service is not None and service.running():
            service.kill()  # a failed run must not leave the service behind
    ceilings.append(measure_ceiling(r, count, "ceiling-after"))
    return Run(
        records=count,
        ceilings=ceilings,
        service_seconds=finished - started,
        service_first_commit=first_commit - started,
        service_cpu=cpu,
        service_busiest_thread=busiest,
        service_rss_mib=rss,
        workers_rss_mib=workers_rss,
        workers_cpu=workers_cpu,
        requests=len(r.api.requests()),
        machine=machine,
    )


def throughput(
    records: int,
    repeat: int,
    consumer_process: bool = True,
    formats: tuple[Format, ...] = ("json",),
) -> dict[Format, list[Run]]:
    """The service against the bare consumer on the same records, ``repeat`` times per
    format (alternately, so that the machine's moods fall on both alike)."""
    by_format: dict[Format, list[Run]] = {f: [] for f in formats}
    where = "a process of its own" if consumer_process else "a thread of the service"
    print(f"load before: {_loadavg()}; the service's Kafka consumer in {where}")
    registry = start_registry() if "avro" in formats else None
    for n in range(repeat):
        for form in formats:
            with rig(
                requests_per_minute=1_000_000, registry=registry if form == "avro" else None
            ) as r:
                run = throughput_run(r, records, consumer_process)
            by_format[form].append(run)
            _report(n, form, run)
    for form, runs in by_format.items():
        _summary(form, runs)
    return by_format


def _report(n: int, form: Format, run: Run) -> None:
    workers = (
        f" + consumer process {run.workers_rss_mib:.0f} MiB, CPU {run.workers_cpu:.1f} s"
        if run.workers_rss_mib
        else ""
    )
    bare = ", ".join(
        f"{run.records / c.seconds:,.0f}/s (streaming {run.records / c.streaming:,.0f}/s,"
        f" CPU {c.cpu / run.records * 1e6:.0f} µs/record, {c.machine.busy / c.seconds:.2f}"
        " cores busy)"
        for c in run.ceilings
    )
    print(
        f"run {n + 1} ({'Avro' if form == 'avro' else 'JSON with schemas'}):"
        f" {run.records} records;"
        f" bare consumer {run.ceiling_rate:,.0f} records/s (before, after: {bare});\n"
        f"       service {run.service_seconds:.1f} s = {run.service_rate:,.0f} records/s"
        f" (first commit at {run.service_first_commit:.1f} s); ratio {run.ratio:.2f}\n"
        f"       service: {run.requests} requests, CPU {run.service_cpu:.1f} s"
        f" ({run.service_cpu / run.records * 1e6:.0f} µs/record)"
        f" ({run.service_cpu / run.service_seconds:.2f} cores; busiest thread"
        f" {run.service_busiest_thread:.1f} s), peak RSS {run.service_rss_mib:.0f} MiB"
        f"{workers}; bare consumer peak RSS {max(c.rss_mib for c in run.ceilings):.0f} MiB\n"
        f"       {machine_line(run.machine, run.service_seconds, run.service_cpu)};"
        f" load {_loadavg()}"
    )


def _summary(form: Format, runs: list[Run]) -> None:
    ceiling = statistics.median(run.ceiling_rate for run in runs)
    service = statistics.median(run.service_rate for run in runs)
    ratio = statistics.median(run.ratio for run in runs)
    rss = max(run.service_rss_mib + run.workers_rss_mib for run in runs)
    cpu = statistics.median(run.service_cpu / run.records * 1e6 for run in runs)
    print(
        f"{'Avro' if form == 'avro' else 'JSON with schemas'}, median of {len(runs)}:"
        f" bare consumer {ceiling:,.0f} records/s, service {service:,.0f} records/s,"
        f" ratio {ratio:.2f} (median of the per-run ratios), service CPU {cpu:.0f} µs/record;"
        f" peak RSS of the service {rss:.0f} MiB (highest run)"
    )


def machine_line(machine: MachineCpu, seconds: float, service_cpu: float) -> str:
    cores = os.cpu_count() or 1
    rest = machine.busy - service_cpu - machine.emulator - machine.broker
    return (
        f"machine during the service's run: {machine.busy / seconds:.2f} of {cores} cores busy"
        f" (service {service_cpu:.1f} s, emulator {machine.emulator:.1f} s,"
        f" broker {machine.broker:.1f} s, everything else {rest:.1f} s of CPU)"
    )


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


WARM_UP_SECONDS = 30


def steady(rate: int, seconds: int, consumer_process: ConsumerProcess = "auto") -> None:
    with rig(requests_per_minute=60, live=True) as r:
        service = r.service(requests_per_minute=60, consumer_process=consumer_process)
        # A live shop's service is running before the events it is measured on:
        # its start-up and first join are met once, not on every event.
        if not service.wait_for_log("active for", timeout=60):  # partitions assigned
            raise SystemExit(f"the service did not join its group; see {service.log_path}")
        shop = r.shop
        ids = [shop.sign_up() for _ in range(50)]
        orders = [shop.place_order(c) for c in ids]
        started = time.monotonic()
        sent = 0
        events: list[tuple[float, tuple[str, str]]] = []
        while time.monotonic() - started < seconds:
            tick = time.monotonic()
            before = len(shop.records)
            while len(shop.records) - before < rate:
                choice = shop.rng.random()
                if choice < 0.1:
                    ids.append(shop.sign_up())
                elif choice < 0.35:
                    orders.append(shop.place_order(shop.rng.choice(ids), items=2))
                elif choice < 0.6:
                    shop.set_status(shop.rng.choice(orders), shop.rng.choice(["20", "30", "40"]))
                elif choice < 0.8:
                    shop.edit_profile(shop.rng.choice(ids))
                else:
                    live_items = [
                        i for i, it in shop.items.items() if it["order_id"] in orders[-50:]
                    ]
                    if live_items:
                        shop.edit_item(shop.rng.choice(live_items))
            batch = shop.records[sent:]
            produce(r.bootstrap, [(x.topic, x.key, x.value) for x in batch])
            for x in batch:
                touched = document_of(x.topic, x.value)
                if touched is not None and x.value is not None:
                    events.append((orjson.loads(x.value)["payload"]["ts_ms"] / 1000, touched))
            sent = len(shop.records)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        caught = wait_caught_up(r.bootstrap, r.group, r.topics, service, timeout=180)
        rss = peak_rss_mib(service)
        service.stop()
        log = [q for q in r.api.requests() if 200 <= q["status"] < 300]
        minutes = (log[-1]["time"] - log[0]["time"]) / 60 if len(log) > 1 else 1.0
        delays = _delays(events, log)
        n = len(events)
        print(f"{n} change events in {seconds} s ({n / seconds:.0f}/s); caught up: {caught}")
        per_minute = len(log) / max(minutes, 1e-9)
        print(f"requests: {len(log)} ({per_minute:.1f}/min); a per-event sink: {n}")
        print(
            f"requests per 10,000 events: {len(log) / len(events) * 10_000:.1f}"
            f" (per-event: 10,000; {len(events) / max(len(log), 1):.0f}x fewer)"
        )
        if delays:
            values = [d for d, _, _ in delays]
            q = statistics.quantiles(values, n=100)
            print(
                f"delay ts_ms -> accepted: p50 {statistics.median(values):.2f} s, p99 {q[98]:.2f} s"
            )
            first = events[0][0]
            # The service starts with the shop: the first events also wait for its
            # start-up and the first join; a live shop's service meets that once.
            warm = [d for d, at, _ in delays if at - first >= WARM_UP_SECONDS]
            if len(warm) > 1:
                qw = statistics.quantiles(warm, n=100)
                print(
                    f"  after the first {WARM_UP_SECONDS} s: p50 {statistics.median(warm):.2f} s,"
                    f" p99 {qw[98]:.2f} s"
                )
            slowest = sorted(delays, reverse=True)[:5]
            print(
                "slowest: "
                + ", ".join(
                    f"{k} {key} at +{at - first:.0f} s: {d:.1f} s" for d, at, (k, key) in slowest
                )
            )
        print(f"peak RSS of the service: {rss:.0f} MiB")


def _delays(
    events: list[tuple[float, tuple[str, str]]], log: list[dict[str, Any]]
) -> list[tuple[float, float, tuple[str, str]]]:
    """For each event, the time to the first accepted request after it carrying its
    document, with the event's time and document."""
    by_doc: dict[tuple[str, str], list[float]] = {}
    for entry in log:
        for kind in ("customers", "orders"):
            for key in entry.get(kind) or []:
                by_doc.setdefault((kind, str(key)), []).append(entry["time"])
    delays = []
    for at, doc in events:
        later = [t for t in by_doc.get(doc, []) if t >= at - 0.001]
        if later:
            delays.append((min(later) - at, at, doc))
    return delays


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="which", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--records", type=int, default=60_000)
    t.add_argument("--repeat", type=int, default=3)
    t.add_argument(
        "--consumer-in-thread",
        action="store_true",
        help="the service with kafka.consumer_process: false (the consumer in a thread)",
    )
    t.add_argument(
        "--format",
        choices=["json", "avro", "both"],
        default="json",
        help="JSON with schemas, Avro through scripts/registry, or both alternately",
    )
    s = sub.add_parser("steady")
    s.add_argument("--rate", type=int, default=200)
    s.add_argument("--seconds", type=int, default=300)
    where = s.add_mutually_exclusive_group()
    where.add_argument(
        "--consumer-process",
        dest="consumer",
        action="store_const",
        const=True,
        help="the service with kafka.consumer_process: true (the default is auto)",
    )
    where.add_argument(
        "--consumer-in-thread",
        dest="consumer",
        action="store_const",
        const=False,
        help="the service with kafka.consumer_process: false",
    )
    s.set_defaults(consumer="auto")
    args = parser.parse_args(argv)
    if args.which == "throughput":
        formats: tuple[Format, ...] = ("json", "avro") if args.format == "both" else (args.format,)
        throughput(args.records, args.repeat, not args.consumer_in_thread, formats)
    else:
        steady(args.rate, args.seconds, args.consumer)


if __name__ == "__main__":
    main()
