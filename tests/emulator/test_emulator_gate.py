"""The documented limits: api-key, platform, 60 requests per window, 200 MB, and injected faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from testkit.emulator import EmulatorProcess
from testkit.emulator_api import Api, customer, encode


async def test_missing_or_wrong_api_key_is_401(api: Api) -> None:
    payload = {"customer": customer("a@example.com", "1")}
    missing = await api.send("POST", "merge_customer", encode(payload), key="")
    wrong = await api.post("merge_customer", payload, key="not-the-key")
    assert (missing.status, wrong.status) == (401, 401)
    assert wrong.body["status"] == 401


async def test_unauthorized_requests_change_nothing(api: Api, emulator: EmulatorProcess) -> None:
    await api.post("merge_customer", {"customer": customer("a@example.com")}, key="bad")
    assert emulator.state() == {"customers": []}


async def test_wrong_platform_answers_406_with_the_documented_reason(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(wrong_platform=True)
    merge = await api.post("merge_customer", {"customer": customer("a@example.com")})
    process = await api.get("processes/1")
    assert (merge.status, process.status) == (406, 406)
    assert merge.body["message"] == 'the connector\'s platform must be "Use the Rfmcube API"'
    assert emulator.state() == {"customers": []}


async def test_wrong_platform_still_refuses_a_wrong_key_with_401(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(wrong_platform=True)
    answer = await api.post("merge_customer", {"customer": customer("a@x")}, key="bad")
    assert answer.status == 401


async def test_rate_limit_429_with_retry_after_then_recovery(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(requests_per_minute=3, window_seconds=1.5)
    statuses = [(await api.get("processes/1")).status for _ in range(3)]
    refused = await api.post("merge_customer", {"customer": customer("late@example.com")})
    assert statuses == [404, 404, 404]
    assert refused.status == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    assert emulator.state() == {"customers": []}

    await asyncio.sleep(retry_after)
    accepted = await api.post("merge_customer", {"customer": customer("late@example.com")})
    assert accepted.status == 200


async def test_refused_requests_take_no_slot(api: Api, emulator: EmulatorProcess) -> None:
    emulator.reset(requests_per_minute=2, window_seconds=2)
    started = time.monotonic()
    for _ in range(2):
        assert (await api.get("processes/1")).status == 404
    hammering = [(await api.get("processes/1")).status for _ in range(10)]
    assert set(hammering) == {429}
    # The window counts only the two admitted requests: once they age out, a slot is free
    # even though ten refusals came after them.
    await asyncio.sleep(max(0.0, started + 2.05 - time.monotonic()))
    assert (await api.get("processes/1")).status == 404


async def test_the_window_slides_rather_than_resetting_each_minute(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(requests_per_minute=2, window_seconds=1.2)
    assert (await api.get("processes/1")).status == 404
    await asyncio.sleep(0.7)
    assert (await api.get("processes/1")).status == 404
    await asyncio.sleep(0.6)  # the first request left the window, the second did not
    assert (await api.get("processes/1")).status == 404
    assert (await api.get("processes/1")).status == 429


async def test_a_body_over_the_limit_is_416_with_content_length(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(max_request_bytes=1000)
    payload = {"customer": customer("a@example.com", notes="x" * 2000)}
    answer = await api.post("merge_customer", payload)
    assert answer.status == 416
    assert emulator.state() == {"customers": []}


async def test_a_chunked_body_over_the_limit_is_416(api: Api, emulator: EmulatorProcess) -> None:
    emulator.reset(max_request_bytes=100_000)

    async def endless_chunks() -> AsyncIterator[bytes]:
        # 1 MB in 10 kB chunks, with no Content-Length: the server must count.
        for _ in range(100):
            yield b" " * 10_000

    answer = await api.send("POST", "merge_customer", endless_chunks())
    assert answer.status == 416
    logged = emulator.requests()[-1]
    assert logged["status"] == 416
    assert 100_000 < logged["bytes"] < 1_000_000  # reading stopped soon after the limit


async def test_a_chunked_body_under_the_limit_is_accepted(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(max_request_bytes=10_000)
    body = encode({"customer": customer("chunked@example.com", "9")})

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    answer = await api.send("POST", "merge_customer", chunks())
    assert answer.status == 200
    assert [c["email"] for c in emulator.state()["customers"]] == ["chunked@example.com"]


async def test_a_body_exactly_at_the_limit_is_accepted(api: Api, emulator: EmulatorProcess) -> None:
    body = encode({"customer": customer("edge@example.com")})
    emulator.reset(max_request_bytes=len(body))
    answer = await api.send("POST", "merge_customer", body)
    assert answer.status == 200


async def test_default_limit_is_the_documented_200_megabytes(
    api: Api, emulator: EmulatorProcess
) -> None:
    answer = await api.post("merge_customer", {"customer": customer("a@x", notes="y" * 1_000_000)})
    assert answer.status == 200


async def test_fail_rate_injects_500_and_503_without_applying(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(fail_rate=0.5, seed=11)
    statuses = []
    for index in range(60):
        payload = {"customer": customer(f"c{index}@example.com", str(index))}
        statuses.append((await api.post("merge_customer", payload)).status)
    failed = [status for status in statuses if status != 200]
    assert set(failed) == {500, 503}
    assert 15 <= len(failed) <= 45
    stored = {c["id"] for c in emulator.state()["customers"]}
    accepted = {str(i) for i, status in enumerate(statuses) if status == 200}
    assert stored == accepted


async def test_injected_faults_take_a_rate_slot(api: Api, emulator: EmulatorProcess) -> None:
    emulator.reset(fail_rate=1.0, requests_per_minute=2, window_seconds=30)
    statuses = [(await api.get("processes/1")).status for _ in range(3)]
    assert statuses[:2] in ([500, 500], [500, 503], [503, 500], [503, 503])
    assert statuses[2] == 429


async def test_latency_delays_every_answer(api: Api, emulator: EmulatorProcess) -> None:
    emulator.reset(latency_ms=300)
    started = time.monotonic()
    answer = await api.post("merge_customer", {"customer": customer("slow@example.com")})
    refused = await api.post("merge_customer", {"customer": customer("x@x")}, key="bad")
    elapsed = time.monotonic() - started
    assert (answer.status, refused.status) == (200, 401)
    assert elapsed >= 0.6


async def test_unknown_v1_paths_are_404_after_authentication(api: Api) -> None:
    unknown = await api.get("no_such_call")
    unauthenticated = await api.get("no_such_call", key="bad")
    assert (unknown.status, unauthenticated.status) == (404, 401)
    assert unknown.body["status"] == 404
