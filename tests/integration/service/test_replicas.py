"""Two replicas at the edges where a takeover can go wrong (issue 17), each put in its
exact window on the real broker and the emulator, each ending with Rfmcube equal
to the shop and every record committed.

Every instance has its own store (as every pod has its own volume)."""

from __future__ import annotations

import random
import time

from testkit.pipeline import Pipeline, until
from testkit.poison import POISON
from testkit.workbench import ServiceProcess, caught_up, free_port, http_status

# The group notices a dead member after its session (6 s here); a takeover after
# another instance waits one window of the key's budget before its first request.
WINDOW = 3.0
PACING = {"requests_per_minute": 60, "window_seconds": WINDOW, "min_window_seconds": 0.3}


def _start(pipeline: Pipeline, name: str, **sections: dict[str, object]) -> ServiceProcess:
    port = free_port()
    service = pipeline.start(
        pacing={**PACING, **sections.pop("pacing", {})},
        store={"path": str(pipeline.folder / f"{name}.db")},
        service={"health_port": port, "health_host": "127.0.0.1"},
        **sections,
    )
    service.health_port = port
    return service


def _ready(service: ServiceProcess) -> bool:
    return http_status(f"http://127.0.0.1:{service.health_port}/readyz") == 200


def _active(instances: list[ServiceProcess]) -> ServiceProcess:
    """The running instance that holds the role now (the last to log it)."""
    candidates = [s for s in instances if s.running()]
    deadline = time.monotonic() + 60
    while True:
        for service in candidates:
            log = service.log()
            took = max(log.rfind("active for 9 partitions"), log.rfind("taking over"))
            lost = max(log.rfind("no longer active"), log.rfind("lost 9 partitions"))
            if took > lost and took >= 0:
                return service
        assert time.monotonic() < deadline, "no active instance"
        time.sleep(0.2)


def _all_committed(pipeline: Pipeline, timeout: float = 120.0) -> None:
    until(
        lambda: caught_up(pipeline.bootstrap, pipeline.group, pipeline.topics),
        timeout,
        "every record committed",
    )


def _stop_all(instances: list[ServiceProcess]) -> None:
    for service in instances:
        if service.running():
            assert service.stop() == 0, service.log()[-3000:]


def test_a_standby_behind_the_commits_replays_them_before_it_acts(pipeline: Pipeline) -> None:
    """The standby's service process is frozen (its consumer process, in the group,
    is not) while the active delivers deletes, item moves and new orders, and is
    killed: the group gives the standby every partition, and it wakes up to take
    over with a store that lacks all of it, its follower never given the chance
    to catch up. It must apply them before it sends: later changes to the same
    orders and customers go out whole, deleted customers stay deleted."""
    shop = pipeline.shop(seed=171)
    ids = [shop.sign_up() for _ in range(12)]
    orders = [shop.place_order(c, items=2) for c in ids[:8]]
    pipeline.write_shop(shop)
    first = _start(pipeline, "a")
    until(lambda: "active for 9 partitions" in first.log(), 30, "an active", first.log)
    second = _start(pipeline, "b", kafka={"consumer_process": True})
    until(lambda: _ready(second), 60, "a ready standby", second.log)
    _all_committed(pipeline)

    second.pause(consumer_too=False)
    gap = len(shop.records)
    new_orders = [shop.place_order(c, items=3) for c in ids[8:]]
    moved = next(i for i, item in shop.items.items() if item["order_id"] == orders[0])
    shop.move_item(moved, orders[1])
    shop.delete_customer(ids[2])
    shop.change_email(ids[3])
    shop.add_item(orders[4])
    pipeline.write_shop(shop, gap)
    _all_committed(pipeline)
    pipeline.wait_equal(shop, timeout=30)
    first.kill()
    time.sleep(9)  # past the dead member's session: the group gives the standby everything
    second.resume()
    until(lambda: "taking over" in second.log(), 60, "the takeover", second.log)

    after = len(shop.records)
    for order_id in [*new_orders, orders[1], orders[4]]:
        shop.edit_item(next(i for i, item in shop.items.items() if item["order_id"] == order_id))
    shop.place_order(ids[3], items=1)  # under the new email
    shop.edit_profile(ids[5])
    pipeline.write_shop(shop, after)
    _all_committed(pipeline)
    pipeline.wait_equal(shop, timeout=60)
    _stop_all([second])
    assert "records the store lacked were applied first" in second.log(), second.log()[-3000:]


def test_a_change_back_after_a_rolling_update_reaches_rfmcube(pipeline: Pipeline) -> None:
    """This pod sends ``true``; while it restarts the other sends ``false``; this pod
    becomes active again and the flag goes back to ``true``: the very document it
    once saw accepted, which Rfmcube no longer holds."""
    shop = pipeline.shop(seed=172)
    hot = [shop.sign_up() for _ in range(4)]
    for customer in hot:
        shop.set_newsletter(customer, True)
    pipeline.write_shop(shop)
    first = _start(pipeline, "a")
    until(lambda: "active for 9 partitions" in first.log(), 30, "an active", first.log)
    _all_committed(pipeline)
    pipeline.wait_equal(shop, timeout=30)

    second = _start(pipeline, "b")
    until(lambda: _ready(second), 60, "a ready standby", second.log)
    assert first.stop() == 0  # a rolling update: this pod first
    until(lambda: "taking over" in second.log(), 30, "the takeover", second.log)
    mark = len(shop.records)
    for customer in hot:
        shop.set_newsletter(customer, False)
    pipeline.write_shop(shop, mark)
    _all_committed(pipeline)
    pipeline.wait_equal(shop, timeout=30)

    first = _start(pipeline, "a")  # the same store, the same name: the same pod again
    until(lambda: _ready(first), 60, "the restarted pod ready", first.log)
    assert second.stop() == 0  # then the other pod
    until(lambda: first.log().count("taking over") >= 1, 30, "the takeover back", first.log)
    mark = len(shop.records)
    for customer in hot:
        shop.set_newsletter(customer, True)
    pipeline.write_shop(shop, mark)
    _all_committed(pipeline)
    pipeline.wait_equal(shop, timeout=30)
    _stop_all([first])


def test_an_import_pending_at_a_failover_is_sent_again_when_its_process_fails(
    pipeline: Pipeline,
) -> None:
    """With ``process_id`` acceptance the old active committed an import's records
    once it was accepted; its process fails after the old active died. The new
    active learns the import from the commits and sends those documents again."""
    shop = pipeline.shop(seed=173)
    shop.workload(customers=20, guest_orders=4)
    first = _start(pipeline, "a")
    until(lambda: "active for 9 partitions" in first.log(), 30, "an active", first.log)
    second = _start(pipeline, "b")
    until(lambda: _ready(second), 60, "a ready standby", second.log)
    pipeline.api.change(process_delay_ms=15_000, process_fail_rate=1.0)
    pipeline.write_shop(shop)
    _all_committed(pipeline)  # accepted, committed: the processes fail in 15 s
    first.kill()
    pipeline.api.change(process_fail_rate=0.0)  # what is sent from now on completes
    until(lambda: "taking over" in second.log(), 30, "the takeover", second.log)
    pipeline.wait_equal(shop, timeout=60)
    failed = [r for r in pipeline.api.requests() if r["call"] == "processes"]
    assert failed, "the new active never checked the old active's import"
    _stop_all([second])


def test_a_delete_waits_for_the_old_actives_pending_import_of_that_customer(
    pipeline: Pipeline,
) -> None:
    """A customer deleted after the old active's import carrying it was accepted:
    the new active must not send the delete before that import's process is done,
    or the import re-creates the customer (a consent deletion undone)."""
    shop = pipeline.shop(seed=174)
    ids = [shop.sign_up() for _ in range(6)]
    for customer in ids:
        shop.place_order(customer, items=2)
    first = _start(pipeline, "a")
    until(lambda: "active for 9 partitions" in first.log(), 30, "an active", first.log)
    second = _start(pipeline, "b")
    until(lambda: _ready(second), 60, "a ready standby", second.log)
    pipeline.api.change(process_delay_ms=20_000)
    pipeline.write_shop(shop)
    _all_committed(pipeline)  # the import carrying them is accepted, its process runs 20 s
    first.kill()
    mark = len(shop.records)
    shop.delete_customer(ids[0])
    pipeline.write_shop(shop, mark)
    until(lambda: "taking over" in second.log(), 30, "the takeover", second.log)
    _all_committed(pipeline, timeout=90)
    pipeline.wait_equal(shop, timeout=40)
    _stop_all([second])


def test_two_replicas_through_kills_and_hostile_records_end_equal(pipeline: Pipeline) -> None:
    """The default deployment's shape, as the issue's black-box run: two instances,
    four SIGKILLs at moments the test draws, hostile records among the stream."""
    rng = random.Random(175)
    shop = pipeline.shop(seed=175)
    shop.workload(customers=60, guest_orders=12)
    hostile = [p for p in POISON if len(p.value or b"") + len(p.key or b"") < 2_000_000]
    records = [(r.topic, r.key, r.value) for r in shop.records]
    for poison in rng.sample(hostile, k=min(9, len(hostile))):
        at = rng.randrange(len(records))
        records.insert(at, (poison.topic(pipeline.prefix), poison.key, poison.value))
    instances = [_start(pipeline, "a"), _start(pipeline, "b")]
    until(lambda: any("active for 9" in s.log() for s in instances), 30, "an active")
    chunks = 6
    bounds = [len(records) * i // chunks for i in range(chunks + 1)]
    kills = 0
    for number in range(chunks):
        pipeline.write(records[bounds[number] : bounds[number + 1]])
        time.sleep(rng.uniform(0.5, 3.0))
        if kills < 4 and number < chunks - 1:
            victim = _active(instances)
            name = "a" if instances.index(victim) == 0 else "b"
            victim.kill()
            kills += 1
            instances[instances.index(victim)] = _start(pipeline, name)
    _all_committed(pipeline, timeout=180)
    pipeline.wait_equal(shop, timeout=90)
    assert all(s.running() for s in instances), "an instance exited by itself"
    _stop_all(instances)


def test_a_steady_trickle_of_bad_records_never_stops_the_service(pipeline: Pipeline) -> None:
    """Dead letters written while a commit flushes the earlier ones (10 a second for
    20 s, with good records between): the service keeps running and commits all."""
    shop = pipeline.shop(seed=176)
    shop.workload(customers=30, guest_orders=5)
    service = _start(pipeline, "a")
    until(lambda: "active for 9 partitions" in service.log(), 30, "an active", service.log)
    bad = [p for p in POISON if len(p.value or b"") < 10_000]
    good = [(r.topic, r.key, r.value) for r in shop.records]
    step = max(1, len(good) // 200)
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 20:
        poison = bad[sent % len(bad)]
        chunk = good[sent * step : (sent + 1) * step]
        pipeline.write([*chunk, (poison.topic(pipeline.prefix), poison.key, poison.value)])
        sent += 1
        time.sleep(0.1)
    pipeline.write(good[sent * step :])
    _all_committed(pipeline)
    pipeline.wait_equal(shop, timeout=30)
    assert service.running(), service.log()[-3000:]
    assert "not acknowledged" not in service.log()
    _stop_all([service])


def test_an_instance_that_sent_and_died_before_committing_is_known_to_the_next(
    pipeline: Pipeline,
) -> None:
    """The second instance takes over, sends, and is killed at its first request, before
    any commit of its own could name it; the first comes back: it must count the
    second's sends against the key's window, so no request is ever refused (429)."""
    budget = {"requests_per_minute": 10, "window_seconds": 6.0, "min_window_seconds": 0.1}
    pipeline.api.change(requests_per_minute=10, window_seconds=6.0)
    shop = pipeline.shop(seed=177)
    ids = [shop.sign_up() for _ in range(8)]
    pipeline.write_shop(shop)
    first = _start(pipeline, "a", pacing=budget)
    until(lambda: "active for 9 partitions" in first.log(), 30, "an active", first.log)
    _all_committed(pipeline)
    second = _start(pipeline, "b", pacing=budget)
    until(lambda: _ready(second), 60, "a ready standby", second.log)
    first.kill()
    sent = len(pipeline.api.requests())
    for customer in ids:  # one request each: merges, as fast as the window allows
        mark = len(shop.records)
        shop.edit_profile(customer)
        pipeline.write_shop(shop, mark)
    until(lambda: len(pipeline.api.requests()) > sent, 60, "the second's first request")
    second.kill()
    first = _start(pipeline, "a", pacing=budget)
    until(lambda: "active for 9 partitions" in first.log(), 30, "the first active again", first.log)
    # Sent within the window of the second's requests: the first must count them.
    for customer in ids:
        mark = len(shop.records)
        shop.edit_profile(customer)
        pipeline.write_shop(shop, mark)
    _all_committed(pipeline, timeout=90)
    pipeline.wait_equal(shop, timeout=60)
    _stop_all([first])
    refused = [r for r in pipeline.api.requests() if r["status"] == 429]
    assert refused == [], f"{len(refused)} requests over the key's budget"
