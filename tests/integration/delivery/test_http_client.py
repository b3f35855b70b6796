"""The API client over real HTTP against the emulator: answers, errors, retries, pacing."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import tracemalloc
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from consumer.delivery.http.client import ApiSettings, Attempt, RfmcubeClient
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.errors import ApiFatal, ApiRejected, ApiTooLarge
from testkit.emulator import EmulatorProcess

API_KEY = "key-0123456789-secret"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(api_key=API_KEY, requests_per_minute=10_000, seed=7) as running:
        yield running


@pytest.fixture
def fresh(emulator: EmulatorProcess) -> EmulatorProcess:
    emulator.reset()
    return emulator


def settings_for(emulator: EmulatorProcess, *, api_key: str = API_KEY) -> ApiSettings:
    return ApiSettings(
        base_url=emulator.url,
        api_key=SecretStr(api_key),
        timeout=5.0,
        backoff_initial=0.01,
        backoff_max=0.1,
    )


def client_for(
    emulator: EmulatorProcess, limiter: RateLimiter | None = None, *, api_key: str = API_KEY
) -> RfmcubeClient:
    return RfmcubeClient(
        settings_for(emulator, api_key=api_key), limiter or RateLimiter(10_000, 60.0)
    )


def customer(number: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(number),
        "email": f"customer{number}@example.com",
        "createdAt": "2024-01-02T03:04:05Z",
        "updatedAt": "2024-01-02T03:04:05Z",
        **extra,
    }


def merge_body(number: int) -> bytes:
    return orjson.dumps({"triggerIntegrations": False, "customer": customer(number)})


def max_in_any_window(times: Sequence[float], window: float) -> int:
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_a_merged_customer_is_accepted_and_stored(fresh: EmulatorProcess) -> None:
    async with client_for(fresh) as api:
        answer = await api.send("merge_customer", merge_body(1))
    assert answer == {"status": "ok"}
    [stored] = fresh.state()["customers"]
    assert stored["email"] == "customer1@example.com"
    assert stored["id"] == "1"
    assert api.stats.requests["merge_customer"] == 1


async def test_an_import_returns_a_process_that_can_be_polled_to_completion(
    fresh: EmulatorProcess,
) -> None:
    limiter = RateLimiter(10_000, 60.0)
    body = orjson.dumps(
        {
            "overwriteDescriptors": False,
            "triggerIntegrations": False,
            "recalculateStats": True,
            "customers": [customer(1), customer(2)],
        }
    )
    async with client_for(fresh, limiter) as api:
        accepted = await api.send("import", body)
        process_id = accepted["processId"]
        for _ in range(50):
            process = await api.process(process_id)
            if process["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)
    assert process["status"] == "completed"
    assert process["data"]["processedCustomers"] == 2
    # Polls are requests too: each one took a slot of the one budget.
    assert api.stats.requests["process"] >= 1
    assert limiter.free_slots() == 10_000 - 1 - api.stats.requests["process"]
    assert len(fresh.state()["customers"]) == 2


async def test_a_refused_key_is_fatal_with_the_fix_and_without_the_key(
    fresh: EmulatorProcess,
) -> None:
    wrong_key = "wrong-key-987654321"
    settings = settings_for(fresh, api_key=wrong_key)
    assert wrong_key not in repr(settings)
    async with RfmcubeClient(settings, RateLimiter(100)) as api:
        assert wrong_key not in repr(api)
        with pytest.raises(ApiFatal) as caught:
            await api.send("merge_customer", merge_body(1))
    message = str(caught.value)
    assert "(401)" in message and "RFMCUBE_API_KEY" in message
    assert wrong_key not in message and API_KEY not in message
    assert caught.value.status == 401
    assert [entry["status"] for entry in fresh.requests()] == [401]  # not retried


async def test_a_connector_of_the_wrong_platform_is_fatal_with_the_fix(
    fresh: EmulatorProcess,
) -> None:
    fresh.reset(wrong_platform=True)
    async with client_for(fresh) as api:
        with pytest.raises(ApiFatal) as caught:
            await api.send("merge_customer", merge_body(1))
    assert caught.value.status == 406
    assert '"Use the Rfmcube API"' in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert fresh.state()["customers"] == []


async def test_a_request_over_the_size_limit_raises_too_large(fresh: EmulatorProcess) -> None:
    fresh.reset(max_request_bytes=2_000)
    small = orjson.dumps(
        {
            "overwriteDescriptors": False,
            "triggerIntegrations": False,
            "recalculateStats": False,
            "customers": [customer(1)],
        }
    )
    large = orjson.dumps(
        {
            "overwriteDescriptors": False,
            "triggerIntegrations": False,
            "recalculateStats": False,
            "customers": [customer(n) for n in range(100)],
        }
    )
    async with client_for(fresh) as api:
        with pytest.raises(ApiTooLarge) as caught:
            await api.send("import", large)
        accepted = await api.send("import", small)  # the split parts go through
    assert caught.value.status == 416
    assert "processId" in accepted
    assert [entry["status"] for entry in fresh.requests()] == [416, 200]


async def test_a_rejected_body_raises_with_the_apis_message(fresh: EmulatorProcess) -> None:
    no_email = customer(1)
    del no_email["email"]
    body = orjson.dumps({"triggerIntegrations": False, "customer": no_email})
    async with client_for(fresh) as api:
        with pytest.raises(ApiRejected) as caught:
            await api.send("merge_customer", body)
    assert caught.value.status == 400
    assert "email" in str(caught.value)
    assert [entry["status"] for entry in fresh.requests()] == [400]  # not retried


async def test_server_errors_are_retried_until_every_send_is_accepted(
    fresh: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    fresh.reset(fail_rate=0.5, seed=3)
    attempts: list[Attempt] = []
    limiter = RateLimiter(10_000, 60.0)
    with caplog.at_level(logging.WARNING, logger="consumer.delivery.http.client"):
        async with RfmcubeClient(settings_for(fresh), limiter, on_attempt=attempts.append) as api:
            for number in range(8):
                assert await api.send("merge_customer", merge_body(number)) == {"status": "ok"}
    statuses = [entry["status"] for entry in fresh.requests()]
    # Each send: some 5xx answers, then its 2xx.
    assert re.fullmatch(r"(?:5\d\d,)*(?:2\d\d,(?:5\d\d,)*){8}", "".join(f"{s}," for s in statuses))
    failures = sum(1 for s in statuses if s >= 500)
    assert failures > 0
    assert api.stats.retries["merge_customer"] == failures
    assert [a.status for a in attempts] == statuses
    assert len(fresh.state()["customers"]) == 8
    assert "retry" in caplog.text and API_KEY not in caplog.text


async def test_a_limiter_matching_the_server_never_meets_a_429(fresh: EmulatorProcess) -> None:
    fresh.reset(requests_per_minute=5, window_seconds=3.0)
    limiter = RateLimiter(5, 3.0)
    async with client_for(fresh, limiter) as api:
        answers = await asyncio.gather(
            *(api.send("merge_customer", merge_body(n)) for n in range(12))
        )
    assert answers == [{"status": "ok"}] * 12
    log = fresh.requests()
    assert [entry["status"] for entry in log] == [200] * 12
    assert max_in_any_window([entry["time"] for entry in log], 3.0) <= 5
    assert len(fresh.state()["customers"]) == 12


async def test_a_limiter_looser_than_the_server_waits_out_429s_and_delivers_everything(
    fresh: EmulatorProcess,
) -> None:
    fresh.reset(requests_per_minute=5, window_seconds=3.0)
    limiter = RateLimiter(10, 3.0)
    async with client_for(fresh, limiter) as api:
        answers = await asyncio.gather(
            *(api.send("merge_customer", merge_body(n)) for n in range(12))
        )
    assert answers == [{"status": "ok"}] * 12
    log = fresh.requests()
    statuses = [entry["status"] for entry in log]
    assert 429 in statuses and statuses.count(200) == 12
    admitted = [entry["time"] for entry in log if entry["status"] != 429]
    assert max_in_any_window(admitted, 3.0) <= 5
    # Once the first 429 came back (Retry-After: 3), nothing was sent until it passed;
    # only requests already on their way (within a few ms) reached the server meanwhile.
    first_429 = next(entry["time"] for entry in log if entry["status"] == 429)
    assert not [entry for entry in log if first_429 + 0.5 < entry["time"] < first_429 + 2.9]
    assert log[-1]["time"] - first_429 >= 2.9
    assert api.stats.retries["merge_customer"] == statuses.count(429)
    assert len(fresh.state()["customers"]) == 12


async def test_an_unreachable_api_is_retried_not_given_up() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ApiSettings(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=SecretStr(API_KEY),
        backoff_initial=0.01,
        backoff_max=0.02,
    )
    async with RfmcubeClient(settings, RateLimiter(10_000)) as api:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(api.send("merge_customer", merge_body(1)), timeout=0.5)
    assert api.stats.retries["merge_customer"] >= 2
    assert api.stats.transport_errors == api.stats.requests["merge_customer"]


async def test_an_unknown_call_is_refused_before_anything_is_sent(
    fresh: EmulatorProcess,
) -> None:
    async with client_for(fresh) as api:
        with pytest.raises(ValueError, match="unknown call"):
            await api.send("merge_everything", b"{}")
    assert fresh.requests() == []


async def test_a_long_retry_after_is_capped_and_logged(
    fresh: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    # The server's window is an hour long: it asks to wait about that much.
    fresh.reset(requests_per_minute=1, window_seconds=3600)
    limiter = RateLimiter(10, 2.0)  # our own window: 2 s
    settings = ApiSettings(
        base_url=fresh.url, api_key=SecretStr(API_KEY), timeout=5.0, max_retry_after=1.0
    )
    body = orjson.dumps({"triggerIntegrations": False, "customer": customer(1)})
    async with RfmcubeClient(settings, limiter) as client:
        await client.send("merge_customer", body)
        with caplog.at_level(logging.WARNING, logger="consumer.delivery.http.client"):
            second = asyncio.ensure_future(client.send("merge_customer", body))
            await asyncio.sleep(0.5)
            assert any("waiting 1 s" in r.getMessage() for r in caplog.records)
            assert limiter.next_free_in() <= 2.5  # not an hour: the cap, then our window
            second.cancel()


def test_a_large_body_gets_a_longer_timeout() -> None:
    settings = ApiSettings(
        base_url="https://api.example", api_key=SecretStr("k"), upload_bytes_per_second=1e6
    )
    client = RfmcubeClient(settings, RateLimiter(1, 60.0))
    assert client.timeout_for(0) == 30.0
    assert client.timeout_for(200_000_000) == 230.0


async def test_a_large_import_goes_out_whole_and_is_never_copied_on_the_way(
    fresh: EmulatorProcess,
) -> None:
    customers = [customer(n, notes="x" * 2000) for n in range(12_000)]
    body = orjson.dumps(
        {
            "overwriteDescriptors": False,
            "triggerIntegrations": False,
            "recalculateStats": False,
            "customers": customers,
        }
    )
    assert len(body) > 24_000_000
    async with client_for(fresh) as api:
        tracemalloc.start()
        try:
            await api.send("import", body)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # A 200 MB import must not cost 200 MB more on its way out (the service's
    # budget is 1 GB): a copy of the body would be 24 MB here.
    assert peak < 8_000_000, f"{peak / 1e6:.0f} MB allocated while sending"
    (logged,) = [r for r in fresh.requests() if r["call"] == "import"]
    assert (logged["status"], logged["bytes"]) == (200, len(body))
