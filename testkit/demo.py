"""``make demo``: the main job on embedded defaults, start to finish.

Starts the local broker and the API emulator (60 requests a minute, as the
real API), writes a realistic Debezium stream of the reference shop, runs
``rfmcube-cdc run`` until it has caught up, stops it with SIGTERM and prints
what happened and whether Rfmcube now equals the shop.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from testkit.emulator import EmulatorProcess
from testkit.shop import TOPICS, Shop, expected_state
from testkit.workbench import (
    ServiceProcess,
    produce,
    read_topic,
    recreate_topics,
    start_broker,
    wait_caught_up,
    write_config,
)

API_KEY = "demo-connector-key"
DEAD_LETTERS = "shop.dead-letters"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=60)
    parser.add_argument("--guest-orders", type=int, default=15)
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args(argv)

    bootstrap = start_broker()
    print(f"broker: {bootstrap}")
    shop = Shop(schemas=True)
    shop.workload(customers=args.customers, guest_orders=args.guest_orders)
    recreate_topics(bootstrap, [*TOPICS.values(), DEAD_LETTERS], partitions=3)
    records = [(r.topic, r.key, r.value) for r in shop.records]
    # One malformed record mid-stream: dead-lettered, and the stream goes on.
    poison = (TOPICS["orders"], b'{"id": 999999}', b'{"payload": {"op": "c", "after": ')
    records.insert(len(records) // 2, poison)

    group = f"rfmcube-cdc-demo-{int(time.time())}"
    work = Path(tempfile.mkdtemp(prefix="rfmcube-demo-"))
    topics = list(TOPICS.values())
    with EmulatorProcess(api_key=API_KEY, requests_per_minute=60) as api:
        config = write_config(
            work, bootstrap=bootstrap, api_url=api.url, group=group, dead_letter_topic=DEAD_LETTERS
        )
        service = ServiceProcess(config, API_KEY, work / "service.log").start()
        started = time.monotonic()
        # The shop's day arrives in bursts, as a live stream would.
        bursts = 5
        for number in range(bursts):
            produce(
                bootstrap,
                records[len(records) * number // bursts : len(records) * (number + 1) // bursts],
            )
            time.sleep(1.5)
        print(f"shop stream: {len(records)} records written in {bursts} bursts (one malformed)")
        caught_up = wait_caught_up(bootstrap, group, topics, service, args.timeout)
        elapsed = time.monotonic() - started
        code = service.stop()
        requests = api.requests()
        state = api.state()
        log_path = service.log_path

    stats = _service_stats(service.log())
    by_call = Counter(r["call"] for r in requests if 200 <= r["status"] < 300)
    documents = sum(len(r.get("customers") or []) + len(r.get("orders") or []) for r in requests)
    dead = read_topic(bootstrap, DEAD_LETTERS)
    equal = state == expected_state(shop)
    progress = "caught up" if caught_up else "DID NOT catch up"
    print(f"service: {progress} in {elapsed:.1f} s, exit code {code}")
    print(
        f"records read: {stats.get('records', '?')}"
        f" (documents sent {stats.get('documents_sent', '?')},"
        f" unchanged and not sent {stats.get('documents_unchanged', '?')})"
    )
    print("requests accepted by call: " + ", ".join(f"{c} {n}" for c, n in sorted(by_call.items())))
    print(f"documents carried by those requests: {documents}")
    print(f"dead letters: {len(dead)}" + "".join(f"\n  - {d}" for d in dead))
    orders = sum(len(c["orders"]) for c in state["customers"])
    print(
        f"Rfmcube equals the shop: {'yes' if equal else 'NO'} "
        f"({len(state['customers'])} customers, {orders} orders)"
    )
    print(f"service log: {log_path}")
    return 0 if (equal and caught_up and code == 0) else 1


def _service_stats(log: str) -> dict[str, Any]:
    """The counters the service logs when it stops (``stopped: {...}``)."""
    for line in reversed(log.splitlines()):
        if "stopped: {" in line:
            stats: dict[str, Any] = orjson.loads(line.split("stopped: ", 1)[1])
            return stats
    return {}


if __name__ == "__main__":
    raise SystemExit(main())
