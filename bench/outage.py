"""A long API outage under a live shop: does the service's memory level off?

python -m bench.outage [--rate 200] [--minutes 5] [--sample 15]

The emulator drops every connection (as an API that is down) while the shop
writes RATE change events a second. What the service owes the API piles up
in its store on disk, not in memory: the service's resident memory should
level off while the owed documents keep growing. Every SAMPLE seconds it
prints the events so far, the documents owed (read from the store) and the
service's RSS; then the API comes back and it reports how long the service
took to catch up. A shortened clock: a higher RATE stands for a longer outage
at 200 events a second (``--rate 1000 --minutes 6`` is 30 minutes of it).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

from bench.pipeline import rig, status_kib
from testkit.shop import Shop
from testkit.workbench import produce, wait_caught_up


def _owed(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM owed").fetchone()[0])
    except sqlite3.Error:
        return -1


def _shop_second(shop: Shop, rate: int, ids: list[int], orders: list[int]) -> None:
    """About ``rate`` change events: sign-ups, orders, status changes, profile edits."""
    before = len(shop.records)
    while len(shop.records) - before < rate:
        roll = shop.rng.random()
        if roll < 0.2 or not ids:
            ids.append(shop.sign_up())
        elif roll < 0.5:
            orders.append(shop.place_order(shop.rng.choice(ids), items=2))
        elif roll < 0.8 and orders:
            shop.set_status(shop.rng.choice(orders), shop.rng.choice(["20", "30", "40"]))
        else:
            shop.edit_profile(shop.rng.choice(ids))


def outage(rate: int, minutes: float, sample: float) -> None:
    with rig(requests_per_minute=60, live=True) as r:
        service = r.service(requests_per_minute=60)
        assert service.process is not None
        pid = service.process.pid
        store = r.folder / "state.db"
        r.api.change(outage=True)
        print(f"API down; the shop writes {rate} events/s for {minutes:g} minutes")
        print(f"{'seconds':>8} {'events':>9} {'owed':>9} {'RSS MiB':>8}")
        shop = r.shop
        ids: list[int] = []
        orders: list[int] = []
        sent = 0
        started = time.monotonic()
        next_sample = started
        samples: list[tuple[float, int, int, float]] = []
        while time.monotonic() - started < minutes * 60:
            tick = time.monotonic()
            _shop_second(shop, rate, ids, orders)
            produce(r.bootstrap, [(x.topic, x.key, x.value) for x in shop.records[sent:]])
            sent = len(shop.records)
            if tick >= next_sample:
                next_sample += sample
                rss = status_kib(pid, "VmRSS") / 1024
                owed = _owed(store)
                samples.append((tick - started, sent, owed, rss))
                print(f"{tick - started:8.0f} {sent:9d} {owed:9d} {rss:8.0f}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        peak = status_kib(pid, "VmHWM") / 1024
        half = [s for s in samples if s[0] >= samples[-1][0] / 2]
        growth = half[-1][3] - half[0][3] if len(half) > 1 else 0.0
        print(
            f"peak RSS during the outage: {peak:.0f} MiB; over its second half RSS moved"
            f" {growth:+.0f} MiB while the owed documents went from {half[0][2]} to {half[-1][2]}"
        )
        r.api.change(outage=False)
        back = time.monotonic()
        caught = wait_caught_up(r.bootstrap, r.group, r.topics, service, timeout=1800)
        print(
            f"API back: caught up {'in' if caught else 'NOT within'}"
            f" {time.monotonic() - back:.0f} s; peak RSS over the whole run"
            f" {status_kib(pid, 'VmHWM') / 1024:.0f} MiB"
        )
        service.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--sample", type=float, default=15.0)
    args = parser.parse_args(argv)
    outage(args.rate, args.minutes, args.sample)


if __name__ == "__main__":
    main()
