"""The delivery stack of a streaming service: the API client, the flusher and the
import checker, built together (they share the limiter and the store), and
what a stop lets go out (:meth:`Delivery.drain`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from consumer.config import Settings
from consumer.delivery.flush import DeadLetterDoc, Flusher, Fresh
from consumer.delivery.http.client import ApiSettings, Attempt, RfmcubeClient
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.planner import Planner
from consumer.delivery.processes import ProcessChecker
from consumer.delivery.sender import Sender
from consumer.errors import ApiFatal, NotActive
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore

__all__ = ["Delivery", "api_settings", "open_delivery"]

log = logging.getLogger(__name__)

MAX_DOCUMENTS_PER_FLUSH = 10_000_000  # a flush pages through a whole backlog


@dataclass
class Delivery:
    client: RfmcubeClient
    flusher: Flusher
    checker: ProcessChecker
    obligations: Obligations
    limiter: RateLimiter

    async def drain(self, may_send: Callable[[], bool], deadline: float) -> None:
        """A stop's last work, until ``deadline`` (time.monotonic()): what is owed goes
        out, and the imports it can see completed are checked, so that the next
        owner need not send their documents again."""
        obligations, limiter = self.obligations, self.limiter
        try:
            while may_send() and time.monotonic() + limiter.next_free_in() < deadline:
                due = obligations.due_imports(time.time() + limiter.next_free_in() + 0.5, 1)
                left = max(0.1, deadline - time.monotonic())
                if obligations.owed_count():
                    await asyncio.sleep(limiter.next_free_in())
                    progressed = await asyncio.wait_for(
                        asyncio.shield(self.flusher.flush_once()), left
                    )
                    if not progressed and not due:
                        break
                elif due:
                    await asyncio.wait_for(asyncio.shield(self.checker.check(due[0])), left)
                elif obligations.pending_imports():
                    await asyncio.sleep(0.2)  # a process still running: its next check
                else:
                    break
        except TimeoutError:
            log.warning("grace period over: what is still owed stays in the store")
        except (ApiFatal, NotActive) as exc:
            log.warning("final flush stopped: %s", exc)


def api_settings(settings: Settings) -> ApiSettings:
    """What the API client needs of the settings (the service's, and check-config's probe)."""
    api = settings.api
    return ApiSettings(
        base_url=api.base_url,
        api_key=settings.api_key,
        timeout=api.timeout_seconds,
        upload_bytes_per_second=api.upload_bytes_per_second,
        max_retry_after=api.max_retry_after_seconds,
    )


@asynccontextmanager
async def open_delivery(
    settings: Settings,
    store: StateStore,
    obligations: Obligations,
    planner: Planner,
    limiter: RateLimiter,
    *,
    may_send: Callable[[], bool],
    on_attempt: Callable[[Attempt], None],
    fresh: Fresh,
    dead_letter_doc: DeadLetterDoc,
    backlog: Callable[[], int] | None = None,
) -> AsyncIterator[Delivery]:
    api = settings.api
    window = limiter.window
    async with RfmcubeClient(
        api_settings(settings),
        limiter,
        may_send=may_send,
        # Every slot taken is kept: a restart knows what the key's window holds.
        on_slot=lambda: store.record_send(time.time(), window),
        on_attempt=on_attempt,
    ) as client:
        checker: ProcessChecker | None = None
        flusher = Flusher(
            obligations,
            planner,
            Sender(
                client,
                max_request_bytes=api.max_request_bytes,
                trigger_integrations=api.trigger_integrations,
            ),
            limiter,
            min_window=settings.pacing.min_window_seconds,
            max_documents=MAX_DOCUMENTS_PER_FLUSH,
            hold_imports=api.acceptance == "completed",
            dead_letter_doc=dead_letter_doc,
            hurry_imports=lambda pids: checker.hurry(pids) if checker else None,
            imports_accepted=lambda: checker.wake.set() if checker else None,
            fresh=fresh,
            backlog=backlog,
            owed_bound=settings.store.max_owed_documents,
            uploads_idle=client.uploads.idle,
        )
        checker = ProcessChecker(
            obligations,
            client,
            limiter,
            on_failed=flusher.dirty.set,
            # With ``completed`` acceptance an import's documents count as delivered
            # (freshness) when its process completed, not when it was accepted.
            on_completed=lambda source_ms: (
                fresh("import", source_ms) if api.acceptance == "completed" else None
            ),
        )
        try:
            yield Delivery(client, flusher, checker, obligations, limiter)
        finally:
            flusher.close()  # its planning workers
