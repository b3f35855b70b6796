"""The service's lifecycle: start-up, the loops, signals, supervision and stop.

The work itself lives in modules with narrow interfaces: :mod:`consumer.ingest`
(records → store), :mod:`consumer.delivery.flush` (owed documents → requests →
settlement), :mod:`consumer.delivery.processes` (process checks) and
:mod:`consumer.checkpoint` (offsets). This module wires them to Kafka and the
API and keeps them running:

1. the health server answers from the first second (``/readyz`` says 503
   until the service streams);
2. start-up opens the dead-letter topic and replays into the store what the
   group committed but the store lacks (a new or lost disk), with no API call;
3. the source joins the group; one member at a time is active (it holds every
   partition); the others stand by;
4. four loops run until SIGTERM: ingest, flush, process checks, commits;
5. on SIGTERM the loops stop, what the grace allows is flushed, offsets are
   committed, and the process exits 0; every known failure exits with a
   documented code (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson

from consumer.changes.mapping import Mapping as ShopMapping
from consumer.changes.mapping.fingerprint import changes, fingerprint, rows_differ
from consumer.checkpoint import Committer
from consumer.config import ANONYMIZE_KEY_ENV, Settings
from consumer.delivery.flush import Flusher, FlushStats
from consumer.delivery.http.client import ApiSettings, RfmcubeClient
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.planner import Planner
from consumer.delivery.privacy import Anonymizer
from consumer.delivery.processes import ProcessChecker
from consumer.delivery.resync import Resync
from consumer.delivery.sender import Sender
from consumer.errors import ApiFatal, BrokerUnavailable, ConfigError, NotActive, RfmcubeCdcError
from consumer.ingest import Ingest
from consumer.ops.health import HealthServer
from consumer.ops.metrics import Metrics, ServiceState
from consumer.recovery.follower import Follower
from consumer.source import replay as replay_mod
from consumer.source.deadletter import DeadLetterFailed, DeadLetters
from consumer.source.placement import available_cpus
from consumer.source.process import ProcessSource
from consumer.source.thread import (
    CommitFailed,
    KafkaSource,
    SourceError,
    SourceSettings,
    batch_bytes,
)
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from schemas.debezium import Position, RawRecord
from schemas.entities import DocRef

__all__ = ["EXIT_CODES", "EXIT_STORE", "Service", "StoreUnusable"]

log = logging.getLogger(__name__)
T = TypeVar("T")

COMMIT_INTERVAL_SECONDS = 1.0
GC_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)
# A flush that met obligations makes a commit due at once (the last records of a
# burst were waiting up to a whole interval); no closer together than this.
COMMIT_SPACING_SECONDS = 0.2
# Records per ingest transaction: their bytes are released as each is stored, so the
# source resumes fetching (below half its bound) while the rest is ingested, and a
# flush gets its turn between them.
INGEST_BATCH_RECORDS = 5000
# The consumer process costs CPU of its own (the pipe): it pays from 1.5 CPUs on.
MIN_CPUS_FOR_CONSUMER_PROCESS = 1.5
REVOKE_BUDGET_SECONDS = 5.0  # heartbeats wait while a revocation is handled
MAX_DOCUMENTS_PER_FLUSH = 10_000_000  # a flush pages through a whole backlog

# The consumer in a thread of this process, or in a child process (kafka.consumer_process).
Source = KafkaSource | ProcessSource

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_API_REFUSED = 3
EXIT_DEAD_LETTERS = 4
EXIT_KAFKA = 5
EXIT_STORE = 6
EXIT_CODES = {
    EXIT_OK: "stopped by SIGTERM or SIGINT",
    1: "an unexpected error (a bug: the traceback is in the log)",
    EXIT_CONFIG: "the configuration or the mapping is wrong (the message names the key)",
    EXIT_API_REFUSED: "the API refused the key or the connector's platform (401, 403, 406)",
    EXIT_DEAD_LETTERS: "the dead-letter topic refused a dead letter",
    EXIT_KAFKA: "the Kafka consumer failed for good",
    EXIT_STORE: "the store cannot be opened or written (permissions, a full or read-only disk)",
}


class StoreUnusable(RfmcubeCdcError):
    """The SQLite store cannot be opened or written."""


class Service:
    def __init__(self, settings: Settings, mapping: ShopMapping) -> None:
        self.settings = settings
        self.mapping = mapping
        try:
            self.store = StateStore(settings.store.path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnusable(
                f"the store {settings.store.path} cannot be opened ({exc}): check store.path"
                " and that the volume is writable by this user"
            ) from None
        self.obligations = Obligations(self.store)
        pacing = settings.pacing
        self.limiter = RateLimiter(
            pacing.requests_per_minute,
            pacing.window_seconds,
            # Spread over the window: a burst would leave the rest of it silent.
            spacing=pacing.window_seconds / pacing.requests_per_minute,
        )
        self.ingest = Ingest(
            self.store,
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
        self.committer = Committer(self.obligations, dead_letters=lambda: self._deadletters)
        self.flusher: Flusher | None = None
        self.checker: ProcessChecker | None = None
        self.source: Source | None = None
        self.follower: Follower | None = None
        self.client: RfmcubeClient | None = None
        self.prometheus = Metrics(self)
        self.resync = Resync(self.store, self.obligations, sent=self._sent_so_far)
        self._sending_allowed = False  # see _take_role
        self._deadletters: DeadLetters | None = None
        self._stopping = asyncio.Event()
        self._stop_requested = threading.Event()  # seen by the start-up restore's thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streaming = False
        self.fatal: BaseException | None = None
        self.restore_progress = 0.0
        self._restoring: asyncio.Future[int] | None = None
        self._new_mapping: dict[str, Any] | None = None  # to record once the store has it
        self._owed_checked_at = 0.0

    # -- dead letters ---------------------------------------------------------------

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

    # -- start-up -------------------------------------------------------------------

    def _mapping_changed(self) -> bool:
        """Compare the mapping with the one the store's rows were built with; log what
        changed. True when the rows must be rebuilt from the topics."""
        current = self.mapping.describe()
        raw = self.store.meta("mapping")
        if raw is None:
            self.store.set_meta("mapping", json.dumps(current))
            return False
        previous = json.loads(raw)
        if fingerprint(previous) == fingerprint(current):
            return False
        for line in changes(previous, current) or ["details only"]:
            log.info("the mapping changed: %s", line)
        self._new_mapping = current
        return rows_differ(previous, current)

    def restore(self) -> int:
        """Replay into the store what the group committed but the store lacks (no API
        call: those records' obligations were met); after a mapping change, every
        record the store applied first. Runs in a thread; stops early when the
        service is asked to stop."""
        kafka = self.settings.kafka
        parts = replay_mod.partitions_of(
            kafka.bootstrap_servers, self.mapping.topics(), extra=kafka.extra
        )
        committed = replay_mod.committed_offsets(
            kafka.bootstrap_servers, kafka.group_id, parts, extra=kafka.extra
        )
        applied = self.store.applied_offsets()
        if self._mapping_changed():
            log.info("rebuilding the store's rows from the topics with the new mapping")
            self._replay({p: 0 for p in applied}, dict(applied), rebuild=True)
        end = {p: c for p, c in committed.items() if c is not None and c > applied.get(p, 0)}
        restored = self._replay({p: applied.get(p, 0) for p in end}, end, rebuild=False)
        if self._new_mapping is not None and not self._stop_requested.is_set():
            # Every document compared with what Rfmcube holds: what changed goes out.
            state, _ = self.resync.start(None, forget=False)
            self.store.set_meta("mapping", json.dumps(self._new_mapping))
            log.info(
                "the new mapping: %d documents to compare with what Rfmcube holds (resync %s)",
                state.documents,
                state.id,
            )
        return restored

    def _replay(
        self, start: dict[tuple[str, int], int], end: dict[tuple[str, int], int], *, rebuild: bool
    ) -> int:
        kafka = self.settings.kafka
        end = {p: o for p, o in end.items() if o > start.get(p, 0)}
        if not end:
            self.restore_progress = 1.0
            return 0
        total = sum(end[p] - start[p] for p in end)
        log.info(
            "restoring the store from the topics: %d records in %d partitions", total, len(end)
        )
        restored = 0
        last_log = time.monotonic()
        for records in replay_mod.replay(kafka.bootstrap_servers, start, end, extra=kafka.extra):
            if self._stop_requested.is_set():
                log.info(
                    "restore interrupted after %d records: it resumes at the next start", restored
                )
                return restored
            self.ingest.ingest(records, owe=False, rebuild=rebuild)
            restored += len(records)
            self.restore_progress = min(1.0, restored / total)
            if time.monotonic() - last_log >= 10:
                last_log = time.monotonic()
                log.info(
                    "restoring: %d of %d records (%.0f %%)",
                    restored,
                    total,
                    100 * self.restore_progress,
                )
        self.restore_progress = 1.0
        log.info("store restored: %d records replayed", restored)
        return restored

    async def _start_up(self) -> bool:
        """Open the dead-letter topic and restore the store, waiting out a broker
        that is not reachable yet; False when asked to stop meanwhile."""
        kafka = self.settings.kafka
        delay = 1.0
        while not self._stopping.is_set():
            try:
                if self._deadletters is None:
                    self._deadletters = await self._first_of(
                        _in_daemon_thread(
                            lambda: DeadLetters(
                                kafka.bootstrap_servers, kafka.dead_letter_topic, extra=kafka.extra
                            )
                        )
                    )
                    if self._deadletters is None:
                        return False
                restoring = _in_daemon_thread(self.restore)
                self._restoring = restoring
                await self._first_of(asyncio.shield(restoring))
                return not self._stopping.is_set()
            except BrokerUnavailable as exc:
                log.warning("Kafka unavailable at start-up (%s): retrying in %.0f s", exc, delay)
                await self._sleep_or_stop(delay)
                delay = min(delay * 2, 30.0)
        return False

    # -- helpers ----------------------------------------------------------------------

    async def _first_of(self, awaitable: Awaitable[T]) -> T | None:
        """The awaitable's result, or None when the service is asked to stop first."""
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                # It may still fail before the cancellation lands: nobody waits for it.
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task.result() if task.done() and not task.cancelled() else None

    async def _sleep_or_stop(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    def _is_active(self) -> bool:
        """May send now: the role is ours, its lease holds, and the limiter knows
        what the instance before us may have sent."""
        return self._sending_allowed and self.source is not None and self.source.is_active()

    # -- the loops --------------------------------------------------------------------

    async def _ingest_loop(self, source: Source, flusher: Flusher) -> None:
        while not self._stopping.is_set():
            records = await self._first_of(source.get(INGEST_BATCH_RECORDS))
            if records is None:
                return
            if self.ingest.ingest(records):
                flusher.dirty.set()
            source.release(batch_bytes(records))
            self._bound_owed(source)
            await asyncio.sleep(0)

    async def _standby_loop(self, source: Source) -> None:
        """While another instance is active, keep the store warm (recovery/follower.py)."""
        kafka = self.settings.kafka
        follower = self.follower = Follower(
            self.ingest,
            self.obligations,
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.group_id,
            topics=self.mapping.topics(),
            extra=kafka.extra,
        )
        standing_by = self._standing_by
        while not self._stopping.is_set():
            role = source.role()
            if role == "active" and not self._sending_allowed:
                await self._take_role(source)
            elif role != "active":
                self._sending_allowed = False
            if standing_by(source):
                await follower.run(lambda: standing_by(source))
                if source.assignment():
                    # The last commits of the instance before: what they cover is delivered.
                    await follower.prune()
                    log.info("taking over: the store followed up to %d records", follower.records)
                continue
            await self._sleep_or_stop(0.2)

    def _standing_by(self, source: Source) -> bool:
        return not self._stopping.is_set() and source.role() == "standby"

    async def _take_role(self, source: Source) -> None:
        """Before the first request: the key's budget is shared with whoever sent before.
        Our own sends are in the store; another instance's are unknown, so its
        window counts as full."""
        window = self.limiter.window
        try:
            committers = await source.committed_by(source.assignment())
        except SourceError:
            return  # lost it again meanwhile: the next round decides
        with contextlib.suppress(SourceError):
            found = await source.committed(source.assignment())
            self.committer.committed.update({tp: o for tp, o in found.items() if o is not None})
        log.debug("committed by: %s", committers)
        others = committers - {"", self.store.instance_id}
        if others:
            self.limiter.fill()
            log.info(
                "active, after another instance (%s): no request for up to %.0f s, the"
                " budget it may have used in its last window",
                ", ".join(sorted(others)),
                window,
            )
        else:
            now = time.time()
            self.limiter.seed(now - at for at in self.store.sends_since(now - window))
            log.info(
                "active: %d requests of this store in the last window",
                self.limiter.limit - self.limiter.free_slots(),
            )
        self._sending_allowed = True

    def _bound_owed(self, source: Source) -> None:
        """Pause reading while more documents are owed than the bound (an API outage
        of hours); resume below 90 % of it."""
        now = time.monotonic()
        if now - self._owed_checked_at < 1.0:
            return  # counting the owed documents is a scan: once a second is enough
        self._owed_checked_at = now
        bound = self.settings.store.max_owed_documents
        owed = self.obligations.owed_count()
        if owed > bound:
            source.hold(True)
        elif owed <= bound * 0.9:
            source.hold(False)

    async def _commit_loop(self, source: Source, settled: asyncio.Event) -> None:
        while not self._stopping.is_set():
            await self._sleep_or_stop(COMMIT_SPACING_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), COMMIT_INTERVAL_SECONDS)
            settled.clear()
            self._bound_owed(source)  # also while paused: no batch comes to do it
            if self._sending_allowed:  # not before the role is taken (it reads the commits)
                await self._commit(source)

    async def _commit(self, source: Source) -> None:
        try:
            await self.committer.commit(source)
        except CommitFailed as exc:
            # A rebalance or a lost role: the next owner commits; nothing is lost.
            log.warning("%s; committing again later", exc)
        except SourceError:
            if source.revoking():
                return  # a revocation commits for itself
            raise

    # -- rebalance callbacks (on Kafka's IO thread) -------------------------------------

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        """What to commit for partitions handed over in order."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return {}
        future = asyncio.run_coroutine_threadsafe(self._revoke(partitions), loop)
        try:
            return future.result(timeout=REVOKE_BUDGET_SECONDS)
        except Exception:
            log.exception("revocation bookkeeping failed; nothing committed for %s", partitions)
            return {}

    async def _revoke(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        await self.committer.flush_dead_letters()
        offsets = self.committer.due(set(partitions))
        self.committer.forget(partitions)
        return offsets

    def _on_lost(self, partitions: list[tuple[str, int]]) -> None:
        log.warning("this instance is no longer active: it stops sending and stands by")
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.committer.forget, partitions)

    # -- health -------------------------------------------------------------------------

    def _health_server(self) -> HealthServer | None:
        service = self.settings.service
        if service.health_port is None:
            return None
        return HealthServer(
            service.health_host,
            service.health_port,
            alive=lambda: self.fatal is None,
            ready=lambda: self._streaming,
            metrics=self.prometheus.registry,
            control=self,
        )

    # -- resync (asked for on the health port: consumer/cli/resync.py) -----------------

    def start_resync(self, since_ms: int | None) -> tuple[int, dict[str, Any]]:
        if not self._is_active() or self.flusher is None:
            role = self.source.role() if self.source is not None else "joining"
            if role == "standby":
                return 409, {
                    "role": role,
                    "message": "this instance stands by: run rfmcube-cdc resync beside the"
                    " active instance (the one whose rfmcube_cdc_active is 1)",
                }
            return 503, {"role": "starting", "message": "this instance is starting: try again"}
        state, started = self.resync.start(since_ms)
        if started:
            log.info(
                "resync %s started: %d documents owed%s",
                state.id,
                state.documents,
                "" if since_ms is None else f", changed since {since_ms} ms",
            )
        self.flusher.dirty.set()
        return 202, {**state.as_json(), "started": started}

    def resync_status(self) -> tuple[int, dict[str, Any]]:
        state = self.resync.current()
        if state is None:
            return 404, {"message": "no resync was asked for"}
        return 200, state.as_json()

    def _sent_so_far(self) -> tuple[int, int]:
        if self.flusher is None:
            return 0, 0
        stats = self.flusher.stats
        return sum(stats.requests.values()), stats.bytes_sent

    async def _progress_loop(self) -> None:
        """Every 10 s while a resync runs, a progress line (JSON logs: one object)."""
        while not self._stopping.is_set():
            await self._sleep_or_stop(10.0)
            state = self.resync.current()
            if state is None or (
                state.finished_at is not None and state.finished_at < time.time() - 15
            ):
                continue
            done = state.documents - state.remaining
            elapsed = max(time.time() - state.started_at, 1e-3)
            eta = state.remaining / (done / elapsed) if done else None
            log.info(
                "resync %s %s: %d of %d documents sent, %d bytes, %d requests%s",
                state.id,
                state.state,
                done,
                state.documents,
                state.bytes_sent,
                state.requests,
                "" if eta is None or state.state == "done" else f", about {eta:.0f} s left",
            )

    def metrics_state(self) -> ServiceState:
        """What /metrics reports (consumer/ops/metrics.py reads it at each scrape)."""
        ingest = self.ingest.stats
        flush = self.flusher.stats if self.flusher is not None else FlushStats()
        source = self.source
        lag: dict[tuple[str, int], int] = {}
        if source is not None:
            for tp, end in source.highwaters().items():
                committed = self.committer.committed.get(tp)
                if committed is not None:
                    lag[tp] = max(0, end - committed)
        oldest = self.obligations.oldest_since()
        return ServiceState(
            records={
                "read": ingest.records,
                "restored": ingest.restored,
                "followed": ingest.followed,
            },
            skipped=dict(ingest.skipped),
            dead_letters={"record": ingest.dead_letters, "entity": flush.dead},
            documents={
                "sent": flush.documents_sent,
                "unchanged": flush.documents_unchanged,
                "parked": flush.parked,
            },
            retries=dict(self.client.stats.retries) if self.client is not None else {},
            processes=dict(self.checker.outcomes) if self.checker is not None else {},
            limiter_waits=self.limiter.waits,
            limiter_wait_seconds=self.limiter.waited_seconds,
            free_slots=self.limiter.free_slots(),
            owed_documents=self.obligations.owed_count(),
            owed_age_seconds=0.0 if oldest is None else max(0.0, time.time() - oldest),
            pending_imports=self.obligations.pending_imports(),
            commits=self.committer.commits,
            lag=lag,
            last_accepted_at=flush.last_accepted_at,
            last_commit_at=self.committer.last_commit_at,
            restore_progress=self.restore_progress,
            active=self._is_active(),
        )

    def stats(self) -> dict[str, Any]:
        """The counters logged when the service stops (the demo reads them)."""
        ingest = self.ingest.stats
        flush = self.flusher.stats if self.flusher is not None else None
        return {
            "records": ingest.records,
            "restored": ingest.restored,
            "skipped": dict(ingest.skipped),
            "dead_letters": ingest.dead_letters + (flush.dead if flush else 0),
            "requests": dict(flush.requests if flush else {}),
            "documents_sent": flush.documents_sent if flush else 0,
            "documents_unchanged": flush.documents_unchanged if flush else 0,
            "process_checks": self.checker.checks if self.checker else 0,
            "commits": self.committer.commits,
        }

    # -- run ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            log.info("stop requested: flushing what the grace allows, then committing")
        self._stop_requested.set()
        self._stopping.set()

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.request_stop)
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
                self._deadletters.close()
            if await self._restore_ended():
                self.store.close()

    async def _restore_ended(self) -> bool:
        """Whether no restore thread still writes to the store: it stops at its next
        batch when asked to; past the grace, the process exits under it (SQLite
        rolls the unfinished transaction back)."""
        restoring = self._restoring
        if restoring is None or restoring.done():
            return True
        grace = self.settings.service.shutdown_grace_seconds
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(restoring), grace)
        return restoring.done()

    def _new_source(self) -> Source:
        settings = self.settings
        kafka = settings.kafka
        source_settings = SourceSettings(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.group_id,
            topics=tuple(self.mapping.topics()),
            client_id=kafka.client_id,
            max_pending_bytes=kafka.max_pending_bytes,
            extra=kafka.extra,
            commit_metadata=self.store.instance_id,
        )
        in_process = kafka.consumer_process
        if in_process == "auto":
            cpus = available_cpus()
            in_process = cpus >= MIN_CPUS_FOR_CONSUMER_PROCESS
            log.info(
                "kafka.consumer_process auto: %.1f CPUs available, so the Kafka consumer"
                " runs in %s",
                cpus,
                "a process of its own" if in_process else "a thread",
            )
        if not in_process:
            return KafkaSource(source_settings, on_revoke=self._on_revoke, on_lost=self._on_lost)
        source = ProcessSource(
            source_settings,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
            log_format=settings.service.log_format,
        )
        source.spawn()  # its imports overlap the restore; it joins the group at start()
        return source

    async def _run(self) -> int:
        source = self._new_source()
        try:
            if not await self._start_up():
                return EXIT_OK
            return await self._stream(source)
        finally:
            await source.stop()
            log.info("stopped: %s", orjson.dumps(self.stats()).decode())

    async def _stream(self, source: Source) -> int:
        settings = self.settings
        kafka = settings.kafka
        self.source = source
        api = ApiSettings(
            base_url=settings.api.base_url,
            api_key=settings.api_key,
            timeout=settings.api.timeout_seconds,
            upload_bytes_per_second=settings.api.upload_bytes_per_second,
            max_retry_after=settings.api.max_retry_after_seconds,
        )
        assert self._loop is not None
        source.start(self._loop)
        log.info(
            "consuming %s as group %s; sending to %s",
            ", ".join(self.mapping.topics()),
            kafka.group_id,
            settings.api.base_url,
        )
        # Start-up's objects (modules, mapping, settings) are never garbage: out of
        # the collector's way. Ingest makes many short-lived objects per batch; the
        # default threshold (700) ran a collection every few records (bench/README.md).
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        self._streaming = True
        try:
            window = self.limiter.window
            async with RfmcubeClient(
                api,
                self.limiter,
                may_send=self._is_active,
                on_slot=lambda: self.store.record_send(time.time(), window),
                on_attempt=self.prometheus.attempt,
            ) as client:
                self.client = client
                sender = Sender(
                    client,
                    max_request_bytes=settings.api.max_request_bytes,
                    trigger_integrations=settings.api.trigger_integrations,
                )
                self.flusher = Flusher(
                    self.obligations,
                    self.planner,
                    sender,
                    self.limiter,
                    min_window=settings.pacing.min_window_seconds,
                    max_documents=MAX_DOCUMENTS_PER_FLUSH,
                    hold_imports=settings.api.acceptance == "completed",
                    dead_letter_doc=self._dead_letter_doc,
                    hurry_imports=lambda pids: self.checker.hurry(pids) if self.checker else None,
                    imports_accepted=lambda: self.checker.wake.set() if self.checker else None,
                )
                flusher = self.flusher
                self.checker = ProcessChecker(
                    self.obligations,
                    client,
                    self.limiter,
                    on_failed=flusher.dirty.set,
                )
                return await self._supervise(source, flusher, self.checker)
        finally:
            self._streaming = False

    async def _supervise(self, source: Source, flusher: Flusher, checker: ProcessChecker) -> int:
        flushing = asyncio.create_task(flusher.run(self._stopping, self._is_active), name="flush")
        others = [
            asyncio.create_task(self._ingest_loop(source, flusher), name="ingest"),
            asyncio.create_task(checker.run(self._stopping, self._is_active), name="checks"),
            asyncio.create_task(self._commit_loop(source, flusher.settled), name="commit"),
            asyncio.create_task(self._standby_loop(source), name="standby"),
            asyncio.create_task(self._progress_loop(), name="progress"),
        ]
        tasks = [flushing, *others]
        stop = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        failure = next((t for t in done if t is not stop and t.exception() is not None), None)
        self._stopping.set()
        self._stop_requested.set()
        deadline = time.monotonic() + self.settings.service.shutdown_grace_seconds
        for task in others:
            task.cancel()
        # The flush in progress may finish within the grace (it may be retrying
        # against a dead API forever: then it is cut, and what it held stays owed).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(flushing), max(0.0, deadline - time.monotonic()))
        flushing.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if failure is not None:
            return self._exit_code(failure.exception())
        await self._final_flush(source, flusher, deadline)
        return EXIT_OK

    def _exit_code(self, error: BaseException | None) -> int:
        self.fatal = error
        if isinstance(error, ApiFatal):
            log.error("stopping: %s", error)
            return EXIT_API_REFUSED
        if isinstance(error, DeadLetterFailed):
            log.error(
                "stopping: %s; check that the dead-letter topic %s exists and accepts writes",
                error,
                self.settings.kafka.dead_letter_topic,
            )
            return EXIT_DEAD_LETTERS
        if isinstance(error, SourceError):
            log.error("stopping: the Kafka consumer failed: %s", error.__cause__ or error)
            return EXIT_KAFKA
        if isinstance(error, sqlite3.Error | OSError):
            log.error(
                "stopping: the store %s cannot be written (%s): check the volume (space,"
                " permissions); nothing owed is lost, it was not committed",
                self.settings.store.path,
                error,
            )
            return EXIT_STORE
        assert error is not None
        raise error

    async def _final_flush(self, source: Source, flusher: Flusher, deadline: float) -> None:
        """What the grace allows goes out; then the offsets are committed."""
        try:
            while (
                self.obligations.owed_count()
                and self._is_active()
                and time.monotonic() + self.limiter.next_free_in() < deadline
            ):
                await asyncio.sleep(self.limiter.next_free_in())
                progressed = await asyncio.wait_for(
                    asyncio.shield(flusher.flush_once()), max(0.1, deadline - time.monotonic())
                )
                if not progressed:
                    break
        except TimeoutError:
            log.warning("grace period over: what is still owed stays in the store")
        except (ApiFatal, NotActive) as exc:
            log.warning("final flush stopped: %s", exc)
        # The last commit gets what is left of the grace, and a few seconds at least.
        with contextlib.suppress(TimeoutError, CommitFailed, SourceError, DeadLetterFailed):
            await asyncio.wait_for(
                asyncio.shield(self._commit(source)), max(3.0, deadline - time.monotonic())
            )


def anonymizer_for(settings: Settings, mapping: ShopMapping) -> Anonymizer | None:
    """The mapping's anonymizer, with the key of the configuration (checked at start-up)."""
    if mapping.customer_delete.policy != "anonymize":
        return None
    key = settings.privacy.anonymize_key.get_secret_value()
    if not key:
        raise ConfigError(
            "privacy.anonymize_key_file",
            f"the mapping anonymizes deleted customers: set ${ANONYMIZE_KEY_ENV} or"
            " privacy.anonymize_key_file (a mounted secret) to the hash's key",
        )
    return Anonymizer(key.encode("utf-8"), mapping.customer_delete)


def _in_daemon_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """``work()`` in a daemon thread: unlike the loop's default executor, nothing
    waits for it at exit (a constructor blocked on an unreachable broker, say)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop may be closed
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="start-up", daemon=True).start()
    return future
