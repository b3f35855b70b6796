"""The Rfmcube API client: one keep-alive session, one rate limiter, retries forever.

One *attempt* takes a slot from the :class:`~consumer.delivery.http.ratelimit.RateLimiter`,
sends the request and maps the answer onto the error tree of
:mod:`consumer.errors` (the only place aiohttp's exceptions are seen):

    2xx                         the parsed JSON object
    401, 403                    ApiFatal      the key was refused
    406                         ApiFatal      the connector is not of the API platform
    413, 416                    ApiTooLarge   split the request
    400, 422                    ApiRejected   the API's message: bisect, dead-letter
    429                         ApiRetriable  the limiter pauses everyone (Retry-After)
    408, 425, 5xx, timeouts,
    resets, refused connections ApiRetriable  send again after a backoff
    other answers (3xx, 404...) ApiFatal      the base URL is wrong or the API changed

:meth:`RfmcubeClient.send` and :meth:`RfmcubeClient.process` retry ApiRetriable
forever (full-jitter exponential backoff, Retry-After honoured) and raise the
others. The API key travels only in the ``api-key`` header: never in a repr, a
log line or an error message. A body is bytes, or a stream read a slice at a time
each time it is sent (a 200 MB import, from its spool file:
:mod:`consumer.delivery.spool`; :mod:`consumer.delivery.http.body`).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import aiohttp.abc
import aiohttp.payload
import orjson
from pydantic import SecretStr

from consumer.delivery.http.body import Body, SlicedBody, Uploads
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.errors import (
    ApiError,
    ApiFatal,
    ApiRejected,
    ApiRetriable,
    ApiTooLarge,
    NotActive,
)

__all__ = ["CALLS", "ApiSettings", "ApiStats", "Attempt", "RfmcubeClient"]

log = logging.getLogger(__name__)

CALLS: Final = frozenset({"import", "merge_customer", "merge_order", "delete_customer"})
PROCESS_CALL: Final = "process"  # the name process polls go by in stats and hooks
_MESSAGE_LIMIT = 500  # characters of an error body kept in an exception


@dataclass(frozen=True)
class ApiSettings:
    """Where the API is and how patiently to talk to it. ``api_key`` prints as stars."""

    base_url: str
    api_key: SecretStr
    timeout: float = 30.0
    # Large bodies get longer: timeout + bytes / upload_bytes_per_second.
    upload_bytes_per_second: float = 1_000_000.0
    max_retry_after: float = 600.0  # a longer Retry-After is logged and cut to this
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    connections: int = 4  # keep-alive connections: the rate limit, not sockets, is the bottleneck

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request on the wire, reported to the ``on_attempt`` hook."""

    call: str  # one of CALLS, or "process"
    status: int | None  # None when no answer came (timeout, reset)
    seconds: float
    request_bytes: int


@dataclass
class ApiStats:
    """Counters for metrics: requests and retries by call, answers by status."""

    requests: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0


class RfmcubeClient:
    """``async with RfmcubeClient(settings, limiter) as api: await api.send("import", body)``."""

    def __init__(
        self,
        settings: ApiSettings,
        limiter: RateLimiter,
        *,
        on_attempt: Callable[[Attempt], None] | None = None,
        may_send: Callable[[], bool] | None = None,
        on_slot: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.stats = ApiStats()
        self._on_attempt = on_attempt
        self._may_send = may_send
        self._on_slot = on_slot
        self._session: aiohttp.ClientSession | None = None
        self.uploads = Uploads()

    def __repr__(self) -> str:
        return f"RfmcubeClient(base_url={self.settings.base_url!r})"

    async def __aenter__(self) -> RfmcubeClient:
        connector = aiohttp.TCPConnector(limit=self.settings.connections)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            headers={
                "api-key": self.settings.api_key.get_secret_value(),
                "accept": "application/json",
            },
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- the calls ---------------------------------------------------------------

    async def send(self, call: str, body: Body) -> dict[str, Any]:
        """POST ``body`` (JSON, already serialized) to ``{base_url}/{call}``; retried until
        accepted. Raises ApiFatal, ApiTooLarge or ApiRejected."""
        if call not in CALLS:
            raise ValueError(f"unknown call {call!r}; expected one of {sorted(CALLS)}")
        url = f"{self.settings.base_url}/{call}"
        return await self._retrying(call, lambda: self._attempt("POST", call, url, body))

    async def process(self, process_id: int | str) -> dict[str, Any]:
        """GET ``{base_url}/processes/{process_id}``: the state of an import
        (404 raises ApiRejected: the API does not know the process)."""
        url = f"{self.settings.base_url}/processes/{quote(str(process_id), safe='')}"
        return await self._retrying(PROCESS_CALL, lambda: self._attempt("GET", PROCESS_CALL, url))

    # -- retries -------------------------------------------------------------------

    async def _retrying(
        self, call: str, attempt: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        failures = 0
        while True:
            try:
                return await attempt()
            except ApiRetriable as exc:
                failures += 1
                self.stats.retries[call] += 1
                delay = self._retry_delay(exc, failures)
                log.warning(
                    "rfmcube API: %s; retry %d of this request in %.2f s",
                    exc,
                    failures,
                    max(delay, exc.retry_after or 0.0),
                )
                if delay > 0:
                    await asyncio.sleep(delay)

    def _retry_delay(self, exc: ApiRetriable, failures: int) -> float:
        if exc.status == 429:
            return 0.0  # the limiter already holds every sender until Retry-After
        if exc.retry_after is not None:
            return exc.retry_after
        ceiling = self.settings.backoff_initial * 2 ** min(failures - 1, 32)
        return random.uniform(0.0, min(self.settings.backoff_max, ceiling))

    # -- one attempt -----------------------------------------------------------------

    async def _attempt(
        self, method: str, call: str, url: str, body: Body | None = None
    ) -> dict[str, Any]:
        session = self._session
        if session is None:
            raise RuntimeError("use the client inside 'async with RfmcubeClient(...)'")
        await self.limiter.acquire()
        if self._may_send is not None and not self._may_send():
            # Checked after the wait for a slot, right before the request goes out.
            raise NotActive(f"{call}: not sent, this instance is not the active one")
        if self._on_slot is not None:
            self._on_slot()  # recorded before it goes: a restart must count it
        self.stats.requests[call] += 1
        headers = {"content-type": "application/json"} if body is not None else None
        size = 0 if body is None else len(body)
        timeout = self.timeout_for(size)
        started = time.monotonic()
        status: int | None = None
        try:
            async with session.request(
                method,
                url,
                data=None if body is None else SlicedBody(body, self.uploads),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                status = response.status
                payload = await response.read()
                retry_after = response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise ApiRetriable(f"{call}: no answer within {timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise ApiRetriable(f"{call}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._report(call, status, time.monotonic() - started, size)
        return self._interpret(call, status, payload, retry_after)

    def timeout_for(self, size: int) -> float:
        """A request's timeout: the base, plus the time to upload ``size`` bytes at the
        slowest rate we accept (a 200 MB import must not be cut off forever)."""
        return self.settings.timeout + size / self.settings.upload_bytes_per_second

    def _capped(self, call: str, wait: float | None) -> float | None:
        cap = self.settings.max_retry_after
        if wait is not None and wait > cap:
            log.warning("%s: the API asked to wait %.0f s; waiting %.0f s", call, wait, cap)
            return cap
        return wait

    def _report(self, call: str, status: int | None, seconds: float, size: int) -> None:
        if status is None:
            self.stats.transport_errors += 1
        else:
            self.stats.statuses[status] += 1
        if self._on_attempt is not None:
            self._on_attempt(Attempt(call, status, seconds, size))

    def _interpret(
        self, call: str, status: int, payload: bytes, retry_after: str | None
    ) -> dict[str, Any]:
        if 200 <= status < 300:
            return _json_object(call, status, payload)
        message = _api_message(payload)
        error: ApiError
        if status in (401, 403):
            error = ApiFatal(
                f"the API key was refused ({status}): check RFMCUBE_API_KEY, it must be "
                f"the key of a Rfmcube connector (the API said: {message})",
                status=status,
            )
        elif status == 406:
            error = ApiFatal(
                "the API refused the connector (406): its platform must be "
                '"Use the Rfmcube API"; create a connector of that platform in Rfmcube '
                "and use its key",
                status=status,
            )
        elif status in (413, 416):
            error = ApiTooLarge(
                f"{call}: the request is too large ({status}): {message}", status=status
            )
        elif status in (400, 422):
            error = ApiRejected(f"{call}: rejected ({status}): {message}", status=status)
        elif status == 429:
            wait = self._capped(call, _retry_after_seconds(retry_after))
            if wait is None:
                wait = self.limiter.window
            self.limiter.pause_until(wait)
            error = ApiRetriable(
                f"{call}: rate limited (429), waiting {wait:g} s", status=status, retry_after=wait
            )
        elif status in (408, 425) or status >= 500:
            error = ApiRetriable(
                f"{call}: server error ({status}): {message}",
                status=status,
                retry_after=self._capped(call, _retry_after_seconds(retry_after)),
            )
        elif status == 404 and call == PROCESS_CALL:
            error = ApiRejected(f"process not found (404): {message}", status=status)
        else:
            error = ApiFatal(
                f"{call}: unexpected answer {status} from {self.settings.base_url}: {message}; "
                "check api.base_url",
                status=status,
            )
        raise error


def _json_object(call: str, status: int, payload: bytes) -> dict[str, Any]:
    if not payload.strip():
        return {}
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ApiRetriable(
            f"{call}: answered {status} with a body that is not JSON: {_clip(payload)}",
            status=status,
        ) from exc
    if not isinstance(parsed, dict):
        raise ApiRetriable(
            f"{call}: answered {status} with JSON that is not an object: {_clip(payload)}",
            status=status,
        )
    return parsed


def _api_message(payload: bytes) -> str:
    """The API's own words: ``message`` of a JSON error body, else the body's text."""
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _clip(payload) or "(empty body)"
    if isinstance(parsed, dict):
        for key in ("message", "error", "detail"):
            if isinstance(parsed.get(key), str):
                return str(parsed[key])[:_MESSAGE_LIMIT]
    return _clip(payload)


def _clip(payload: bytes) -> str:
    return payload[:_MESSAGE_LIMIT].decode("utf-8", errors="replace").strip()


def _retry_after_seconds(header: str | None) -> float | None:
    """Retry-After as seconds from now: a number of seconds or an HTTP date."""
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
