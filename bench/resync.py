"""The resync at scale: a whole shop sent again to the emulator at the API's real limits.

    python -m bench.resync [--customers 100000] [--seed 7] [--no-dry-run] [--no-verify]
        [--store-cache DIR] [--timeline]

1. A synthetic shop (``bench/bigshop.py``: customers, and 5 orders and 15 items
   per customer) is written into the service's SQLite store through the
   service's own decoding, mapping and store code (``Ingest.ingest(records,
   owe=False)``, as the start-up restore does), without Kafka: producing two
   million records and restoring them from the topics would take longer than
   the resync itself, and a resync from a complete store never reads the
   topics. The topics exist, empty, so that the service starts; the store
   then holds no applied offsets (it never read those topics), and an
   accepted hash for every document, as if the service had sent the shop
   before Rfmcube lost it.
2. The emulator runs with the API's limits: 60 requests a minute,
   200,000,000 bytes a request. The service (``rfmcube-cdc run``) runs with
   its defaults: ``max_request_bytes`` 200,000,000, a 30 s timeout plus
   1 s a MB of body.
3. ``rfmcube-cdc resync --dry-run`` (the estimate), then ``rfmcube-cdc
   resync``, until it says done, while a thread asks ``/healthz`` every 0.2 s
   (a liveness probe with a one-second timeout) and another reads the CPU and
   peak RSS of the service's child processes (its Kafka consumer, its planning
   workers) before they end.

Printed: documents, import bytes and requests beside ceil(bytes /
max_request_bytes), process checks, the resync's wall time and documents/s,
the peak RSS of the service, of its children and of the emulator, the CPU of
each, the emulator's time per import, the slowest health answer, and whether
the emulator ends holding the shop: every customer and order, compared by
digest (``bench.bigshop.state_digests``). Exits 1 when a bound of the issue
fails: more imports than ceil(bytes / max) + 1, the service's peak RSS above
512 MiB, a health answer slower than a second, or the emulator not holding the
shop.

``--timeline`` also prints the CPU of the service, of its planning workers
(together), of its consumer process and of the emulator, second by second, in
% of one core: which part waits for which (bench/README.md, "Issue 20, third
round").

``--store-cache DIR`` keeps the built store there (by size and seed) and copies
it for the next run: building the 300,000-customer shop takes about 6 minutes.
Delete it when the mapping, the decoding or the store's format changes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bigshop import ShopSize, expected_digests, snapshot_records, state_digests
from bench.pipeline import cpu_seconds, status_kib
from bench.watch import HealthProbe, ProcessTree
from consumer.changes.mapping import Mapping
from consumer.ingest import Ingest
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from testkit.emulator import EmulatorProcess
from testkit.shop import topics_for
from testkit.workbench import (
    ServiceProcess,
    mapping_for_prefix,
    recreate_topics,
    start_broker,
    write_config,
)

API_KEY = "bench-key"
MAX_REQUEST_BYTES = 200_000_000  # the API's limit, and the service's default
GIB = 1024**3
MIB = 1024**2
MB = 1_000_000
RSS_BOUND_MIB = 512  # issue 20: the service's peak RSS at 200 MB imports
HEALTH_BOUND_SECONDS = 1.0  # issue 20: every /healthz answer within a second


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Built:
    records: int
    seconds: float
    rows: dict[str, int]
    store_bytes: int


def cached_store(
    path: Path, mapping: Mapping, size: ShopSize, *, prefix: str, seed: int, cache: Path | None
) -> Built:
    """:func:`build_store`, or a copy of the store built before for this size and seed."""
    if cache is None:
        return build_store(path, mapping, size, prefix=prefix, seed=seed)
    kept = cache / f"shop-{size.customers}-{seed}.db"
    if not kept.exists():
        cache.mkdir(parents=True, exist_ok=True)
        built = build_store(kept, mapping, size, prefix=prefix, seed=seed)
        with contextlib.closing(StateStore(kept)) as store:  # one file: no WAL beside it
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        built = Built(0, 0.0, {}, kept.stat().st_size)
    started = time.monotonic()
    shutil.copyfile(kept, path)
    with contextlib.closing(StateStore(path)) as store:
        built.rows = store.counts()
    print(f"store copied from {kept} in {time.monotonic() - started:.0f} s", flush=True)
    return built


def build_store(path: Path, mapping: Mapping, size: ShopSize, *, prefix: str, seed: int) -> Built:
    """The shop's rows in a new store, through the service's decoding, mapping and store
    (as a restore writes them: rows only, nothing owed)."""
    started = time.monotonic()
    store = StateStore(path)

    def refuse(record: Any, reason: str) -> None:
        raise SystemExit(f"the synthetic shop wrote a bad record at {record.position}: {reason}")

    ingest = Ingest(Obligations(store), mapping, dead_letter=refuse)
    records = 0
    for batch in snapshot_records(size, prefix=prefix, seed=seed):
        ingest.ingest(batch, owe=False)
        records += len(batch)
    # Those records were never in the (empty) topics: the store must not claim to
    # have applied offsets there, or the service would commit them.
    store.db.execute("DELETE FROM offsets")
    # As if the service had sent the shop before: Rfmcube lost it since (the API
    # page's case), and the resync must forget every accepted hash.
    store.db.execute(
        "INSERT INTO accepted (kind, key, hash) SELECT kind, key, 'sent before' FROM rows"
        " WHERE kind IN ('customer', 'order') UNION ALL SELECT DISTINCT 'guest', email,"
        " 'sent before' FROM rows WHERE kind = 'order' AND parent IS NULL"
    )
    rows = store.counts()
    store.close()
    return Built(records, time.monotonic() - started, rows, path.stat().st_size)


@dataclass
class Resynced:
    started_at: float  # wall clock, to place the emulator's log on the resync's timeline
    seconds: float
    output: str
    returncode: int
    dry_run: str = ""
    dry_run_seconds: float = 0.0
    service_cpu: float = 0.0
    emulator_cpu: float = 0.0
    service_hwm_kib: int = 0
    emulator_hwm_kib: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""
    health_slowest: float = 0.0
    health_answers: int = 0
    health_failures: int = 0
    health_slow: list[tuple[float, float]] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)
    children_hwm_kib: int = 0
    timeline: list[str] = field(default_factory=list)


def _cli(config: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli.main", *args, "--config", str(config)],
        env={**os.environ, "RFMCUBE_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _wait_active(service: ServiceProcess, timeout: float) -> None:
    if not service.wait_for_log("active:", timeout):
        raise SystemExit(f"the service did not become active:\n{service.log()[-3000:]}")


def run_resync(
    config: Path,
    service: ServiceProcess,
    api: EmulatorProcess,
    *,
    health_port: int,
    dry_run: bool,
    timeout: float,
) -> Resynced:
    assert service.process is not None
    pid = service.process.pid
    _wait_active(service, 120)
    dry_text, dry_seconds = "", 0.0
    if dry_run:
        started = time.monotonic()
        done = _cli(config, "resync", "--dry-run", timeout=timeout)
        dry_seconds = time.monotonic() - started
        dry_text = done.stdout + done.stderr
    load_before = _loadavg()
    cpu_before = cpu_seconds(pid), cpu_seconds(api.pid)
    started_at, started = time.time(), time.monotonic()
    tree = ProcessTree(pid, others={"emulator": api.pid})
    with HealthProbe(health_port) as probe, tree:
        done = _cli(config, "resync", timeout=timeout)
        seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    result = Resynced(started_at, seconds, output, done.returncode, dry_text, dry_seconds)
    result.health_slowest, result.health_failures = probe.slowest, probe.failures
    result.health_answers = probe.answers
    result.processes = tree.lines()
    result.children_hwm_kib = tree.children_hwm_kib()
    result.timeline = tree.timeline()
    result.health_slow = [(at - started_at, took) for at, took in probe.slow]
    result.service_cpu = cpu_seconds(pid) - cpu_before[0]
    result.emulator_cpu = cpu_seconds(api.pid) - cpu_before[1]
    result.load_before, result.load_after = load_before, _loadavg()
    result.service_hwm_kib = status_kib(pid, "VmHWM")
    result.emulator_hwm_kib = status_kib(api.pid, "VmHWM")
    result.requests = api.requests()
    return result


def _dry_run_figure(text: str, name: str) -> int | None:
    found = re.search(rf"{name}: (\d+)", text)
    return None if found is None else int(found[1])


def report(
    size: ShopSize, built: Built, run: Resynced, verified: str | None, *, timeline: bool = False
) -> bool:
    """Print the figures (with ``timeline``, the CPU of each part second by second);
    True when every bound holds."""
    imports = [r for r in run.requests if r["call"] == "import"]
    accepted = [r for r in imports if r["status"] == 200]
    checks = [r for r in run.requests if r["call"] == "processes"]
    statuses: dict[str, int] = {}
    for r in run.requests:
        statuses[f"{r['call']} {r['status']}"] = statuses.get(f"{r['call']} {r['status']}", 0) + 1
    import_bytes = sum(r["bytes"] for r in accepted)
    bound = math.ceil(import_bytes / MAX_REQUEST_BYTES)
    entries = sum(len(r["customers"]) for r in accepted)  # guest customers too
    orders = sum(len(r["orders"]) for r in accepted)
    said = re.search(r"done: (\d+) documents", run.output)
    documents = int(said[1]) if said else 0  # customers and orders, as the service counts
    service_gib = run.service_hwm_kib * 1024 / GIB
    print(f"shop: {size.customers} customers, {size.orders} orders, {size.items} items")
    print(
        f"store built in {built.seconds:.0f} s from {built.records} snapshot records:"
        f" rows {built.rows}, {built.store_bytes / MB:.0f} MB"
    )
    if run.dry_run:
        print(f"dry run ({run.dry_run_seconds:.1f} s):")
        for line in run.dry_run.strip().splitlines():
            print(f"  {line.strip()}")
    print(f"resync: exit {run.returncode}, {run.seconds:.1f} s (load {run.load_before} before,")
    print(f"  {run.load_after} after)")
    print(f"  documents: {documents} (customers and orders); in the imports: {entries} customer")
    print(f"  entries (guest customers too), {orders} orders")
    print(f"  import bytes {import_bytes}, ceil(/ {MAX_REQUEST_BYTES}) = {bound}")
    print(f"  imports accepted: {len(accepted)} of {len(imports)} sent (at most {bound + 1})")
    print(f"  process checks: {len(checks)}; requests by call and status: {statuses}")
    for r in run.requests:
        at = r["time"] - run.started_at
        if r["call"] == "import":
            print(
                f"    {at:6.1f} s import {r['status']} {r['processId']}: {r['bytes'] / MB:.1f} MB,"
                f" {len(r['customers'])} customers, {len(r['orders'])} orders; the emulator"
                f" read, parsed and checked it in {r.get('seconds', 0):.1f} s (the upload"
                f" {r.get('received', 0):.1f} s of it)"
            )
        else:
            print(f"    {at:6.1f} s {r['call']} {r['status']} {r.get('processId')}")
    print(f"  documents/s: {documents / run.seconds:.0f}")
    print(
        f"  /healthz every 0.2 s: {run.health_answers} answers, the slowest"
        f" {run.health_slowest:.2f} s, {run.health_failures} failed"
    )
    if run.health_slow:
        slow = ", ".join(f"{took:.1f} s at {at:.0f} s" for at, took in run.health_slow[:10])
        print(f"    answers over 0.5 s: {slow}")
    print(f"  CPU: service {run.service_cpu:.1f} s, emulator {run.emulator_cpu:.1f} s")
    for line in run.processes:
        print(f"    {line}")
    print(
        f"  peak RSS: service {run.service_hwm_kib / 1024:.0f} MiB (its children"
        f" {run.children_hwm_kib / 1024:.0f} MiB together), emulator"
        f" {run.emulator_hwm_kib / 1024:.0f} MiB"
    )
    if timeline:
        print("  CPU over the resync, % of one core (the planning workers together):")
        for line in run.timeline:
            print(line)
    ok = run.returncode == 0 and "done" in run.output
    if not ok:
        print(f"the resync did not finish:\n{run.output[-3000:]}")
    if len(accepted) > bound + 1 or len(imports) != len(accepted):
        print(f"FAILED: {len(imports)} imports sent, at most {bound + 1} allowed, all accepted")
        ok = False
    if run.service_hwm_kib > RSS_BOUND_MIB * 1024:
        print(f"FAILED: the service's peak RSS is {service_gib:.2f} GiB, above {RSS_BOUND_MIB} MiB")
        ok = False
    if run.health_slowest > HEALTH_BOUND_SECONDS or run.health_failures:
        print(f"FAILED: a /healthz answer took {run.health_slowest:.2f} s (or failed)")
        ok = False
    if verified is not None:
        if verified:
            print(f"FAILED: the emulator does not hold the shop: {verified}")
            ok = False
        else:
            print("the emulator holds the shop: every customer and order, equal by digest")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resync", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-dry-run", action="store_true", help="skip resync --dry-run")
    parser.add_argument("--no-verify", action="store_true", help="skip the state comparison")
    parser.add_argument("--keep", action="store_true", help="keep the folder (store, logs)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="for the resync, s")
    parser.add_argument("--store-cache", type=Path, help="keep and reuse built stores here")
    parser.add_argument(
        "--timeline", action="store_true", help="print each part's CPU second by second"
    )
    args = parser.parse_args(argv)
    size = ShopSize.scaled(args.customers)

    bootstrap = start_broker()
    prefix = f"resync{uuid.uuid4().hex[:8]}"
    topics = [*topics_for(prefix).values(), f"{prefix}.dead-letters"]
    recreate_topics(bootstrap, topics, partitions=3)
    folder = Path(tempfile.mkdtemp(prefix="rfmcube-resync-"))
    print(f"folder {folder}, load {_loadavg()}", flush=True)
    try:
        with EmulatorProcess(api_key=API_KEY, requests_per_minute=60) as api:
            port = _free_port()
            config = write_config(
                folder,
                bootstrap=bootstrap,
                api_url=api.url,
                group=f"{prefix}-group",
                dead_letter_topic=f"{prefix}.dead-letters",
                mapping=mapping_for_prefix(prefix),
                sections={"service": {"health_port": port, "health_host": "127.0.0.1"}},
            )
            mapping = Mapping.load(folder / "mapping.yaml")
            built = cached_store(
                folder / "state.db",
                mapping,
                size,
                prefix=prefix,
                seed=args.seed,
                cache=args.store_cache,
            )
            print(f"store built in {built.seconds:.0f} s: {built.rows}", flush=True)
            service = ServiceProcess(config, API_KEY, folder / "service.log").start()
            try:
                run = run_resync(
                    config,
                    service,
                    api,
                    health_port=port,
                    dry_run=not args.no_dry_run,
                    timeout=args.timeout,
                )
                verified = None
                if not args.no_verify:
                    started = time.monotonic()
                    held = state_digests(api.state())
                    want = expected_digests(size, args.seed)
                    verified = held.difference(want)
                    print(f"state compared in {time.monotonic() - started:.0f} s", flush=True)
            finally:
                code = service.stop(timeout=120)
            if code != 0:
                print(f"the service exited {code}:\n{service.log()[-3000:]}")
            ok = report(size, built, run, verified, timeline=args.timeline) and code == 0
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
