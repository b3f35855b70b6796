"""Helpers of the emulator suite: an HTTP client for /v1 and valid documents."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

API_KEY = "emulator-suite-key"
STAMP = "2020-01-01T13:06:39Z"


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """Calls the emulator's /v1 API as a client would, returning status, parsed body, headers."""

    def __init__(self, session: aiohttp.ClientSession, url: str, key: str | None) -> None:
        self.session = session
        self.url = url
        self.key = key

    async def send(
        self,
        method: str,
        call: str,
        body: bytes | AsyncIterable[bytes] | None = None,
        *,
        key: str | None = None,
    ) -> Answer:
        headers = {"content-type": "application/json"}
        sent_key = key if key is not None else self.key
        if sent_key is not None:
            headers["api-key"] = sent_key
        async with self.session.request(
            method, f"{self.url}/{call}", data=body, headers=headers
        ) as response:
            raw = await response.read()
            parsed = json.loads(raw, parse_float=Decimal) if raw else None
            return Answer(response.status, parsed, dict(response.headers))

    async def post(self, call: str, payload: Any, *, key: str | None = None) -> Answer:
        return await self.send("POST", call, encode(payload), key=key)

    async def get(self, call: str, *, key: str | None = None) -> Answer:
        return await self.send("GET", call, key=key)


def encode(payload: Any) -> bytes:
    """JSON with Decimals written exactly (as the service's client does)."""

    def exact(value: Any) -> orjson.Fragment:
        if isinstance(value, Decimal):
            return orjson.Fragment(str(value))
        raise TypeError(type(value).__name__)

    return orjson.dumps(payload, default=exact)


def customer(email: str, customer_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """A valid customer document."""
    document: dict[str, Any] = {"email": email, "createdAt": STAMP, "updatedAt": STAMP}
    if customer_id is not None:
        document["id"] = customer_id
    document.update(extra)
    return document


def order(order_id: str, amount: Decimal | int = Decimal("85.85"), **extra: Any) -> dict[str, Any]:
    """A valid order document."""
    document: dict[str, Any] = {
        "id": order_id,
        "createdAt": STAMP,
        "updatedAt": STAMP,
        "amount": amount,
    }
    document.update(extra)
    return document


def import_body(*customers: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    return {
        "overwriteDescriptors": overwrite,
        "triggerIntegrations": False,
        "recalculateStats": False,
        "customers": list(customers),
    }
