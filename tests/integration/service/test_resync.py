"""Resync and mapping changes, on the real broker and the emulator."""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
import time
from datetime import UTC, timedelta
from typing import Any

from testkit.pipeline import Pipeline, until
from testkit.shop import expected_state, state_difference
from testkit.workbench import ServiceProcess


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serving(pipeline: Pipeline, port: int, **sections: dict[str, Any]) -> ServiceProcess:
    service = pipeline.start(service={"health_port": port, "health_host": "127.0.0.1"}, **sections)
    until(lambda: "active:" in service.log(), 60, "the active role", service.log)
    return service


def _accepted_imports(pipeline: Pipeline, since: float = 0.0) -> list[dict[str, Any]]:
    return [
        r
        for r in pipeline.api.requests()
        if r["call"] == "import" and r["status"] == 200 and r["time"] >= since
    ]


def test_a_resync_into_an_emptied_rfmcube_ends_equal_in_the_fewest_imports(
    pipeline: Pipeline,
) -> None:
    shop = pipeline.shop(seed=137)
    shop.workload(customers=40, guest_orders=8)
    pipeline.write_shop(shop)
    port = _free_port()
    service = _serving(pipeline, port)
    pipeline.wait_caught_up(service)
    pipeline.wait_equal(shop, timeout=30)
    pipeline.wait_imports_checked(service)
    pipeline.api.reset()  # Rfmcube lost its data

    plan = pipeline.cli(service, "resync", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "requests: 2 (1 imports" in plan.stdout and "estimated minutes" in plan.stdout
    done = pipeline.cli(service, "resync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done" in done.stdout
    pipeline.assert_equal(shop)
    assert len(_accepted_imports(pipeline)) == 1  # all of it fits one request
    assert service.stop() == 0
    # The store now says Rfmcube holds it all: a restart sends nothing.
    service = _serving(pipeline, port)
    time.sleep(3.0)
    assert service.stop() == 0
    assert len(_accepted_imports(pipeline)) == 1


def test_a_resync_killed_twice_completes_and_never_sends_an_accepted_import_again(
    pipeline: Pipeline,
) -> None:
    shop = pipeline.shop(seed=139)
    shop.workload(customers=60, guest_orders=12)
    pipeline.write_shop(shop)
    port = _free_port()
    # Small imports and a slow API: the resync takes a dozen requests.
    limits: dict[str, dict[str, Any]] = {"api": {"max_request_bytes": 12_000}}
    service = _serving(pipeline, port, **limits)
    pipeline.wait_caught_up(service)
    pipeline.wait_equal(shop, timeout=30)
    pipeline.wait_imports_checked(service)
    latency = 0.4
    pipeline.api.reset(latency_ms=int(latency * 1000))
    started = time.time()
    follower = pipeline.cli_background(service, "resync")
    kills: list[float] = []
    for count in (2, 5):
        until(lambda c=count: len(_accepted_imports(pipeline)) >= c, 60, f"{count} imports")
        time.sleep(latency + 0.3)  # the answer reached the service: the import is settled
        service.kill()  # mid-resync: imports accepted, others owed
        kills.append(time.time())
        follower.communicate(timeout=30)  # it notices the service is gone
        service = _serving(pipeline, port, **limits)
        follower = pipeline.cli_background(service, "resync", "--status")  # follows it
    output, _ = follower.communicate(timeout=120)
    assert follower.returncode == 0, output
    pipeline.wait_equal(shop, timeout=30)
    assert service.stop() == 0
    imports = _accepted_imports(pipeline, started)
    assert len(imports) >= 6
    # What it reports survived the kills: every request and accepted byte since it began.
    said = re.search(r"done: (\d+) documents, (\d+) requests, (\d+) bytes", output)
    assert said is not None, output
    _, requests, sent_bytes = map(int, said.groups())
    assert requests >= len(imports)
    # The customers' bytes, their requests' envelopes apart: of all its imports at
    # least as much as of its last two.
    assert sent_bytes >= 0.9 * sum(r["bytes"] for r in imports[-2:])
    # An import the service never heard answered (the kill came first) is sent
    # again; one it was answered is never sent again.
    answered = [
        r for r in imports if not any(r["time"] < k < r["time"] + latency + 0.3 for k in kills)
    ]
    first_answered: dict[str, float] = {}
    for r in answered:
        for customer in r["customers"]:
            first_answered.setdefault(customer, r["time"])
    again = sorted(
        c
        for r in imports
        for c in r["customers"]
        if c in first_answered and r["time"] > first_answered[c]
    )
    assert again == [], f"sent again after their import was answered: {again}"


def test_a_new_descriptor_reaches_every_existing_customer_without_a_source_change(
    pipeline: Pipeline,
) -> None:
    shop = pipeline.shop(seed=149)
    shop.workload(customers=30, guest_orders=6)
    pipeline.write_shop(shop)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    pipeline.wait_equal(shop, timeout=30)
    assert service.stop() == 0
    before = time.time()

    # The user adds a descriptor: a column the store never kept.
    pipeline.mapping = pipeline.mapping.replace(
        "      - phone\n", "      - phone\n      - notes: shopNotes\n"
    )
    assert "shopNotes" in pipeline.mapping
    service = pipeline.start()
    want = expected_state(shop)
    for customer in want["customers"]:
        if "id" in customer:
            customer["shopNotes"] = shop.customers[int(customer["id"])]["notes"]
    deadline = time.monotonic() + 60
    while pipeline.api.state() != want and time.monotonic() < deadline:
        time.sleep(0.5)
    state = pipeline.api.state()
    assert state == want, state_difference(state, want)
    log = service.log()
    assert "the mapping changed: customers: column notes added as shopNotes" in log
    assert "rebuilding the store's rows from the topics" in log
    imports = _accepted_imports(pipeline, before)
    assert 1 <= len(imports) <= 2, "the changed documents go in packed imports"
    assert service.stop() == 0


def test_a_resync_since_a_time_sends_only_what_changed_after_it(pipeline: Pipeline) -> None:
    shop = pipeline.shop(seed=151)
    ids = [shop.sign_up() for _ in range(20)]
    orders = [shop.place_order(c, items=2) for c in ids]
    pipeline.write_shop(shop)
    port = _free_port()
    service = _serving(pipeline, port)
    pipeline.wait_caught_up(service)
    # The shop's clock: every change after this one is at least a second later.
    since = (shop.clock + timedelta(seconds=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    written = len(shop.records)
    shop.edit_profile(ids[3])
    shop.set_status(orders[7], "30")
    pipeline.write_shop(shop, written)
    pipeline.wait_caught_up(service)
    pipeline.wait_equal(shop, timeout=30)

    asked = time.time()
    done = pipeline.cli(service, "resync", "--since", since)
    assert done.returncode == 0, done.stdout + done.stderr
    (sent,) = _accepted_imports(pipeline, asked)
    assert set(sent["customers"]) == {str(ids[3]), str(ids[7])}
    assert set(sent["orders"]) == {str(orders[7])}
    pipeline.assert_equal(shop)
    assert service.stop() == 0


def test_an_anonymized_customer_keeps_its_orders_and_nothing_that_identifies_it(
    pipeline: Pipeline,
) -> None:
    pipeline.mapping += (
        "customer_delete: {policy: anonymize, email_domain: anon.example, keep: [newsletter]}\n"
    )
    key_file = pipeline.folder / "anonymize.key"
    key_file.write_text("a secret of the shop\n", encoding="utf-8")
    shop = pipeline.shop(seed=157)
    gone, stays = shop.sign_up(), shop.sign_up()
    shop.place_order(gone, items=3)
    shop.place_order(gone, items=1)
    shop.place_order(stays, items=2)
    pipeline.write_shop(shop)
    privacy: dict[str, Any] = {"anonymize_key_file": str(key_file)}
    service = pipeline.start(privacy=privacy)
    pipeline.wait_caught_up(service)
    pipeline.wait_equal(shop, timeout=30)
    before = pipeline.api.state()
    person = shop.customers[gone]

    written = len(shop.records)
    shop.erase_customer(gone)  # the customer withdrew consent; its orders stay in the shop
    pipeline.write_shop(shop, written)
    pipeline.wait_caught_up(service)

    def anonymized() -> dict[str, Any] | None:
        return next(
            (c for c in pipeline.api.state()["customers"] if c.get("id") == str(gone)), None
        )

    until(lambda: (anonymized() or {}).get("email", "").endswith("@anon.example"), 30, "it")
    after = pipeline.api.state()
    text = str(after)
    for identifying in ("email", "first_name", "last_name", "phone"):
        assert str(person[identifying]) not in text, f"{identifying} is still in Rfmcube"
    customer = anonymized()
    assert customer is not None
    assert set(customer) == {"id", "email", "createdAt", "updatedAt", "newsletter", "orders"}
    # Its orders and every total are where they were: the statistics do not change.
    old = next(c for c in before["customers"] if c.get("id") == str(gone))
    assert customer["orders"] == old["orders"]
    totals = [sum(o["amount"] for o in c["orders"]) for c in before["customers"]]
    assert sorted(totals) == sorted(
        sum(o["amount"] for o in c["orders"]) for c in after["customers"]
    )
    # A stable keyed hash: the same key and email give the same address.
    digest = hmac.new(b"a secret of the shop", person["email"].encode(), hashlib.sha256)
    assert customer["email"] == f"{digest.hexdigest()[:32]}@anon.example"
    assert service.stop() == 0
