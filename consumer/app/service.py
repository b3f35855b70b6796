"""The service's lifecycle: start-up, the tasks, signals, supervision and stop.

The work lives in the rooms of the package: :mod:`consumer.ingest` (records →
store), :mod:`consumer.delivery` (owed documents → requests → settlement,
import checks, resync), :mod:`consumer.checkpoint` (offsets, revocations),
:mod:`consumer.recovery` (restore, the standby role), :mod:`consumer.source`
(Kafka, dead letters). This module starts them and keeps them running:

1. the health server answers from the first second (``/readyz`` says 503
   until the service streams);
2. start-up opens the dead-letter topic and restores into the store what the
   group committed but the store lacks, with no API call;
3. the source joins the group; one member at a time is active (it holds every
   partition); the others stand by;
4. six tasks run until SIGTERM: ingest, flush, process checks, commits, the
   role (standing by, taking over) and the resync's progress lines;
5. on SIGTERM the tasks stop, what the grace allows is flushed, offsets are
   committed, and the process exits 0; a failure exits with the code its
   class carries (:mod:`consumer.errors`, :mod:`consumer.app.exits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sqlite3
import threading
import time

import orjson

from consumer.app.exits import exit_code_for
from consumer.app.report import Report
from consumer.changes.mapping import Mapping as ShopMapping
from consumer.checkpoint import Committer, Revocations
from consumer.config import Settings
from consumer.delivery.flush import Flusher
from consumer.delivery.http.client import ApiSettings, RfmcubeClient
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.planner import Planner
from consumer.delivery.privacy import anonymizer_for
from consumer.delivery.processes import ProcessChecker
from consumer.delivery.resync import Resync, ResyncControl
from consumer.delivery.sender import Sender
from consumer.errors import (
    EXIT_BUG,
    EXIT_OK,
    ApiFatal,
    BrokerUnavailable,
    CommitFailed,
    DeadLetterFailed,
    NotActive,
    SourceError,
    StoreUnusable,
)
from consumer.ingest import Ingest, OwedBound
from consumer.ops.health import HealthServer
from consumer.ops.metrics import Metrics
from consumer.recovery.follower import Follower
from consumer.recovery.restore import Restorer
from consumer.recovery.standby import Role
from consumer.source.base import Source, SourceSettings, batch_bytes
from consumer.source.deadletter import DeadLetters
from consumer.source.placement import place_source
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from consumer.waiting import first_of, in_daemon_thread, sleep_or_stop
from schemas.debezium import Position, RawRecord
from schemas.entities import DocRef

__all__ = ["Service"]

log = logging.getLogger(__name__)

GC_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)
# Records per ingest transaction: their bytes are released as each is stored, so the
# source resumes fetching (below half its bound) while the rest is ingested, and a
# flush gets its turn between them.
INGEST_BATCH_RECORDS = 5000
MAX_DOCUMENTS_PER_FLUSH = 10_000_000  # a flush pages through a whole backlog
# After the grace (service.shutdown_grace_seconds) the last commit, closing the
# consumer and the dead-letter producer share this much; then the process exits
# whatever still waits (a broker that stopped answering), so it always ends within
# grace + margin of the signal. deploy/ derives terminationGracePeriodSeconds from it.
SHUTDOWN_MARGIN_SECONDS = 4.0


class Service:
    def __init__(self, settings: Settings, mapping: ShopMapping) -> None:
        self.settings = settings
        self.mapping = mapping
        try:
            self.store = StateStore(settings.store.path)
            self.obligations = Obligations(self.store)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnusable(
                f"the store {settings.store.path} cannot be opened ({exc}): check store.path"
                " and that the volume is writable by this user"
            ) from None
        pacing = settings.pacing
        self.limiter = RateLimiter(
            pacing.requests_per_minute,
            pacing.window_seconds,
            # Spread over the window: a burst would leave the rest of it silent.
            spacing=pacing.window_seconds / pacing.requests_per_minute,
        )
        self.ingest = Ingest(
            self.obligations,
            mapping,
            dead_letter=self._dead_letter,
            limits=settings.limits.record_limits(),
        )
        self.planner = Planner(
            self.store,
            self.obligations,
            mark_deleted=mapping.mark_deleted if mapping.order_delete.policy == "mark" else None,
            orphan_wait=settings.store.orphan_order_wait_seconds,
            anonymizer=anonymizer_for(settings, mapping),
        )
        self.committer = Committer(
            self.obligations,
            instance=self.store.instance_id,
            hold_imports=settings.api.acceptance == "completed",
            dead_letters=lambda: self._deadletters,
        )
        self.revocations = Revocations(self.committer)
        self._stopping = asyncio.Event()
        self._stop_requested = threading.Event()  # seen by the start-up restore's thread
        self.resync = Resync(self.store, self.obligations)
        self.restorer = Restorer(
            settings.kafka,
            mapping,
            self.store,
            self.ingest,
            self.resync,
            stop_requested=self._stop_requested,
        )
        kafka = settings.kafka
        follower = Follower(
            self.ingest,
            self.obligations,
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.group_id,
            topics=mapping.topics(),
            extra=kafka.extra,
        )
        self.role = Role(
            follower,
            self.restorer,
            self.store,
            self.obligations,
            self.limiter,
            self.committer,
            self._stopping,
        )
        self.report = Report(
            ingest=self.ingest,
            obligations=self.obligations,
            committer=self.committer,
            limiter=self.limiter,
            restorer=self.restorer,
            active=self._is_active,
        )
        self.resync_control = ResyncControl(
            self.resync,
            may_start=lambda: self._is_active() and self.flusher is not None,
            role=lambda: self.source.role() if self.source is not None else "joining",
            wake_flush=lambda: self.flusher.dirty.set() if self.flusher else None,
        )
        self.prometheus = Metrics(self.report)
        self.owed_bound = OwedBound(self.obligations, settings.store.max_owed_documents)
        self.flusher: Flusher | None = None
        self.source: Source | None = None
        self._deadletters: DeadLetters | None = None
        self._streaming = False
        self._restoring: asyncio.Future[int] | None = None
        self.fatal: BaseException | None = None
        self._grace_ends: float | None = None  # time.monotonic(): the flush stops
        self._hard_stop: float | None = None  # time.monotonic(): the process ends
        self._exit_code = EXIT_OK  # what the process exits with if it is cut short

    # -- dead letters -------------------------------------------------------------------

    def _dead_letter(self, record: RawRecord, reason: str) -> None:
        if self._deadletters is not None:
            self._deadletters.send(record, reason)

    def _dead_letter_doc(
        self, ref: DocRef, position: Position | None, reason: str, body: bytes
    ) -> None:
        log.warning("dead-lettered %s %s: %s", ref[0].value, ref[1], reason)
        if self._deadletters is not None:
            where = position if position is not None else Position("", -1, -1)
            self._deadletters.send_entity(where, f"{ref[0].value}:{ref[1]}".encode(), body, reason)

    # -- start-up ------------------------------------------------------------------------

    async def _start_up(self) -> bool:
        """Open the dead-letter topic and restore the store, waiting out a broker
        that is not reachable yet; False when asked to stop meanwhile."""
        kafka = self.settings.kafka
        delay = 1.0
        while not self._stopping.is_set():
            try:
                if self._deadletters is None:
                    self._deadletters = await first_of(
                        in_daemon_thread(
                            lambda: DeadLetters(
                                kafka.bootstrap_servers, kafka.dead_letter_topic, extra=kafka.extra
                            )
                        ),
                        self._stopping,
                    )
                    if self._deadletters is None:
                        return False
                restoring = in_daemon_thread(self.restorer.restore)
                self._restoring = restoring
                await first_of(asyncio.shield(restoring), self._stopping)
                return not self._stopping.is_set()
            except BrokerUnavailable as exc:
                log.warning("Kafka unavailable at start-up (%s): retrying in %.0f s", exc, delay)
                await sleep_or_stop(delay, self._stopping)
                delay = min(delay * 2, 30.0)
        return False

    def _is_active(self) -> bool:
        """May send now: the role is ours, its lease holds, and the limiter knows
        what the instance before us may have sent."""
        return self.role.sending_allowed and self.source is not None and self.source.is_active()

    # -- run ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            log.info("stop requested: flushing what the grace allows, then committing")
        self._shutting_down()

    def _shutting_down(self) -> None:
        """Stop every task; from now on one deadline bounds every step of the stop."""
        self._stop_requested.set()
        self._stopping.set()
        if self._hard_stop is not None:
            return
        grace = self.settings.service.shutdown_grace_seconds
        self._grace_ends = time.monotonic() + grace
        self._hard_stop = self._grace_ends + SHUTDOWN_MARGIN_SECONDS
        watchdog = threading.Timer(grace + SHUTDOWN_MARGIN_SECONDS, self._cut_short)
        watchdog.daemon = True
        watchdog.start()

    def _cut_short(self) -> None:
        """The deadline passed with something still waiting (a lost broker): exit now.
        Nothing owed is lost: the store is crash-safe, and what was not committed
        is read again."""
        log.warning(
            "stopping took longer than the grace plus %.0f s: exiting now; what was not"
            " committed is read again at the next start",
            SHUTDOWN_MARGIN_SECONDS,
        )
        logging.shutdown()
        os._exit(self._exit_code)

    def _left(self, until: float | None, least: float) -> float:
        """Seconds left until ``until`` (time.monotonic()), ``least`` at least."""
        return least if until is None else max(least, until - time.monotonic())

    async def run(self) -> int:
        loop = self.revocations.loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        health = self._health_server()
        if health is not None:
            await health.start()
        try:
            return await self._run()
        finally:
            self._streaming = False
            if health is not None:
                await health.stop()
            if self._deadletters is not None:
                self._deadletters.close(timeout=self._left(self._hard_stop, 0.2))
            if await self._restore_ended():
                self.store.close()

    async def _restore_ended(self) -> bool:
        """Whether no restore thread still writes to the store: it stops at its next
        batch when asked to; past the grace, the process exits under it (SQLite
        rolls the unfinished transaction back)."""
        restoring = self._restoring
        if restoring is None or restoring.done():
            return True
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(restoring), self._left(self._grace_ends, 0.1))
        return restoring.done()

    def _new_source(self) -> Source:
        kafka = self.settings.kafka
        return place_source(
            SourceSettings(
                bootstrap_servers=kafka.bootstrap_servers,
                group_id=kafka.group_id,
                topics=tuple(self.mapping.topics()),
                client_id=kafka.client_id,
                max_pending_bytes=kafka.max_pending_bytes,
                extra=kafka.extra,
                commit_metadata=self.store.instance_id,
            ),
            kafka.consumer_process,
            on_revoke=self.revocations.on_revoke,
            on_lost=self.revocations.on_lost,
            log_format=self.settings.service.log_format,
        )

    async def _run(self) -> int:
        source = self._new_source()
        try:
            if not await self._start_up():
                return EXIT_OK
            return await self._stream(source)
        finally:
            self._shutting_down()
            await source.stop(timeout=self._left(self._hard_stop, 1.0) - 1.0)
            log.info("stopped: %s", orjson.dumps(self.report.stop_stats()).decode())

    async def _stream(self, source: Source) -> int:
        settings = self.settings
        self.source = self.report.source = source
        assert self.revocations.loop is not None
        source.start(self.revocations.loop)
        log.info(
            "consuming %s as group %s; sending to %s",
            ", ".join(self.mapping.topics()),
            settings.kafka.group_id,
            settings.api.base_url,
        )
        # Start-up's objects (modules, mapping, settings) are never garbage: out of
        # the collector's way. Ingest makes many short-lived objects per batch; the
        # default threshold (700) ran a collection every few records (bench/README.md).
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        self._streaming = True
        api = settings.api
        try:
            window = self.limiter.window
            async with RfmcubeClient(
                ApiSettings(
                    base_url=api.base_url,
                    api_key=settings.api_key,
                    timeout=api.timeout_seconds,
                    upload_bytes_per_second=api.upload_bytes_per_second,
                    max_retry_after=api.max_retry_after_seconds,
                ),
                self.limiter,
                may_send=self._is_active,
                on_slot=lambda: self.store.record_send(time.time(), window),
                on_attempt=self.prometheus.attempt,
            ) as client:
                self.report.client = client
                checker: ProcessChecker | None = None
                flusher = self.flusher = self.report.flusher = Flusher(
                    self.obligations,
                    self.planner,
                    Sender(
                        client,
                        max_request_bytes=api.max_request_bytes,
                        trigger_integrations=api.trigger_integrations,
                    ),
                    self.limiter,
                    min_window=settings.pacing.min_window_seconds,
                    max_documents=MAX_DOCUMENTS_PER_FLUSH,
                    hold_imports=api.acceptance == "completed",
                    dead_letter_doc=self._dead_letter_doc,
                    hurry_imports=lambda pids: checker.hurry(pids) if checker else None,
                    imports_accepted=lambda: checker.wake.set() if checker else None,
                    backlog=lambda: sum(
                        max(0, end - self.ingest.applied.get(tp, 0))
                        for tp, end in source.highwaters().items()
                    ),
                    owed_bound=settings.store.max_owed_documents,
                )
                checker = self.report.checker = ProcessChecker(
                    self.obligations, client, self.limiter, on_failed=flusher.dirty.set
                )
                try:
                    return await self._supervise(source, flusher, checker)
                finally:
                    flusher.close()  # its planning workers
        finally:
            self._streaming = False

    async def _ingest_loop(self, source: Source, flusher: Flusher) -> None:
        while not self._stopping.is_set():
            # Nothing of the group's records before the store has caught up with its
            # commits (the role fills any gap first: consumer/recovery/standby.py).
            if await first_of(self.role.caught_up.wait(), self._stopping) is None:
                return
            records = await first_of(source.get(INGEST_BATCH_RECORDS), self._stopping)
            if records is None:
                return
            if self.ingest.ingest(records):
                flusher.dirty.set()
            source.release(batch_bytes(records))
            self.owed_bound.apply(source.hold)
            await asyncio.sleep(0)

    async def _supervise(self, source: Source, flusher: Flusher, checker: ProcessChecker) -> int:
        stopping = self._stopping
        flushing = asyncio.create_task(flusher.run(stopping, self._is_active), name="flush")
        others = [
            asyncio.create_task(self._ingest_loop(source, flusher), name="ingest"),
            asyncio.create_task(checker.run(stopping, self._is_active), name="checks"),
            asyncio.create_task(
                self.committer.run(
                    source,
                    flusher.settled,
                    stopping,
                    may_commit=lambda: self.role.sending_allowed,
                    every_round=lambda: self.owed_bound.apply(source.hold),
                ),
                name="commit",
            ),
            asyncio.create_task(self.role.run(source), name="role"),
            asyncio.create_task(self.resync_control.run(stopping), name="resync"),
        ]
        tasks = [flushing, *others]
        stop = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        failure = next((t for t in done if t is not stop and t.exception() is not None), None)
        error = failure.exception() if failure is not None else None
        if error is not None:
            self.fatal = error
            self._exit_code = exit_code_for(error, self.settings)
        self._shutting_down()
        assert self._grace_ends is not None
        deadline = self._grace_ends
        for task in others:
            task.cancel()
        # The flush in progress may finish within the grace (it may be retrying
        # against a dead API forever: then it is cut, and what it held stays owed).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(flushing), max(0.0, deadline - time.monotonic()))
        flushing.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if error is not None:
            if self._exit_code == EXIT_BUG:
                raise error  # a bug: its traceback, exit 1
            return self._exit_code
        await self._final_flush(source, flusher, checker, deadline)
        return EXIT_OK

    async def _final_flush(
        self, source: Source, flusher: Flusher, checker: ProcessChecker, deadline: float
    ) -> None:
        """What the grace allows goes out, and the imports it can see completed are
        checked (so that the next owner need not send their documents again); then
        the offsets are committed."""
        obligations, limiter = self.obligations, self.limiter
        try:
            while self._is_active() and time.monotonic() + limiter.next_free_in() < deadline:
                due = obligations.due_imports(time.time() + limiter.next_free_in() + 0.5, 1)
                if obligations.owed_count():
                    await asyncio.sleep(limiter.next_free_in())
                    progressed = await asyncio.wait_for(
                        asyncio.shield(flusher.flush_once()), max(0.1, deadline - time.monotonic())
                    )
                    if not progressed and not due:
                        break
                elif due:
                    await asyncio.wait_for(
                        asyncio.shield(checker.check(due[0])), max(0.1, deadline - time.monotonic())
                    )
                elif obligations.pending_imports():
                    await asyncio.sleep(0.2)  # a process still running: its next check
                else:
                    break
        except TimeoutError:
            log.warning("grace period over: what is still owed stays in the store")
        except (ApiFatal, NotActive) as exc:
            log.warning("final flush stopped: %s", exc)
        # The last commit gets what is left of the grace, and two seconds at least,
        # leaving the consumer's close its share of the margin.
        assert self._hard_stop is not None
        budget = min(self._left(deadline, 2.0), self._left(self._hard_stop, 0.5) - 2.0)
        with contextlib.suppress(TimeoutError, CommitFailed, SourceError, DeadLetterFailed):
            await asyncio.wait_for(
                asyncio.shield(self.committer.commit_or_wait(source)), max(0.5, budget)
            )

    # -- health ------------------------------------------------------------------------

    def _health_server(self) -> HealthServer | None:
        service = self.settings.service
        if service.health_port is None:
            return None
        return HealthServer(
            service.health_host,
            service.health_port,
            alive=lambda: self.fatal is None,
            ready=lambda: self._streaming and self.role.ready(self.source),
            metrics=self.prometheus.registry,
            control=self.resync_control,
        )
