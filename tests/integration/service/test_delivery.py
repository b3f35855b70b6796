"""Delivery guarantees on the real broker and the emulator: crashes, faults, limits."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from testkit.pipeline import Pipeline
from testkit.shop import Shop, document_of, expected_state, state_difference
from testkit.workbench import committed_offsets, partitions_of, read_topic


def _chunks(total: int, parts: int) -> list[tuple[int, int]]:
    bounds = [total * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def test_it_ends_equal_through_failing_requests_and_three_kills(pipeline: Pipeline) -> None:
    pipeline.api.reset(fail_rate=0.2, seed=28)  # seed 28: the first two requests fail
    shop = pipeline.shop(seed=21)
    shop.workload(customers=40, guest_orders=10)
    service = pipeline.start()
    for number, (start, stop) in enumerate(_chunks(len(shop.records), 4)):
        pipeline.write_shop(shop, start, stop)
        if number < 3:
            time.sleep(2.5)  # mid-stream: some windows sent, some not, commits behind
            service.kill()
            service = pipeline.start()
    pipeline.wait_caught_up(service, timeout=120)
    assert service.stop() == 0
    pipeline.assert_equal(shop)
    statuses = {r["status"] for r in pipeline.api.requests()}
    assert statuses & {500, 503}, "the emulator was meant to fail some requests"


def test_a_lost_store_is_rebuilt_from_the_topics_before_anything_is_sent(
    pipeline: Pipeline,
) -> None:
    shop = pipeline.shop(seed=5)
    ids = [shop.sign_up() for _ in range(12)]
    orders = [shop.place_order(c, items=3) for c in ids]
    first = len(shop.records)
    pipeline.write_shop(shop)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    assert service.stop() == 0
    (pipeline.folder / "state.db").unlink()
    for suffix in ("-wal", "-shm"):
        (pipeline.folder / f"state.db{suffix}").unlink(missing_ok=True)
    restarted = time.time()

    # Item edits and a status change only: whole orders must be rebuilt from
    # the replayed store, with their customers' emails (one of them changed).
    shop.change_email(ids[0])
    shop.edit_item(next(i for i, item in shop.items.items() if item["order_id"] == orders[0]))
    shop.set_status(orders[5], "30")
    pipeline.write_shop(shop, first)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    assert service.stop() == 0
    pipeline.assert_equal(shop)
    assert "store restored" in service.log()
    sent_after = {
        order
        for r in pipeline.api.requests()
        if r["time"] >= restarted and r["status"] < 300
        for order in r.get("orders") or []
    }
    assert sent_after <= {str(orders[0]), str(orders[5])}, "the replay itself sent documents"


UNSENT_COLUMNS = {"password_hash", "notes"}


def _document_of(topic: str, value: bytes | None) -> tuple[str, str] | None:
    """The document a record changes; None for tombstones and unsent-column edits."""
    if value is not None:
        payload = orjson.loads(value)["payload"]
        before, after = payload["before"], payload["after"]
        if (
            before
            and after
            and all(before[c] == after[c] for c in after if c not in UNSENT_COLUMNS)
        ):
            return None  # nothing that is sent changed: no request is due
    return document_of(topic, value)


@contextmanager
def _sampling_commits(pipeline: Pipeline) -> Iterator[list[tuple[float, dict[Any, int | None]]]]:
    samples: list[tuple[float, dict[Any, int | None]]] = []
    stop = threading.Event()
    partitions = partitions_of(pipeline.bootstrap, pipeline.topics)

    def sample() -> None:
        while not stop.is_set():
            offsets = committed_offsets(pipeline.bootstrap, pipeline.group, partitions)
            # Stamped once the answer is in: the read takes a while (a consumer is
            # built for it), and what it found may have been committed up to its end.
            samples.append((time.time(), offsets))
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def test_no_offset_is_ever_committed_ahead_of_acceptance(
    pipeline: Pipeline, kafka_bootstrap: str
) -> None:
    pipeline.api.reset(latency_ms=300, fail_rate=0.2, seed=28)
    shop = pipeline.shop(seed=9)
    shop.workload(customers=30, guest_orders=6)
    written_at: dict[tuple[str, int, int], float] = {}
    with _sampling_commits(pipeline) as samples:
        service = pipeline.start()
        for start, stop in _chunks(len(shop.records), 5):
            writing = time.time()  # no request can carry a record before it is written
            metadata = pipeline.write_with_positions(shop.records[start:stop])
            written_at.update(dict.fromkeys(metadata, writing))
            time.sleep(1.0)
        pipeline.wait_caught_up(service)
    assert service.stop() == 0
    pipeline.assert_equal(shop)

    accepted = [r for r in pipeline.api.requests() if 200 <= r["status"] < 300]
    # Deleting a customer deletes its orders: that request carries them too.
    orders_of: dict[str, set[str]] = {}
    for order in [*shop.orders.values(), *shop.all_orders_ever()]:
        orders_of.setdefault(str(order["customer_id"]), set()).add(str(order["id"]))
    times: dict[tuple[str, str], list[float]] = {}
    for request in accepted:
        for kind in ("customers", "orders"):
            for key in request.get(kind) or []:
                times.setdefault((kind, str(key)), []).append(request["time"])
        if request["call"] == "delete_customer":
            for customer in request.get("customers") or []:
                for order in orders_of.get(str(customer), ()):
                    times.setdefault(("orders", order), []).append(request["time"])
    documents = {
        position: _document_of(record.topic, record.value)
        for position, record in pipeline.positions.items()
    }
    checked = 0
    for sampled_at, offsets in samples:
        for (topic, partition), committed in offsets.items():
            for offset in range(committed or 0):
                document = documents.get((topic, partition, offset))
                if document is None or document not in times:
                    continue  # a tombstone, or a record that needed no request
                produced = written_at[(topic, partition, offset)]
                assert any(produced <= t <= sampled_at for t in times[document]), (
                    f"{topic}[{partition}]@{offset} committed by {sampled_at:.3f}"
                    f" before any accepted request carried {document}: written {produced:.3f},"
                    f" accepted at {times[document]}"
                )
                checked += 1
    assert checked > 0


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def _stream_in_bursts(pipeline: Pipeline, shop: Shop, bursts: int, pause: float) -> None:
    for start, stop in _chunks(len(shop.records), bursts):
        pipeline.write_shop(shop, start, stop)
        time.sleep(pause)


def test_requests_never_exceed_the_limit_in_any_window(pipeline: Pipeline) -> None:
    pipeline.api.reset(requests_per_minute=4, window_seconds=3)
    shop = pipeline.shop(seed=13)
    shop.workload(customers=30, guest_orders=6)
    service = pipeline.start(pacing={"requests_per_minute": 4, "window_seconds": 3})
    _stream_in_bursts(pipeline, shop, bursts=6, pause=1.0)
    pipeline.wait_caught_up(service, timeout=120)
    assert service.stop() == 0
    pipeline.assert_equal(shop)
    log = pipeline.api.requests()
    assert [r for r in log if r["status"] == 429] == []
    assert _max_in_window([r["time"] for r in log], 3.0) <= 4
    assert len(log) > 4, "the test must span several windows"


def test_after_429s_it_waits_and_still_ends_equal(pipeline: Pipeline) -> None:
    # The service believes it may send 8 per window; the API allows 4.
    pipeline.api.reset(requests_per_minute=4, window_seconds=3)
    shop = pipeline.shop(seed=17)
    shop.workload(customers=30, guest_orders=6)
    service = pipeline.start(pacing={"requests_per_minute": 8, "window_seconds": 3})
    _stream_in_bursts(pipeline, shop, bursts=8, pause=0.7)
    pipeline.wait_caught_up(service, timeout=120)
    assert service.stop() == 0
    pipeline.assert_equal(shop)
    log = pipeline.api.requests()
    assert any(r["status"] == 429 for r in log), "the API was meant to refuse some requests"
    admitted = [r["time"] for r in log if r["status"] != 429]
    assert _max_in_window(admitted, 3.0) <= 4
    assert _max_in_window([r["time"] for r in log], 3.0) <= 8


def test_an_oversized_import_is_split_after_a_416(pipeline: Pipeline) -> None:
    pipeline.api.reset(max_request_bytes=20_000)
    shop = pipeline.shop(seed=19)
    shop.workload(customers=40, guest_orders=8)
    pipeline.write_shop(shop)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    assert service.stop() == 0
    pipeline.assert_equal(shop)
    imports = [r for r in pipeline.api.requests() if r["call"] == "import"]
    assert imports[0]["status"] == 416
    assert sum(1 for r in imports if r["status"] == 200) >= 2


def test_a_406_stops_the_service_with_what_to_fix(pipeline: Pipeline) -> None:
    pipeline.api.reset(wrong_platform=True)
    shop = pipeline.shop()
    shop.workload(customers=5, guest_orders=1)
    pipeline.write_shop(shop)
    service = pipeline.start()
    assert service.process is not None
    code = service.process.wait(timeout=60)
    assert code != 0
    assert "Use the Rfmcube API" in service.log()
    partitions = partitions_of(pipeline.bootstrap, pipeline.topics)
    committed = committed_offsets(pipeline.bootstrap, pipeline.group, partitions)
    assert all(not offset for offset in committed.values())


def test_a_poison_record_is_dead_lettered_and_the_rest_delivered(pipeline: Pipeline) -> None:
    shop = pipeline.shop(seed=23)
    shop.workload(customers=20, guest_orders=4)
    half = len(shop.records) // 2
    pipeline.write_shop(shop, 0, half)
    orders_topic = pipeline.topics[1]
    pipeline.write([(orders_topic, b'{"id": 424242}', b'{"payload": {"op": "c", "after": ')])
    pipeline.write_shop(shop, half)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    assert service.stop() == 0
    pipeline.assert_equal(shop)
    (dead,) = read_topic(pipeline.bootstrap, pipeline.dead_letters)
    assert "value is not JSON" in dead and f"from {orders_topic}[" in dead


def test_in_strict_mode_a_failed_import_is_sent_again_from_the_store(pipeline: Pipeline) -> None:
    # Seed 28: the first import's process fails (and applies nothing).
    pipeline.api.reset(process_fail_rate=0.5, seed=28)
    shop = pipeline.shop(seed=31)
    shop.workload(customers=20, guest_orders=4)
    pipeline.write_shop(shop)
    service = pipeline.start(api={"acceptance": "completed"})
    pipeline.wait_caught_up(service)
    assert service.stop() == 0
    pipeline.assert_equal(shop)
    log = pipeline.api.requests()
    imports = [r for r in log if r["call"] == "import" and r["status"] == 200]
    polls = {r["processId"] for r in log if r["call"] == "processes"}
    assert len(imports) >= 2 and {r["processId"] for r in imports} <= polls
    assert "failed" in service.log()


def test_an_import_that_fails_after_acceptance_is_found_and_sent_again(
    pipeline: Pipeline,
) -> None:
    # Default acceptance (the processId): offsets are committed at once, and
    # the service checks the process later with a spare request slot.
    pipeline.api.reset(process_fail_rate=0.5, seed=28)  # the first process fails
    shop = pipeline.shop(seed=37)
    shop.workload(customers=20, guest_orders=4)
    pipeline.write_shop(shop)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    pipeline.wait_equal(shop, timeout=60)
    assert service.stop() == 0
    assert "documents will be sent again" in service.log()


def test_only_the_order_the_api_refuses_is_dead_lettered_the_rest_of_its_customer_arrives(
    pipeline: Pipeline,
) -> None:
    shop = pipeline.shop(seed=17)
    customer = shop.sign_up()
    orders = [shop.place_order(customer, items=2) for _ in range(3)]
    others = [shop.sign_up() for _ in range(3)]
    for other in others:
        shop.place_order(other, items=1)
    refused = orders[1]
    pipeline.api.change(refused_orders=[str(refused)])
    pipeline.write_shop(shop)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    assert service.stop() == 0

    want = expected_state(shop)
    for entry in want["customers"]:
        entry["orders"] = [o for o in entry["orders"] if o["id"] != str(refused)]
    state = pipeline.api.state()
    assert state == want, state_difference(state, want)
    letters = read_topic(pipeline.bootstrap, pipeline.dead_letters)
    assert len(letters) == 1, letters
    assert f"order {refused} is refused" in letters[0], letters
