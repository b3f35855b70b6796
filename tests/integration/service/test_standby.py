"""One active instance, hot standbys: failover on the real broker and the emulator.

Every instance has its own store (as every pod has its own volume). The
emulator's request log shows the budget held across all of them.
"""

from __future__ import annotations

import itertools
import time

import pytest

from testkit.pipeline import Pipeline
from testkit.workbench import ServiceProcess

BUDGET = 30  # requests per WINDOW seconds, for the key, whatever the replica count
WINDOW = 6.0
PACING = {"requests_per_minute": BUDGET, "window_seconds": WINDOW}


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def _wait_for(service: ServiceProcess, text: str, timeout: float) -> None:
    found = service.wait_for_log(text, timeout)
    assert found, f"no {text!r} (running: {service.running()}) in:\n{service.log()[-3000:]}"


def _roles_settled(instances: list[ServiceProcess], timeout: float = 30) -> None:
    """Until exactly one instance is active and every other one stands by."""
    deadline = time.monotonic() + timeout
    while True:
        logs = [s.log() for s in instances]
        active = sum("active for 9 partitions" in log for log in logs)
        standing = sum("following the topics" in log for log in logs)
        if active == 1 and standing == len(instances) - 1:
            return
        assert time.monotonic() < deadline, "\n---\n".join(log[-1500:] for log in logs)
        time.sleep(0.2)


@pytest.mark.parametrize("replicas", [2, 3])
def test_the_standby_takes_over_from_a_killed_active_within_the_budget(
    pipeline: Pipeline, replicas: int
) -> None:
    pipeline.api.change(requests_per_minute=BUDGET, window_seconds=WINDOW)
    shop = pipeline.shop(seed=107 + replicas)
    shop.workload(customers=60, guest_orders=12)
    instances = [
        pipeline.start(pacing=PACING, store={"path": str(pipeline.folder / f"store-{n}.db")})
        for n in range(replicas)
    ]
    _roles_settled(instances)
    bursts = 6
    bounds = [len(shop.records) * i // bursts for i in range(bursts + 1)]
    killed = 0
    for number, (start, stop) in enumerate(itertools.pairwise(bounds)):
        pipeline.write_shop(shop, start, stop)
        time.sleep(1.5)
        if number in (1, 3) and killed < replicas - 1:
            # Under load: the active has sent some of what it owes, not all of it.
            active = next(s for s in instances if s.running() and "active for" in s.log())
            active.kill()
            killed += 1
            survivors = [s for s in instances if s.running()]
            deadline = time.monotonic() + 30
            while not any("taking over" in s.log() for s in survivors):
                assert time.monotonic() < deadline, "no standby took over"
                time.sleep(0.2)
    new_active = next(s for s in instances if s.running() and "taking over" in s.log())
    pipeline.wait_caught_up(new_active, timeout=120)
    pipeline.wait_equal(shop, timeout=60)
    for instance in instances:
        if instance.running():
            assert instance.stop() == 0
    log = pipeline.api.requests()
    assert [r for r in log if r["status"] == 429] == []
    assert _max_in_window([r["time"] for r in log], WINDOW) <= BUDGET
    logs = "\n---\n".join(i.log()[-2000:] for i in instances)
    assert "after another instance" in new_active.log(), logs


def test_a_standby_keeps_its_store_warm_and_sends_nothing(pipeline: Pipeline) -> None:
    shop = pipeline.shop(seed=113)
    shop.workload(customers=20, guest_orders=4)
    active = pipeline.start(pacing=PACING, store={"path": str(pipeline.folder / "a.db")})
    _wait_for(active, "active for 9 partitions", 30)
    standby = pipeline.start(pacing=PACING, store={"path": str(pipeline.folder / "b.db")})
    _roles_settled([active, standby])
    pipeline.write_shop(shop)
    pipeline.wait_caught_up(active)
    pipeline.wait_equal(shop, timeout=30)
    # The active's own checks first: when its last import came after the deletes, the
    # shop is equal before that import's process was checked (a second later).
    pipeline.wait_imports_checked(active)
    sent = len(pipeline.api.requests())
    # A graceful stop of the active: the standby takes over at once, with a
    # store that followed the topics and owes only what was not committed.
    assert active.stop() == 0
    _wait_for(standby, "taking over", 30)
    time.sleep(WINDOW + 2.0)  # past the window it leaves to the other instance's budget
    assert standby.stop() == 0
    assert "restoring" not in standby.log()
    assert pipeline.api.requests()[sent:] == [], "the standby sent again what was delivered"
