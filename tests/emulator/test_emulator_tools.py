"""The test-only endpoints, EmulatorProcess and its command line, and create_app in process."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from decimal import Decimal

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from emulator.app import create_app
from emulator.config import EmulatorConfig
from testkit.emulator import EmulatorProcess
from testkit.emulator_api import API_KEY, Api, customer, encode, import_body, order


async def test_state_sorts_customers_by_id_then_email_and_orders_by_id(
    api: Api, emulator: EmulatorProcess
) -> None:
    await api.post(
        "import",
        import_body(
            customer("z@x", "2", orders=[order("o9"), order("o1")]),
            customer("b@x"),
            customer("a@x"),
            customer("y@x", "1"),
        ),
    )
    customers = emulator.state()["customers"]
    assert [(c.get("id"), c["email"]) for c in customers] == [
        (None, "a@x"),
        (None, "b@x"),
        ("1", "y@x"),
        ("2", "z@x"),
    ]
    assert [o["id"] for o in customers[3]["orders"]] == ["o1", "o9"]


async def test_state_sorts_numeric_order_ids_as_numbers(
    api: Api, emulator: EmulatorProcess
) -> None:
    orders = [order(order_id) for order_id in ("10", "2", "b", "1", "a")]
    await api.post("import", import_body(customer("a@x", "1", orders=orders)))
    stored = emulator.state()["customers"][0]["orders"]
    assert [o["id"] for o in stored] == ["1", "2", "10", "a", "b"]


async def test_state_gives_every_order_an_items_list(api: Api, emulator: EmulatorProcess) -> None:
    await api.post("merge_order", {"order": order("o1", customerEmail="a@x")})
    [stored] = emulator.state()["customers"][0]["orders"]
    assert stored["items"] == []


async def test_request_log_records_every_v1_request(api: Api, emulator: EmulatorProcess) -> None:
    before = time.time()
    body = import_body(customer("a@x", "1", orders=[order("o1"), order("o2")]), customer("g@x"))
    imported = await api.post("import", body)
    await api.post("merge_customer", {"customer": customer("b@x", "2")})
    await api.post("merge_order", {"order": order("o3", customerEmail="g@x")})
    await api.post("delete_customer", {"email": "g@x"})
    await api.get(f"processes/{imported.body['processId']}")
    await api.post("merge_customer", {"customer": {}})
    await api.get("nowhere")

    log = emulator.requests()
    assert [(e["call"], e["status"]) for e in log] == [
        ("import", 200),
        ("merge_customer", 200),
        ("merge_order", 200),
        ("delete_customer", 200),
        ("processes", 200),
        ("merge_customer", 400),
        ("other", 404),
    ]
    assert log[0]["customers"] == ["1", "g@x"]
    assert log[0]["orders"] == ["o1", "o2"]
    assert log[0]["processId"] == imported.body["processId"]
    assert log[0]["bytes"] == len(encode(body))
    assert (log[2]["customers"], log[2]["orders"]) == (["g@x"], ["o3"])
    assert log[3]["customers"] == ["g@x"]
    assert log[4]["processId"] == imported.body["processId"]
    assert (log[5]["customers"], log[5]["processId"]) == ([], None)
    assert all(before <= e["time"] <= time.time() for e in log)
    assert all(isinstance(e["time"], float) for e in log)


async def test_rejected_requests_are_logged_too(api: Api, emulator: EmulatorProcess) -> None:
    await api.post("merge_customer", {"customer": customer("a@x")}, key="bad")
    assert [(e["call"], e["status"], e["customers"]) for e in emulator.requests()] == [
        ("merge_customer", 401, [])
    ]


async def test_test_endpoints_need_no_key_and_take_no_slot(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(requests_per_minute=1, window_seconds=30)
    for _ in range(5):
        emulator.state()
        emulator.requests()
    answer = await api.post("merge_customer", {"customer": customer("a@x")})
    assert answer.status == 200
    assert len(emulator.requests()) == 1


async def test_reset_clears_state_log_and_rate_window(api: Api, emulator: EmulatorProcess) -> None:
    emulator.reset(requests_per_minute=1, window_seconds=30)
    await api.post("merge_customer", {"customer": customer("a@x")})
    assert (await api.get("processes/1")).status == 429
    emulator.reset(requests_per_minute=1, window_seconds=30)
    assert emulator.state() == {"customers": []}
    assert emulator.requests() == []
    assert (await api.post("merge_customer", {"customer": customer("a@x")})).status == 200


async def test_reset_without_changes_restores_the_start_up_settings(
    api: Api, emulator: EmulatorProcess
) -> None:
    emulator.reset(wrong_platform=True)
    assert (await api.get("processes/1")).status == 406
    emulator.reset()
    assert (await api.get("processes/1")).status == 404


async def test_reset_refuses_unknown_or_ill_typed_settings(emulator: EmulatorProcess) -> None:
    for changes in ({"api_key": "other"}, {"fail_rate": 2}, {"wrong_platform": "yes"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            emulator.reset(**changes)
        assert refused.value.code == 400
        refused.value.close()


def test_health_answers_200(emulator: EmulatorProcess) -> None:
    with urllib.request.urlopen(f"{emulator.base}/_emulator/health", timeout=5) as response:
        assert response.status == 200


def test_state_is_parsed_with_exact_decimals(emulator: EmulatorProcess) -> None:
    body = encode({"order": order("o1", customerEmail="a@x", amount=Decimal("0.30"))})
    request = urllib.request.Request(
        f"{emulator.url}/merge_order",
        data=body,
        headers={"api-key": API_KEY, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read()) == {"status": "ok"}
    amount = emulator.state()["customers"][0]["orders"][0]["amount"]
    assert (type(amount), amount) == (Decimal, Decimal("0.30"))


def test_emulator_process_passes_its_options_and_never_logs_the_key() -> None:
    secret = "s3cret-key-do-not-print"
    with EmulatorProcess(api_key=secret, wrong_platform=True, latency_ms=10) as emulator:
        assert emulator.url == f"{emulator.base}/v1"
        request = urllib.request.Request(f"{emulator.url}/processes/1", headers={"api-key": secret})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 406
        refused.value.close()
        emulator.reset(latency_ms=0)
        log_text = emulator.log_text()
        assert "emulator listening on" in log_text
        assert secret not in log_text
        assert secret not in repr(emulator)
    emulator.stop()  # a second stop is harmless


def test_command_line_refuses_to_start_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from emulator.__main__ import main

    monkeypatch.delenv("RFMCUBE_EMULATOR_API_KEY", raising=False)
    assert main(["--port", "0"]) == 2


def test_config_repr_hides_the_key() -> None:
    assert "hidden-key" not in repr(EmulatorConfig(api_key="hidden-key"))


async def test_create_app_serves_in_process() -> None:
    config = EmulatorConfig(api_key="in-process", process_delay_ms=0)
    async with TestServer(create_app(config)) as server, aiohttp.ClientSession() as session:
        url = str(server.make_url("/v1/merge_customer"))
        payload = encode({"customer": customer("a@x", "1")})
        headers = {"api-key": "in-process", "content-type": "application/json"}
        async with session.post(url, data=payload, headers=headers) as response:
            assert response.status == 200
        async with session.get(str(server.make_url("/_emulator/state"))) as response:
            state = await response.json()
    assert [c["email"] for c in state["customers"]] == ["a@x"]
