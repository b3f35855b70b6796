"""The service: wires source, decoder, mapping, store, window, planner and sender.

Three loops share one event loop:

- ingest: batches from the source are decoded, mapped and applied to the store
  (one transaction per batch, offsets included); the documents they touch join
  the window;
- flush: when the window is at least ``min_window`` old and a request slot is
  free, the window is planned and sent; while no slot is free, changes keep
  coalescing;
- commit: per partition, the contiguous prefix of records whose documents were
  accepted (or needed no request) is committed, dead letters flushed first.

Start-up first replays into the store whatever the group committed but the
store has not applied (an empty or lost disk), with no API call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from consumer import replay as replay_mod
from consumer.api import ApiSettings, RfmcubeClient
from consumer.coalesce import DirtyDoc, RecordAcks, Window
from consumer.config import Settings
from consumer.deadletter import DeadLetters
from consumer.decode import parse_hint
from consumer.errors import ApiFatal, BadRecord, BrokerUnavailable
from consumer.health import HealthServer
from consumer.limits import RecordLimits
from consumer.mapping import Mapping
from consumer.offsets import OffsetTracker
from consumer.planner import Planner
from consumer.ratelimit import RateLimiter
from consumer.records import change_of
from consumer.sender import Outcome, Sender
from consumer.source import KafkaSource, SourceSettings
from consumer.store import DocRef, StateStore, Touch
from schemas.debezium import Position, RawRecord, Skipped
from schemas.entities import EntityChange

log = logging.getLogger(__name__)
T = TypeVar("T")

COMMIT_INTERVAL_SECONDS = 1.0
REVOKE_FLUSH_SECONDS = 3.0
# Idle this long, a spare request slot checks one accepted import's process.
PROCESS_CHECK_SECONDS = 5.0
EXIT_OK = 0
EXIT_FATAL = 3


@dataclass(slots=True)
class Stats:
    records: int = 0
    restored: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    documents_sent: int = 0
    documents_unchanged: int = 0
    commits: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "restored": self.restored,
            "skipped": dict(self.skipped),
            "dead_letters": self.dead_letters,
            "requests": dict(self.requests),
            "documents_sent": self.documents_sent,
            "documents_unchanged": self.documents_unchanged,
            "commits": self.commits,
        }


class Service:
    def __init__(self, settings: Settings, mapping: Mapping) -> None:
        self.settings = settings
        self.mapping = mapping
        self.stats = Stats()
        self.store = StateStore(settings.store.path)
        self.window = Window()
        self.acks = RecordAcks()
        self.tracker = OffsetTracker()
        self.limiter = RateLimiter(
            settings.pacing.requests_per_minute, settings.pacing.window_seconds
        )
        self.planner = Planner(
            self.store,
            mark_deleted=mapping.mark_deleted if mapping.order_delete.policy == "mark" else None,
            orphan_wait=settings.store.orphan_order_wait_seconds,
        )
        # TODO(lead): settings.limits.record_limits() once Settings has a ``limits`` section
        self._limits = RecordLimits()
        self._hints = {
            topic: {col: parse_hint(h) for col, h in mapping.hints_for(topic).items()}
            for topic in mapping.topics()
        }
        self._stopping = asyncio.Event()
        self._dirty = asyncio.Event()
        self._deadletters: DeadLetters | None = None
        self._dead_flushed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.fatal: ApiFatal | None = None
        self._ready = False
        self._sender: Sender | None = None
        self._flush_lock = asyncio.Lock()

    # -- record handling (shared by ingest and restore) ---------------------

    def _change_of(self, record: RawRecord) -> EntityChange | None:
        """Decode, map and check one record; None (after dead-lettering a bad one)
        if it changes no entity."""
        try:
            change = change_of(record, self._hints.get(record.topic), self.mapping, self._limits)
        except BadRecord as exc:  # change_of raises nothing else
            self._dead_letter(record, exc.reason)
            return None
        if change is None:
            self.stats.skipped["unmapped"] += 1
            return None
        if isinstance(change, Skipped):
            self.stats.skipped[change.kind] += 1
            if change.kind in ("truncate", "message"):
                log.info("skipped %s record at %s", change.kind, change.position)
            return None
        return change

    def _apply(self, records: list[RawRecord]) -> Iterator[tuple[Position, list[Touch]]]:
        """Apply a batch to the store in one transaction; yield what each record touched."""
        changes = [self._change_of(record) for record in records]
        with self.store.batch() as batch:
            batch.prefetch((c.kind, c.key) for c in changes if c is not None)
            for record, change in zip(records, changes, strict=True):
                yield record.position, [] if change is None else batch.apply(change)
            batch.set_offsets(_next_offsets(records))

    def _dead_letter(self, record: RawRecord, reason: str) -> None:
        log.warning("dead-lettered record %s: %s", record.position, reason)
        self.stats.dead_letters += 1
        if self._deadletters is not None:
            self._deadletters.send(record, reason)

    def restore(self) -> int:
        """Replay into the store what the group committed but the store lacks."""
        kafka = self.settings.kafka
        parts = replay_mod.partitions_of(
            kafka.bootstrap_servers, self.mapping.topics(), extra=kafka.extra
        )
        committed = replay_mod.committed_offsets(
            kafka.bootstrap_servers, kafka.group_id, parts, extra=kafka.extra
        )
        applied = self.store.applied_offsets()
        end = {p: c for p, c in committed.items() if c is not None and c > applied.get(p, 0)}
        if not end:
            return 0
        start = {p: applied.get(p, 0) for p in end}
        log.info(
            "restoring the store from the topics: %s",
            {f"{t}[{p}]": (start[(t, p)], o) for (t, p), o in end.items()},
        )
        restored = 0
        deadletters, self._deadletters = self._deadletters, None  # already dead-lettered once
        try:
            for records in replay_mod.replay(
                kafka.bootstrap_servers, start, end, extra=kafka.extra
            ):
                for _ in self._apply(records):
                    pass  # only the store is fed: nothing is sent
                restored += len(records)
        finally:
            self._deadletters = deadletters
        self.stats.restored = restored
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
                    self._deadletters = await asyncio.to_thread(
                        DeadLetters,
                        kafka.bootstrap_servers,
                        kafka.dead_letter_topic,
                        extra=kafka.extra,
                    )
                await asyncio.to_thread(self.restore)
                return True
            except BrokerUnavailable as exc:
                log.warning("Kafka unavailable at start-up (%s): retrying in %.0f s", exc, delay)
                await self._sleep_or_stop(delay)
                delay = min(delay * 2, 30.0)
        return False

    def ingest(self, records: list[RawRecord]) -> None:
        now = time.monotonic()
        finished: list[Position] = []
        for position, touches in self._apply(records):
            self.tracker.track(position.topic, position.partition, position.offset)
            if touches:
                self.window.add(position, touches, now)
                self.acks.expect(position, len(touches))
            else:
                finished.append(position)
        self.stats.records += len(records)
        for position in finished:
            self.tracker.done(position.topic, position.partition, position.offset)
        if len(self.window):
            self._dirty.set()

    # -- the loops ----------------------------------------------------------

    async def _first_of(self, awaitable: Awaitable[T]) -> T | None:
        """The awaitable's result, or None when the service is asked to stop first."""
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            task.cancel()
            return None
        return task.result()

    async def _ingest_loop(self, source: KafkaSource) -> None:
        while not self._stopping.is_set():
            records = await self._first_of(source.get())
            if records is None:
                return
            self.ingest(records)
            source.release(sum(len(r.value or b"") + len(r.key or b"") for r in records))
            await asyncio.sleep(0)

    async def _sleep_or_stop(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _flush_loop(self, sender: Sender) -> None:
        min_window = self.settings.pacing.min_window_seconds
        while not self._stopping.is_set():
            await self._idle_until_dirty(sender)
            if self._stopping.is_set():
                return
            opened = self.window.opened_at
            if opened is not None:
                await self._sleep_or_stop(opened + min_window - time.monotonic())
            # While no request slot is free, changes keep joining the window.
            await self._sleep_or_stop(self.limiter.next_free_in())
            if self._stopping.is_set():
                return
            await self.flush_once(sender)

    async def _idle_until_dirty(self, sender: Sender) -> None:
        """Wait for changes. Meanwhile, in ``process_id`` acceptance, spend spare
        request slots on checking that accepted imports completed: a failed
        one is sent again from the store."""
        while not self._stopping.is_set() and not self._dirty.is_set():
            try:
                await self._first_of(asyncio.wait_for(self._dirty.wait(), PROCESS_CHECK_SECONDS))
            except TimeoutError:
                if self.settings.api.acceptance != "process_id":
                    continue
                if self.limiter.free_slots() <= self.limiter.limit // 2:
                    continue  # keep the budget for changes
                async with self._flush_lock:
                    outcome = await sender.check_a_pending_import(PROCESS_CHECK_SECONDS)
                if outcome is not None:
                    self._settle({}, [], [], [], outcome)

    async def flush_once(self, sender: Sender) -> None:
        # One flush at a time: two in flight could deliver versions of one
        # document out of order.
        async with self._flush_lock:
            await self._flush(sender)

    async def _flush(self, sender: Sender) -> None:
        docs = self.window.take()
        self._dirty.clear()
        if not docs:
            return
        now = time.monotonic()
        plan = self.planner.plan(docs, now)
        if plan.deferred:
            self.window.put_back({ref: docs[ref] for ref in plan.deferred}, now)
        outcome = await sender.send(plan)
        self._settle(docs, plan.deferred, plan.unchanged, plan.rejected, outcome)
        if len(self.window):
            self._dirty.set()

    def _settle(
        self,
        docs: dict[DocRef, DirtyDoc],
        deferred: list[DocRef],
        unchanged: list[DocRef],
        rejected: list[tuple[DocRef, str]],
        outcome: Outcome,
    ) -> None:
        self.stats.requests.update(outcome.requests)
        self.stats.documents_sent += len(outcome.accepted)
        self.stats.documents_unchanged += len(unchanged)
        if outcome.accepted:
            self.store.set_accepted(outcome.accepted)
        if outcome.deleted:
            self.store.forget_accepted(outcome.deleted)
            self.store.forget_accepted_orders_of([key for _, key in outcome.deleted])
        for ref, reason in rejected:
            self._dead_letter_doc(ref, docs.get(ref), reason, b"")
        for ref, reason, body in outcome.dead:
            self._dead_letter_doc(ref, docs.get(ref), reason, body)
        retry = set(outcome.retry)
        if retry:
            self.store.forget_accepted(sorted(retry))
            now = time.monotonic()
            self.window.put_back({r: docs.get(r) or DirtyDoc(first_seen=now) for r in retry}, now)
            self._dirty.set()
        keep = retry | set(deferred)
        for ref, doc in docs.items():
            if ref in keep:
                continue
            for position in self.acks.settle(doc.positions):
                self.tracker.done(position.topic, position.partition, position.offset)

    def _dead_letter_doc(self, ref: DocRef, doc: DirtyDoc | None, reason: str, body: bytes) -> None:
        log.warning("dead-lettered %s %s: %s", ref[0].value, ref[1], reason)
        self.stats.dead_letters += 1
        if self._deadletters is not None and doc is not None and doc.positions:
            self._deadletters.send_entity(
                doc.positions[-1], f"{ref[0].value}:{ref[1]}".encode(), body, reason
            )

    async def commit(self, source: KafkaSource) -> None:
        offsets = self.tracker.committable()
        if not offsets:
            return
        if self._deadletters is not None and self.stats.dead_letters != self._dead_flushed:
            await asyncio.to_thread(self._deadletters.flush)
            self._dead_flushed = self.stats.dead_letters
        await source.commit(offsets)
        self.tracker.mark_committed(offsets)
        self.stats.commits += 1

    async def _commit_loop(self, source: KafkaSource) -> None:
        while not self._stopping.is_set():
            await self._sleep_or_stop(COMMIT_INTERVAL_SECONDS)
            await self.commit(source)

    # -- rebalance ----------------------------------------------------------

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> AnyMapping[tuple[str, int], int]:
        """Called by the consumer thread: what to commit for the revoked partitions."""
        if self._loop is None or self._loop.is_closed():
            return {}
        future = asyncio.run_coroutine_threadsafe(self._revoke(partitions), self._loop)
        try:
            return future.result(timeout=self.settings.service.shutdown_grace_seconds)
        except Exception:
            log.exception("revocation bookkeeping failed; nothing committed for %s", partitions)
            return {}

    async def _revoke(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        # Flush pending work if a request slot is free, within a budget well
        # below the session timeout (heartbeats wait meanwhile); what does not
        # make it is dropped uncommitted and redelivered to the new owner. The
        # flush is shielded: cut short, it goes on and settles later.
        sender = self._sender
        if sender is not None and len(self.window) and self.limiter.next_free_in() == 0:
            flush = asyncio.ensure_future(self.flush_once(sender))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(flush), REVOKE_FLUSH_SECONDS)
        gone = set(partitions)
        offsets = {p: o for p, o in self.tracker.committable().items() if p in gone}
        self.tracker.revoke(partitions)
        self.acks.forget_partitions(partitions)
        return offsets

    # -- run ------------------------------------------------------------------

    def _health_server(self) -> HealthServer | None:
        service = self.settings.service
        if service.health_port is None:
            return None
        return HealthServer(
            service.health_host,
            service.health_port,
            alive=lambda: self.fatal is None,
            ready=lambda: self._ready,
            metrics=self.metrics,
        )

    def metrics(self) -> dict[str, float | dict[str, float]]:
        stats = self.stats
        return {
            "records_total": stats.records,
            "records_restored_total": stats.restored,
            "records_skipped_total": dict(stats.skipped),
            "dead_letters_total": stats.dead_letters,
            "requests_total": dict(stats.requests),
            "documents_sent_total": stats.documents_sent,
            "documents_unchanged_total": stats.documents_unchanged,
            "commits_total": stats.commits,
            "pending_records": self.tracker.pending(),
            "window_documents": len(self.window),
            "rate_limit_free_slots": self.limiter.free_slots(),
        }

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            log.info("stop requested: flushing what the budget allows, then committing")
        self._stopping.set()

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.request_stop)
        kafka = self.settings.kafka
        if not await self._start_up():
            self.store.close()
            return EXIT_OK
        source = KafkaSource(
            SourceSettings(
                bootstrap_servers=kafka.bootstrap_servers,
                group_id=kafka.group_id,
                topics=tuple(self.mapping.topics()),
                client_id=kafka.client_id,
                max_pending_bytes=kafka.max_pending_bytes,
                extra=kafka.extra,
            ),
            on_revoke=self._on_revoke,
        )
        api = ApiSettings(
            base_url=self.settings.api.base_url,
            api_key=self.settings.api_key,
            timeout=self.settings.api.timeout_seconds,
        )
        source.start(self._loop)
        log.info(
            "consuming %s as group %s; sending to %s",
            ", ".join(self.mapping.topics()),
            kafka.group_id,
            self.settings.api.base_url,
        )
        health = self._health_server()
        if health is not None:
            await health.start()
        self._ready = True
        exit_code = EXIT_OK
        try:
            async with RfmcubeClient(api, self.limiter) as client:
                sender = Sender(
                    client,
                    max_request_bytes=self.settings.api.max_request_bytes,
                    acceptance=self.settings.api.acceptance,
                    trigger_integrations=self.settings.api.trigger_integrations,
                )
                self._sender = sender
                exit_code = await self._supervise(source, sender)
        finally:
            self._ready = False
            if health is not None:
                await health.stop()
            await source.stop()
            if self._deadletters is not None:
                self._deadletters.close()
            self.store.close()
        log.info("stopped: %s", orjson.dumps(self.stats.as_dict()).decode())
        return exit_code

    async def _supervise(self, source: KafkaSource, sender: Sender) -> int:
        tasks = [
            asyncio.create_task(self._ingest_loop(source), name="ingest"),
            asyncio.create_task(self._flush_loop(sender), name="flush"),
            asyncio.create_task(self._commit_loop(source), name="commit"),
        ]
        stop = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        failure = next((t for t in done if t is not stop and t.exception() is not None), None)
        self._stopping.set()
        if failure is not None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            error = failure.exception()
            if isinstance(error, ApiFatal):
                self.fatal = error
                log.error("stopping: %s", error)
                return EXIT_FATAL
            assert error is not None
            raise error
        # Graceful stop: finish the current send, then flush what the budget allows.
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._final_flush(source, sender)
        return EXIT_OK

    async def _final_flush(self, source: KafkaSource, sender: Sender) -> None:
        deadline = time.monotonic() + self.settings.service.shutdown_grace_seconds
        try:
            while len(self.window) and time.monotonic() + self.limiter.next_free_in() < deadline:
                # At least a short pause: orders waiting for their customer
                # stay in the window, and must not turn this into a busy loop.
                await asyncio.sleep(max(self.limiter.next_free_in(), 0.2))
                await asyncio.wait_for(
                    asyncio.shield(self.flush_once(sender)), max(0.1, deadline - time.monotonic())
                )
        except TimeoutError:
            log.warning("grace period over: unsent changes will be redelivered")
        except ApiFatal as exc:
            self.fatal = exc
        await asyncio.shield(self.commit(source))


def _next_offsets(records: list[RawRecord]) -> dict[tuple[str, int], int]:
    offsets: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets
