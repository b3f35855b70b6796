"""/import is asynchronous: a processId at once, then pending → running → completed (or failed)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from testkit.emulator import EmulatorProcess
from testkit.emulator_api import Api, customer, import_body, order


def _two_customers_three_orders() -> dict[str, Any]:
    return import_body(
        customer("a@x", "1", orders=[order("o1"), order("o2")]),
        customer("b@x", "2", orders=[order("o3")]),
    )


async def _watch(api: Api, process_id: int, seconds: float) -> list[dict[str, Any]]:
    """Polls the process until it is finished or ``seconds`` pass."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = await api.get(f"processes/{process_id}")
        assert answer.status == 200
        seen.append(answer.body)
        if answer.body["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.04)
    return seen


async def test_import_goes_pending_running_completed_with_counts(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(process_delay_ms=900)
    answer = await api.post("import", _two_customers_three_orders())
    assert answer.status == 200
    process_id = answer.body["processId"]
    assert isinstance(process_id, int)

    seen = await _watch(api, process_id, seconds=0.01)  # one poll, at once
    assert emulator.state() == {"customers": []}  # not applied before it completes
    seen += await _watch(api, process_id, seconds=5)
    statuses = [snapshot["status"] for snapshot in seen]
    assert statuses[0] == "pending"
    assert "running" in statuses
    assert statuses[-1] == "completed"
    assert statuses == sorted(statuses, key=["pending", "running", "completed"].index)

    final = seen[-1]
    assert set(final) == {"processId", "createdAt", "updatedAt", "status", "type", "data"}
    assert final["processId"] == process_id
    assert final["type"] == "IMPORT_CUSTOMERS_API"
    assert final["data"] == {
        "processedCustomers": 2,
        "totalCustomers": 2,
        "processedOrders": 3,
        "totalOrders": 3,
    }
    assert final["createdAt"].endswith("Z") and final["updatedAt"] >= final["createdAt"]
    assert seen[0]["data"]["processedCustomers"] == 0
    assert [c["id"] for c in emulator.state()["customers"]] == ["1", "2"]


async def test_the_whole_lifecycle_takes_about_the_configured_delay(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(process_delay_ms=400)
    started = time.monotonic()
    answer = await api.post("import", _two_customers_three_orders())
    seen = await _watch(api, answer.body["processId"], seconds=5)
    elapsed = time.monotonic() - started
    assert seen[-1]["status"] == "completed"
    assert 0.35 <= elapsed <= 2.0


async def test_a_failed_process_applies_nothing(api: Api, emulator: EmulatorProcess) -> None:
    emulator.reset(process_delay_ms=150, process_fail_rate=1.0)
    await api.post("merge_customer", {"customer": customer("a@x", "1", tier="kept")})
    answer = await api.post("import", _two_customers_three_orders())
    seen = await _watch(api, answer.body["processId"], seconds=5)
    assert seen[-1]["status"] == "failed"
    assert seen[-1]["data"]["processedOrders"] == 0
    assert emulator.state()["customers"] == [{**customer("a@x", "1", tier="kept"), "orders": []}]


async def test_process_fail_rate_is_seeded_and_partial(api: Api, emulator: EmulatorProcess) -> None:
    outcomes = []
    for _ in range(2):
        emulator.reset(process_delay_ms=0, process_fail_rate=0.5, seed=3)
        statuses = []
        for index in range(12):
            answer = await api.post("import", import_body(customer(f"c{index}@x", str(index))))
            statuses.append((await api.get(f"processes/{answer.body['processId']}")).body["status"])
        outcomes.append(statuses)
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {"completed", "failed"}
    stored = {c["id"] for c in emulator.state()["customers"]}
    assert stored == {str(i) for i, status in enumerate(outcomes[1]) if status == "completed"}


async def test_process_ids_increase(api: Api) -> None:
    ids = [
        (await api.post("import", import_body(customer("a@x")))).body["processId"] for _ in "abc"
    ]
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_an_unknown_process_is_404(api: Api) -> None:
    unknown = await api.get("processes/999999")
    not_a_number = await api.get("processes/abc")
    assert (unknown.status, not_a_number.status) == (404, 404)
    assert unknown.body["status"] == 404


async def test_process_polls_count_against_the_rate_limit(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(requests_per_minute=2, window_seconds=30)
    answer = await api.post("import", import_body(customer("a@x")))
    first_poll = await api.get(f"processes/{answer.body['processId']}")
    second_poll = await api.get(f"processes/{answer.body['processId']}")
    assert (first_poll.status, second_poll.status) == (200, 429)


async def test_imports_apply_in_the_order_they_were_sent(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(process_delay_ms=200)
    first = await api.post("import", import_body(customer("a@x", "1", tier="first")))
    second = await api.post("import", import_body(customer("a@x", "1", tier="second")))
    await _watch(api, first.body["processId"], seconds=5)
    await _watch(api, second.body["processId"], seconds=5)
    assert emulator.state()["customers"][0]["tier"] == "second"


async def test_reset_abandons_processes_underway(api: Api, emulator: EmulatorProcess) -> None:
    emulator.reset(process_delay_ms=300)
    await api.post("import", import_body(customer("a@x", "1")))
    emulator.reset()
    await asyncio.sleep(0.45)
    assert emulator.state() == {"customers": []}
