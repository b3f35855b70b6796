"""The aiohttp application: the ``/v1`` API behind its gatekeeping, and ``/_emulator`` tools.

Every ``/v1`` request passes, in order: the api-key (401), the platform (406),
the rate window (429 with Retry-After; only admitted requests take a slot),
the body size (416, counted while reading), injected faults (500/503), then
the call itself (400 on a bad body). Each is logged for ``/_emulator/requests``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from emulator import jsonio
from emulator.config import ConfigChangeError, EmulatorConfig
from emulator.state import Emulator, Touched, classify_call
from emulator.validate import (
    BadRequest,
    parse_delete_customer,
    parse_import,
    parse_merge_customer,
    parse_merge_order,
)

log = logging.getLogger(__name__)

EMULATOR = web.AppKey("emulator", Emulator)
BODY = web.RequestKey("body", bytes)
TOUCHED = web.RequestKey("touched", Touched)

WRONG_PLATFORM = 'the connector\'s platform must be "Use the Rfmcube API"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiFailure(Exception):
    """An error answer of the API: ``{"status": N, "message": "..."}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class _BodyTooLarge(Exception):
    def __init__(self, bytes_read: int) -> None:
        super().__init__(bytes_read)
        self.bytes_read = bytes_read


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=jsonio.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"status": status, "message": message}, status, headers)


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    """Reads the body, giving up as soon as it passes ``limit`` bytes (chunked or not)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _BodyTooLarge(0)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


@web.middleware
async def api_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path != "/v1" and not request.path.startswith("/v1/"):
        return await handler(request)
    emulator = request.app[EMULATOR]
    if emulator.config.outage:
        # As a server that is down: the connection ends without an answer.
        emulator.requests.append(
            {"time": time.time(), "call": classify_call(request.path), "status": 0}
        )
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503)  # never written: the connection is gone
    entry: dict[str, Any] = {
        "time": time.time(),
        "call": classify_call(request.path),
        "status": 0,
        "bytes": 0,
        "customers": [],
        "orders": [],
        "processId": None,
    }
    try:
        response = await _admit_and_handle(request, handler, emulator, entry)
    except ApiFailure as failure:
        response = _error(failure.status, failure.message, failure.headers)
    except web.HTTPException as exc:  # the router's own 404 and 405
        response = _error(exc.status, exc.reason)
    entry["status"] = response.status
    touched = request.get(TOUCHED)
    if touched is not None and 200 <= response.status < 300:
        entry["customers"] = touched.customers
        entry["orders"] = touched.orders
        entry["processId"] = touched.process_id
    # Reading, parsing and checking the body (a 200 MB import takes a while).
    entry["seconds"] = round(time.time() - entry["time"], 3)
    emulator.requests.append(entry)
    if emulator.config.latency_ms:
        await asyncio.sleep(emulator.config.latency_ms / 1000)
    return response


async def _admit_and_handle(
    request: web.Request, handler: Handler, emulator: Emulator, entry: dict[str, Any]
) -> web.StreamResponse:
    config = emulator.config
    sent_key = request.headers.get("api-key", "")
    if not sent_key or not hmac.compare_digest(sent_key.encode(), config.api_key.encode()):
        raise ApiFailure(401, "missing or wrong api-key")
    if config.wrong_platform:
        raise ApiFailure(406, WRONG_PLATFORM)
    wait = emulator.window.admit(sent_key)
    if wait is not None:
        raise ApiFailure(
            429,
            f"more than {config.requests_per_minute} requests per minute; retry in {wait} s",
            {"Retry-After": str(wait)},
        )
    try:
        body = await _read_bounded(request, config.max_request_bytes)
    except _BodyTooLarge as too_large:
        entry["bytes"] = too_large.bytes_read or (request.content_length or 0)
        raise ApiFailure(
            416, f"the request is larger than {config.max_request_bytes} bytes"
        ) from None
    entry["bytes"] = len(body)
    entry["received"] = round(time.time() - entry["time"], 3)  # the body's upload alone
    if config.fail_rate and emulator.fault_rng.random() < config.fail_rate:
        status = emulator.fault_rng.choice((500, 503))
        raise ApiFailure(status, "injected fault: the request was not applied")
    request[BODY] = body
    return await handler(request)


def _parse_body(request: web.Request) -> Any:
    try:
        return jsonio.loads_exact(request[BODY])
    except jsonio.MalformedJson as exc:
        raise ApiFailure(400, f"the body is not valid JSON: {exc}") from None


def _customer_label(customer: dict[str, Any]) -> str:
    customer_id = customer.get("id")
    return str(customer_id) if customer_id is not None else str(customer.get("email"))


def _refuse_if_listed(emulator: Emulator, order: dict[str, Any], path: str) -> None:
    """Fault injection: an order the settings name is refused as invalid content."""
    if str(order.get("id")) in emulator.config.refused_orders:
        raise ApiFailure(400, f"{path}: order {order.get('id')} is refused")


async def handle_import(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    try:
        parsed = parse_import(_parse_body(request))
    except BadRequest as exc:
        raise ApiFailure(400, exc.message) from None
    for index, customer in enumerate(parsed.customers):
        for order_index, order in enumerate(customer.get("orders") or ()):
            _refuse_if_listed(emulator, order, f"customers[{index}].orders[{order_index}]")
    fails = emulator.process_rng.random() < emulator.config.process_fail_rate
    process = emulator.processes.start(parsed, emulator.config.process_delay_ms / 1000, fails)
    request[TOUCHED] = Touched(
        customers=[_customer_label(customer) for customer in parsed.customers],
        orders=[
            str(order["id"])
            for customer in parsed.customers
            for order in customer.get("orders") or ()
        ],
        process_id=process.process_id,
    )
    return json_response({"processId": process.process_id})


async def handle_merge_customer(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    try:
        customer = parse_merge_customer(_parse_body(request))
    except BadRequest as exc:
        raise ApiFailure(400, exc.message) from None
    emulator.store.upsert_customer(customer)
    request[TOUCHED] = Touched(customers=[_customer_label(customer)])
    return json_response({"status": "ok"})


async def handle_merge_order(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    try:
        order = parse_merge_order(_parse_body(request))
    except BadRequest as exc:
        raise ApiFailure(400, exc.message) from None
    _refuse_if_listed(emulator, order, "order")
    emulator.store.merge_order(order)
    customer_id = order.get("customerId")
    label = str(customer_id) if customer_id is not None else str(order["customerEmail"])
    request[TOUCHED] = Touched(customers=[label], orders=[str(order["id"])])
    return json_response({"status": "ok"})


async def handle_delete_customer(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    try:
        target = parse_delete_customer(_parse_body(request))
    except BadRequest as exc:
        raise ApiFailure(400, exc.message) from None
    deleted = emulator.store.delete_customer(target.id, target.email)
    label = str(target.id) if target.id is not None else str(target.email)
    request[TOUCHED] = Touched(customers=[label])
    return json_response({"status": "ok", "deleted": deleted})


async def handle_process(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR]
    raw_id = request.match_info["process_id"]
    process = emulator.processes.get(int(raw_id)) if raw_id.isdigit() else None
    if process is None:
        raise ApiFailure(404, f"process {raw_id} not found")
    request[TOUCHED] = Touched(process_id=process.process_id)
    return json_response(process.to_json())


async def emulator_state(request: web.Request) -> web.Response:
    return json_response(request.app[EMULATOR].store.snapshot())


async def emulator_requests(request: web.Request) -> web.Response:
    return json_response({"requests": request.app[EMULATOR].requests})


async def emulator_reset(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        changes = jsonio.loads_exact(body) if body.strip() else {}
    except jsonio.MalformedJson as exc:
        return _error(400, f"the body is not valid JSON: {exc}")
    if not isinstance(changes, dict):
        return _error(400, "the body must be a JSON object of settings")
    try:
        request.app[EMULATOR].reset(changes)
    except ConfigChangeError as exc:
        return _error(400, str(exc))
    log.info("emulator reset (changed: %s)", ", ".join(sorted(changes)) or "nothing")
    return json_response({"status": "ok"})


async def emulator_settings(request: web.Request) -> web.Response:
    """Changes settings (an outage, a fail rate...) keeping the account and the log."""
    body = await request.read()
    try:
        changes = jsonio.loads_exact(body) if body.strip() else {}
    except jsonio.MalformedJson as exc:
        return _error(400, f"the body is not valid JSON: {exc}")
    if not isinstance(changes, dict):
        return _error(400, "the body must be a JSON object of settings")
    try:
        request.app[EMULATOR].change(changes)
    except ConfigChangeError as exc:
        return _error(400, str(exc))
    log.info("emulator settings changed: %s", ", ".join(sorted(changes)) or "nothing")
    return json_response({"status": "ok"})


async def emulator_health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def create_app(config: EmulatorConfig) -> web.Application:
    """The emulator as an aiohttp application, for ``python -m emulator`` or in-process tests."""
    # Bodies are read by _read_bounded; aiohttp's own cap must never answer 413 first.
    app = web.Application(middlewares=[api_gate], client_max_size=config.max_request_bytes + 1)
    app[EMULATOR] = Emulator(config)
    app.router.add_post("/v1/import", handle_import)
    app.router.add_post("/v1/merge_customer", handle_merge_customer)
    app.router.add_post("/v1/merge_order", handle_merge_order)
    app.router.add_post("/v1/delete_customer", handle_delete_customer)
    app.router.add_get("/v1/processes/{process_id}", handle_process)
    app.router.add_get("/_emulator/state", emulator_state)
    app.router.add_get("/_emulator/requests", emulator_requests)
    app.router.add_post("/_emulator/reset", emulator_reset)
    app.router.add_post("/_emulator/settings", emulator_settings)
    app.router.add_get("/_emulator/health", emulator_health)

    async def stop_processes(app: web.Application) -> None:
        app[EMULATOR].processes.clear()

    app.on_cleanup.append(stop_processes)
    return app
