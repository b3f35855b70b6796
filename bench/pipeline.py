"""End-to-end benchmarks: the real broker, the service, the emulator over HTTP.

python -m bench.pipeline throughput [--records N] [--repeat N]
    records/s from the broker to the emulator with the rate limit lifted
python -m bench.pipeline steady [--rate 200] [--seconds 300]
    a live shop at RATE events/s against the 60 requests/min limit:
    requests per 10,000 events (against one request per event), delay
    from the event's ts_ms to the API's acceptance (p50, p99), peak RSS
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from emulator.shop import Shop, document_of
from emulator.testing import EmulatorProcess
from emulator.workbench import (
    ServiceProcess,
    mapping_for_prefix,
    produce,
    recreate_topics,
    start_broker,
    wait_caught_up,
    write_config,
)

API_KEY = "bench-key"


@dataclass
class Rig:
    bootstrap: str
    api: EmulatorProcess
    folder: Path
    shop: Shop
    group: str

    @property
    def topics(self) -> list[str]:
        return list(self.shop.topics.values())

    def service(self, requests_per_minute: int, min_window: float = 1.0) -> ServiceProcess:
        config = write_config(
            self.folder,
            bootstrap=self.bootstrap,
            api_url=self.api.url,
            group=self.group,
            dead_letter_topic=f"{self.shop.prefix}.dead-letters",
            mapping=mapping_for_prefix(self.shop.prefix),
            sections={
                "pacing": {
                    "requests_per_minute": requests_per_minute,
                    "min_window_seconds": min_window,
                }
            },
        )
        return ServiceProcess(config, API_KEY, self.folder / "service.log").start()


@contextmanager
def rig(requests_per_minute: int, *, live: bool = False) -> Iterator[Rig]:
    bootstrap = start_broker()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    shop = Shop(prefix=prefix, live=live)
    recreate_topics(bootstrap, [*shop.topics.values(), f"{prefix}.dead-letters"], partitions=3)
    folder = Path(tempfile.mkdtemp(prefix="rfmcube-bench-"))
    with EmulatorProcess(
        api_key=API_KEY, requests_per_minute=requests_per_minute, process_delay_ms=50
    ) as api:
        yield Rig(bootstrap, api, folder, shop, f"{prefix}-group")


def peak_rss_mib(service: ServiceProcess) -> float:
    assert service.process is not None
    status = Path(f"/proc/{service.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def throughput(records: int, repeat: int) -> None:
    rates = []
    for run in range(repeat):
        with rig(requests_per_minute=1_000_000) as r:
            while len(r.shop.records) < records:
                r.shop.workload(customers=200, guest_orders=40)
            produce(r.bootstrap, [(x.topic, x.key, x.value) for x in r.shop.records])
            count = len(r.shop.records)
            service = r.service(requests_per_minute=1_000_000, min_window=0.2)
            started = time.monotonic()
            if not wait_caught_up(r.bootstrap, r.group, r.topics, service, timeout=900):
                raise SystemExit(f"did not catch up; see {service.log_path}")
            elapsed = time.monotonic() - started
            rss = peak_rss_mib(service)
            service.stop()
            requests = len(r.api.requests())
            rates.append(count / elapsed)
            print(
                f"run {run + 1}: {count} records in {elapsed:.1f} s"
                f" = {count / elapsed:,.0f} records/s (start-up included),"
                f" {requests} requests, peak RSS {rss:.0f} MiB"
            )
    print(f"median: {statistics.median(rates):,.0f} records/s")


def steady(rate: int, seconds: int) -> None:
    with rig(requests_per_minute=60, live=True) as r:
        service = r.service(requests_per_minute=60)
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
            q = statistics.quantiles(delays, n=100)
            print(
                f"delay ts_ms -> accepted: p50 {statistics.median(delays):.2f} s, p99 {q[98]:.2f} s"
            )
        print(f"peak RSS of the service: {rss:.0f} MiB")


def _delays(events: list[tuple[float, tuple[str, str]]], log: list[dict[str, Any]]) -> list[float]:
    """For each event, the time to the first accepted request after it carrying its document."""
    by_doc: dict[tuple[str, str], list[float]] = {}
    for entry in log:
        for kind in ("customers", "orders"):
            for key in entry.get(kind) or []:
                by_doc.setdefault((kind, str(key)), []).append(entry["time"])
    delays = []
    for at, doc in events:
        later = [t for t in by_doc.get(doc, []) if t >= at - 0.001]
        if later:
            delays.append(min(later) - at)
    return delays


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="which", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--records", type=int, default=60_000)
    t.add_argument("--repeat", type=int, default=3)
    s = sub.add_parser("steady")
    s.add_argument("--rate", type=int, default=200)
    s.add_argument("--seconds", type=int, default=300)
    args = parser.parse_args(argv)
    if args.which == "throughput":
        throughput(args.records, args.repeat)
    else:
        steady(args.rate, args.seconds)


if __name__ == "__main__":
    main()
