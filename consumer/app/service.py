"""The service's lifecycle: start-up, the tasks, signals, supervision and stop.

The work lives in the rooms of the package (built in :mod:`consumer.app.wiring`):
:mod:`consumer.ingest` (records → store), :mod:`consumer.delivery` (owed
documents → requests → settlement, import checks, resync),
:mod:`consumer.checkpoint` (offsets, revocations), :mod:`consumer.recovery`
(restore, the standby role), :mod:`consumer.source` (Kafka, dead letters).
This module starts them and keeps them running:

1. the health server answers from the first second (``/readyz`` says 503
   until the service streams and its role is settled);
2. start-up opens the dead-letter topic and restores into the store what the
   group committed but the store lacks, with no API call;
3. the source joins the group; one member at a time is active (it holds every
   partition); the others stand by;
4. seven tasks run until SIGTERM: ingest, flush, process checks, commits, the
   role (standing by, taking over), the resync's progress lines and replayed
   dead letters (:mod:`consumer.recovery.replays`);
5. on SIGTERM the tasks stop, what the grace allows is flushed, offsets are
   committed, and the process exits 0, within one deadline
   (:mod:`consumer.app.shutdown`); a failure exits with the code its class
   carries (:mod:`consumer.errors`, :mod:`consumer.app.exits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading

import orjson

from consumer.app.exits import exit_code_for
from consumer.app.shutdown import Shutdown
from consumer.app.wiring import build, new_source
from consumer.changes.mapping import Mapping as ShopMapping
from consumer.config import Settings
from consumer.delivery.flush import Flusher
from consumer.delivery.resync import ResyncControl
from consumer.delivery.stack import Delivery, open_delivery
from consumer.errors import (
    EXIT_BUG,
    EXIT_OK,
    BrokerUnavailable,
    CommitFailed,
    DeadLetterFailed,
    SourceError,
)
from consumer.ops.health import HealthServer
from consumer.source.base import Source, batch_bytes
from consumer.source.deadletter import DeadLetters
from consumer.waiting import first_of, in_daemon_thread, sleep_or_stop

__all__ = ["Service"]

log = logging.getLogger(__name__)

GC_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)
# Records per ingest transaction: their bytes are released as each is stored, so the
# source resumes fetching (below half its bound) while the rest is ingested, and a
# flush gets its turn between them.
INGEST_BATCH_RECORDS = 5000


class Service:
    def __init__(self, settings: Settings, mapping: ShopMapping) -> None:
        self.settings = settings
        self.mapping = mapping
        self._stopping = asyncio.Event()
        self._stop_requested = threading.Event()  # seen by the start-up restore's thread
        self.parts = parts = build(
            settings,
            mapping,
            stopping=self._stopping,
            stop_requested=self._stop_requested,
            active=self._is_active,
            ready=lambda: self.role.ready(self.source),
            wake_flush=lambda: self.delivery.flusher.dirty.set() if self.delivery else None,
        )
        self.store, self.obligations, self.role = parts.store, parts.obligations, parts.role
        self.source: Source | None = None
        self.delivery: Delivery | None = None
        self.resync_control = ResyncControl(
            parts.resync,
            may_start=lambda: self._is_active() and self.delivery is not None,
            role=lambda: self.source.role() if self.source is not None else "joining",
            wake_flush=lambda: self.delivery.flusher.dirty.set() if self.delivery else None,
        )
        self._exit_code = EXIT_OK
        self.shutdown = Shutdown(
            settings.service.shutdown_grace_seconds, exit_code=lambda: self._exit_code
        )
        self._streaming = False
        self._restoring: asyncio.Future[int] | None = None
        self.fatal: BaseException | None = None

    def _is_active(self) -> bool:
        """May send now: the role is ours, its lease holds, and the limiter knows
        what the instance before us may have sent."""
        return self.role.sending_allowed and self.source is not None and self.source.is_active()

    # -- start-up -------------------------------------------------------------------

    async def _start_up(self) -> bool:
        """Open the dead-letter topic and restore the store, waiting out a broker
        that is not reachable yet; False when asked to stop meanwhile."""
        kafka, sink = self.settings.kafka, self.parts.dead_letters
        delay = 1.0
        while not self._stopping.is_set():
            try:
                if sink.letters is None:
                    sink.letters = await first_of(
                        in_daemon_thread(
                            lambda: DeadLetters(
                                kafka.bootstrap_servers, kafka.dead_letter_topic, extra=kafka.extra
                            )
                        ),
                        self._stopping,
                    )
                    if sink.letters is None:
                        return False
                restoring = self._restoring = in_daemon_thread(self.parts.restorer.restore)
                await first_of(asyncio.shield(restoring), self._stopping)
                return not self._stopping.is_set()
            except BrokerUnavailable as exc:
                log.warning("Kafka unavailable at start-up (%s): retrying in %.0f s", exc, delay)
                await sleep_or_stop(delay, self._stopping)
                delay = min(delay * 2, 30.0)
        return False

    # -- run --------------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            log.info("stop requested: flushing what the grace allows, then committing")
        self._shutting_down()

    def _shutting_down(self) -> None:
        """Stop every task; from now on one deadline bounds every step of the stop."""
        self._stop_requested.set()
        self._stopping.set()
        self.shutdown.begin()

    async def run(self) -> int:
        loop = self.parts.revocations.loop = asyncio.get_running_loop()
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
            letters = self.parts.dead_letters.letters
            if letters is not None:
                letters.close(timeout=self.shutdown.left(self.shutdown.hard_stop, 0.2))
            if await self._restore_ended():
                self.store.close()
            self.shutdown.done()

    async def _restore_ended(self) -> bool:
        """Whether no restore thread still writes to the store: it stops at its next
        batch when asked to; past the grace, the process exits under it (SQLite
        rolls the unfinished transaction back)."""
        restoring = self._restoring
        if restoring is None or restoring.done():
            return True
        with contextlib.suppress(TimeoutError, Exception):
            wait = self.shutdown.left(self.shutdown.grace_ends, 0.1)
            await asyncio.wait_for(asyncio.shield(restoring), wait)
        return restoring.done()

    async def _run(self) -> int:
        source = new_source(self.settings, self.mapping, self.parts)
        try:
            if not await self._start_up():
                return EXIT_OK
            return await self._stream(source)
        finally:
            self._shutting_down()
            await source.stop(timeout=self.shutdown.left(self.shutdown.hard_stop, 1.0) - 1.0)
            log.info("stopped: %s", orjson.dumps(self.parts.report.stop_stats()).decode())

    async def _stream(self, source: Source) -> int:
        settings, parts = self.settings, self.parts
        self.source = parts.report.source = source
        assert parts.revocations.loop is not None
        source.start(parts.revocations.loop)
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
        try:
            async with open_delivery(
                settings,
                parts.store,
                parts.obligations,
                parts.planner,
                parts.limiter,
                may_send=self._is_active,
                on_attempt=parts.prometheus.attempt,
                fresh=parts.prometheus.fresh,
                dead_letter_doc=parts.dead_letters.document,
                backlog=lambda: sum(
                    max(0, end - parts.ingest.applied.get(tp, 0))
                    for tp, end in source.highwaters().items()
                ),
            ) as delivery:
                self.delivery = delivery
                report = parts.report
                report.client, report.flusher, report.checker = (
                    delivery.client,
                    delivery.flusher,
                    delivery.checker,
                )
                return await self._supervise(source, delivery)
        finally:
            self._streaming = False

    async def _ingest_loop(self, source: Source, flusher: Flusher) -> None:
        ingest, owed_bound = self.parts.ingest, self.parts.owed_bound
        while not self._stopping.is_set():
            # Nothing of the group's records before the store has caught up with its
            # commits (the role fills any gap first: consumer/recovery/standby.py).
            if await first_of(self.role.caught_up.wait(), self._stopping) is None:
                return
            records = await first_of(source.get(INGEST_BATCH_RECORDS), self._stopping)
            if records is None:
                return
            # Avro schemas, off the loop; an unavailable registry holds the batch here
            schemas = await ingest.prefetch(records, self._stopping.is_set)
            if schemas is None:
                return
            if ingest.ingest(records, schemas=schemas):
                flusher.dirty.set()
            source.release(batch_bytes(records))
            owed_bound.apply(source.hold)
            await asyncio.sleep(0)

    async def _supervise(self, source: Source, delivery: Delivery) -> int:
        stopping, parts, flusher = self._stopping, self.parts, delivery.flusher
        flushing = asyncio.create_task(flusher.run(stopping, self._is_active), name="flush")
        others = [
            asyncio.create_task(self._ingest_loop(source, flusher), name="ingest"),
            asyncio.create_task(delivery.checker.run(stopping, self._is_active), name="checks"),
            asyncio.create_task(
                parts.committer.run(
                    source,
                    flusher.settled,
                    stopping,
                    may_commit=lambda: self.role.sending_allowed,
                    every_round=lambda: parts.owed_bound.apply(source.hold),
                ),
                name="commit",
            ),
            asyncio.create_task(self.role.run(source), name="role"),
            asyncio.create_task(self.resync_control.run(stopping), name="resync"),
            asyncio.create_task(parts.replays.run(stopping), name="replays"),
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
        deadline = self.shutdown.grace_ends
        assert deadline is not None
        for task in others:
            task.cancel()
        # The flush in progress may finish within the grace (it may be retrying
        # against a dead API forever: then it is cut, and what it held stays owed).
        with contextlib.suppress(TimeoutError, Exception):  # a failure is `error` above
            await asyncio.wait_for(asyncio.shield(flushing), self.shutdown.left(deadline, 0.0))
        flushing.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if error is not None:
            if self._exit_code == EXIT_BUG:
                raise error  # a bug: its traceback, exit 1
            return self._exit_code
        await delivery.drain(self._is_active, deadline)
        await self._last_commit(source)
        return EXIT_OK

    async def _last_commit(self, source: Source) -> None:
        """The last commit gets what is left of the grace, two seconds at least,
        leaving the consumer's close its share of the margin."""
        shutdown = self.shutdown
        budget = min(
            shutdown.left(shutdown.grace_ends, 2.0), shutdown.left(shutdown.hard_stop, 0.5) - 2.0
        )
        with contextlib.suppress(TimeoutError, CommitFailed, SourceError, DeadLetterFailed):
            await asyncio.wait_for(
                asyncio.shield(self.parts.committer.commit_or_wait(source)), max(0.5, budget)
            )

    # -- health -------------------------------------------------------------------------

    def _health_server(self) -> HealthServer | None:
        service = self.settings.service
        if service.health_port is None:
            return None
        return HealthServer(
            service.health_host,
            service.health_port,
            alive=lambda: self.fatal is None,
            ready=lambda: self._streaming and self.role.ready(self.source),
            metrics=self.parts.prometheus.registry,
            control=self.resync_control,
        )
