"""The first sync of a large shop: a new deployment meets Debezium's snapshot in Kafka.

    python -m bench.firstsync [--customers 100000] [--seed 7] [--no-verify]

1. The snapshot of the synthetic shop of ``bench/bigshop.py`` (customers, 5
   orders and 15 items each; op ``r``, the JSON converter without schemas) is
   produced into three topics of three partitions each, as Debezium's initial
   snapshot writes them: all customers, then every order with its items. The
   topics are named by size and seed and kept: a later run finds them complete
   (by their end offsets) and reads them again with a new consumer group, since
   producing 2.1 million records takes minutes.
2. The emulator runs with the API's limits (60 requests a minute, 200,000,000
   bytes a request), empty. The service (``rfmcube-cdc run``) starts with an
   empty store and a new group, and its defaults: ``max_request_bytes``
   200,000,000, ``store.max_owed_documents`` 1,000,000.
3. The clock runs from its start until the group has committed every record
   (lag 0); then until every import's process was checked. Meanwhile a thread
   asks ``/healthz`` every 0.2 s and another samples the CPU and peak RSS of the
   service and its children.
4. The emulator's state is compared, by digest, with the shop regenerated from
   its seed (``--no-verify`` skips it).

Printed: records and documents, the wall time to lag 0 and records/s, requests by
call and status, each import's size and time, peak RSS and CPU of each process,
the slowest health answer, and whether the emulator holds the shop. Exits 1
when it does not, when an answer took more than a second, or when the service's
peak RSS passed 512 MiB.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from bench.bigshop import ShopSize, expected_digests, snapshot_records, state_digests
from bench.pipeline import cpu_seconds, status_kib
from bench.resync import API_KEY, MAX_REQUEST_BYTES, MB, RSS_BOUND_MIB, _free_port, _loadavg
from bench.watch import HealthProbe, ProcessTree
from consumer.source.replay import end_offsets, partitions_of
from testkit.emulator import EmulatorProcess
from testkit.shop import topics_for
from testkit.workbench import (
    ServiceProcess,
    caught_up,
    mapping_for_prefix,
    recreate_topics,
    start_broker,
    write_config,
)


def _records(size: ShopSize) -> int:
    return size.customers + size.orders + size.items


def snapshot_topics(bootstrap: str, size: ShopSize, seed: int) -> tuple[str, float]:
    """The topics holding the shop's snapshot, produced now unless a run before did
    (complete, by their end offsets). Returns their prefix and the producing time."""
    prefix = f"firstsync{size.customers}s{seed}"
    topics = list(topics_for(prefix).values())
    try:
        ends = end_offsets(bootstrap, partitions_of(bootstrap, topics))
    except Exception:  # the topics do not exist yet
        ends = {}
    if sum(ends.values()) == _records(size) and len(ends) == 9:
        print(f"the snapshot is in {prefix}.* already ({sum(ends.values())} records)")
        return prefix, 0.0
    recreate_topics(bootstrap, [*topics, f"{prefix}.dead-letters"], partitions=3)
    started = time.monotonic()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=50,
        batch_size=512 * 1024,
        compression_type=None,
    )
    produced = 0
    try:
        for batch in snapshot_records(size, prefix=prefix, seed=seed):
            for record in batch:
                producer.send(
                    record.topic, key=record.key, value=record.value, partition=record.partition
                )
            produced += len(batch)
            if produced % 200_000 < len(batch):
                print(f"  produced {produced} records", flush=True)
        producer.flush()
    finally:
        producer.close()
    seconds = time.monotonic() - started
    print(f"produced {produced} records in {seconds:.0f} s", flush=True)
    return prefix, seconds


def _wait(condition: Any, timeout: float, every: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.firstsync", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-verify", action="store_true", help="skip the state comparison")
    parser.add_argument("--keep", action="store_true", help="keep the folder (store, logs)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="for the sync, s")
    args = parser.parse_args(argv)
    size = ShopSize.scaled(args.customers)
    bootstrap = start_broker()
    prefix, produced_in = snapshot_topics(bootstrap, size, args.seed)
    topics = list(topics_for(prefix).values())
    group = f"{prefix}-{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix="rfmcube-firstsync-"))
    ok = True
    try:
        with EmulatorProcess(api_key=API_KEY, requests_per_minute=60) as api:
            port = _free_port()
            config = write_config(
                folder,
                bootstrap=bootstrap,
                api_url=api.url,
                group=group,
                dead_letter_topic=f"{prefix}.dead-letters",
                mapping=mapping_for_prefix(prefix),
                sections={"service": {"health_port": port, "health_host": "127.0.0.1"}},
            )
            load_before = _loadavg()
            started_at, started = time.time(), time.monotonic()
            service = ServiceProcess(config, API_KEY, folder / "service.log").start()
            assert service.process is not None
            pid = service.process.pid
            emulator_cpu = cpu_seconds(api.pid)
            try:
                with HealthProbe(port) as probe, ProcessTree(pid) as tree:
                    lag0 = _wait(lambda: caught_up(bootstrap, group, topics), args.timeout)
                    lag0_seconds = time.monotonic() - started

                    def checked() -> bool:
                        log = api.requests()
                        polled = {
                            r["processId"]
                            for r in log
                            if r["call"] == "processes" and r["status"] == 200
                        }
                        accepted = [r for r in log if r["call"] == "import" and r["status"] == 200]
                        return all(r["processId"] in polled for r in accepted)

                    all_checked = _wait(checked, 300)
                    checked_seconds = time.monotonic() - started
                service_hwm = status_kib(pid, "VmHWM")
            finally:
                code = service.stop(timeout=120)
            emulator_cpu = cpu_seconds(api.pid) - emulator_cpu
            emulator_hwm = status_kib(api.pid, "VmHWM")
            requests = api.requests()
            load_after = _loadavg()
            verified = None
            if not args.no_verify:
                compared = time.monotonic()
                verified = state_digests(api.state()).difference(expected_digests(size, args.seed))
                print(f"state compared in {time.monotonic() - compared:.0f} s")
        records = _records(size)
        documents = size.customers + size.orders
        statuses = Counter(f"{r['call']} {r['status']}" for r in requests)
        imports = [r for r in requests if r["call"] == "import" and r["status"] == 200]
        import_bytes = sum(r["bytes"] for r in imports)
        print(f"shop: {size.customers} customers, {size.orders} orders, {size.items} items")
        print(
            f"snapshot: {records} records in {prefix}.* (produced in {produced_in:.0f} s this run)"
            if produced_in
            else f"snapshot: {records} records in {prefix}.* (produced by an earlier run)"
        )
        print(f"first sync: load {load_before} before, {load_after} after")
        print(
            f"  lag 0 after {lag0_seconds:.1f} s ({'reached' if lag0 else 'NOT reached'}):"
            f" {records / lag0_seconds:.0f} records/s, {documents / lag0_seconds:.0f}"
            " documents/s"
        )
        print(
            f"  every import checked after {checked_seconds:.1f} s"
            f" ({'yes' if all_checked else 'NO'})"
        )
        print(f"  requests by call and status: {dict(sorted(statuses.items()))}")
        print(
            f"  imports: {len(imports)}, {import_bytes} bytes; ceil(/ {MAX_REQUEST_BYTES}) ="
            f" {math.ceil(import_bytes / MAX_REQUEST_BYTES)}"
        )
        for r in imports:
            print(
                f"    {r['time'] - started_at:6.1f} s import {r['processId']}:"
                f" {r['bytes'] / MB:.1f} MB, {len(r['customers'])} customers,"
                f" {len(r['orders'])} orders (the emulator read it in {r.get('seconds', 0):.1f} s)"
            )
        print(
            f"  /healthz every 0.2 s: {probe.answers} answers, the slowest"
            f" {probe.slowest:.2f} s, {probe.failures} failed"
        )
        for line in tree.lines():
            print(f"    {line}")
        print(
            f"  peak RSS: service {service_hwm / 1024:.0f} MiB (children"
            f" {tree.children_hwm_kib() / 1024:.0f} MiB together), emulator"
            f" {emulator_hwm / 1024:.0f} MiB; emulator CPU {emulator_cpu:.1f} s"
        )
        if code != 0:
            print(f"the service exited {code}:\n{service.log()[-3000:]}")
            ok = False
        if not lag0 or not all_checked:
            print("FAILED: the sync did not finish")
            ok = False
        if probe.slowest > 1.0 or probe.failures:
            print(f"FAILED: a /healthz answer took {probe.slowest:.2f} s (or failed)")
            ok = False
        if service_hwm > RSS_BOUND_MIB * 1024:
            print(f"FAILED: the service's peak RSS passed {RSS_BOUND_MIB} MiB")
            ok = False
        if verified is not None:
            if verified:
                print(f"FAILED: the emulator does not hold the shop: {verified}")
                ok = False
            else:
                print("the emulator holds the shop: every customer and order, equal by digest")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
