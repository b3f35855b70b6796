"""The Kafka source: one thread owns the consumer and hands batches to asyncio.

kafka-python's consumer is blocking and not thread-safe, so a single thread
polls it, pauses and resumes it, commits through it and answers offset
queries; the asyncio side talks to that thread through a command queue and
gets answers back on its own loop (``call_soon_threadsafe``).

The thread polls every ``poll_timeout_ms`` even while the asyncio side is
slow, so the group never evicts it for exceeding ``max.poll.interval.ms``.
Memory stays bounded instead by pausing: when the bytes handed over but not
yet released pass ``max_pending_bytes``, every assigned partition is paused
(poll keeps running and returns nothing) until they fall below half.

Rebalances (:mod:`consumer.source.rebalance`): on kafka-python's IO thread,
``on_revoke`` is called inline and the offsets it returns committed, and the
records of the revoked partitions that were not handed over yet are dropped.

One active member (``SourceSettings.single_active``, the default): the
group's partitions all go to one member at a time (consumer/source/assignor.py),
with the COOPERATIVE protocol, so standbys joining or leaving revoke nothing.
A member that was evicted (its session expired during a pause) learns it on
its next heartbeat or commit and gets ``on_lost``, never ``on_revoke``: its
commits are refused by the group's generation, so there is nothing to commit.
:meth:`KafkaSource.is_active` says, from the heartbeat lease, whether the
member may still act as the owner right now.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kafka import KafkaConsumer, TopicPartition

from consumer.errors import CommitFailed, ConfigError, RevokeInProgress, SourceError
from consumer.source.assignor import (
    NO_GENERATION,
    HeartbeatLease,
    SingleActiveAssignor,
)
from consumer.source.base import (
    CommitOffset,
    OnAssign,
    OnLost,
    OnRevoke,
    SourceSettings,
    batch_bytes,
    consumer_config,
    raw_record,
    take_batches,
    to_kafka_offsets,
)
from consumer.source.rebalance import RebalanceListener, Rebalances
from consumer.waiting import in_daemon_thread
from schemas.debezium import PartitionId, RawRecord

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass
class _Command:
    """Work for the consumer thread, answered on the event loop."""

    run: Callable[[Any], Any]  # receives the KafkaConsumer
    answer: asyncio.Future[Any]


class KafkaSource(Rebalances):
    """Polls the topics of one consumer group on a dedicated thread.

    The callbacks run on Kafka's IO thread, never on the event loop, must not
    call :meth:`commit` or :meth:`committed`, and must return quickly
    (heartbeats wait meanwhile). None is called while :meth:`stop` closes
    the consumer. Records of the partitions concerned that :meth:`get`
    already returned stay the caller's (release their bytes); the ones not
    yet returned are dropped.

    ``on_revoke(partitions)``: the group takes ``partitions`` away in an
    orderly rebalance, and this member is still a valid member. Finish or
    abandon the work on them and return the offsets to commit (committed
    before the rebalance goes on). With ``single_active``, this is the
    active handing its role over (its subscription no longer covers the
    group's topics); stop sending before returning.

    ``on_lost(partitions)``: the group already gave ``partitions`` to someone
    else (this member's session expired, or its claim was superseded by a
    newer generation). Nothing can be committed for them. Stop sending for
    them at once and forget every in-memory state derived from them
    (windows, pending offsets); they will be read again from the committed
    offsets by whoever owns them. Without ``on_lost``, losses are only logged.

    ``on_assign(partitions)``: the group gave this member ``partitions`` (the
    newly added ones). With ``single_active`` this is the role arriving: all
    partitions at once. It may return positions to start from (e.g. the
    store's applied offsets); partitions it leaves out start at the group's
    committed offsets.

    :meth:`is_active` is the check to make right before each request to
    the API: the member owns partitions and its heartbeat lease has not run
    out (see :class:`consumer.source.assignor.HeartbeatLease`).
    """

    def __init__(
        self,
        settings: SourceSettings,
        *,
        on_revoke: OnRevoke | None = None,
        on_assign: OnAssign | None = None,
        on_lost: OnLost | None = None,
    ) -> None:
        if settings.single_active and "partition_assignment_strategy" in settings.extra:
            raise ConfigError(
                "kafka.extra.partition_assignment_strategy",
                "is set by the service when one member is active at a time",
            )
        self._settings = settings
        self._on_revoke = on_revoke
        self._on_assign = on_assign
        self._on_lost = on_lost
        self._assignor: SingleActiveAssignor | None = None
        self._lease: HeartbeatLease | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._revoking = threading.Event()
        self._failure: BaseException | None = None
        self._wake = asyncio.Event()
        # Guarded by _lock: shared between the consumer thread, kafka's IO
        # thread (rebalance callbacks) and the event loop.
        self._lock = threading.Lock()
        self._ready: deque[list[RawRecord]] = deque()
        self._pending_bytes = 0
        self._assigned: frozenset[PartitionId] = frozenset()
        self._held = False  # the service owes too much: every partition paused
        self._highwaters: dict[PartitionId, int] = {}  # log end offsets seen in fetches
        # Revoked partitions whose polled records were dropped: the offset to resume at.
        self._resume_at: dict[PartitionId, int] = {}

    # -- event-loop side -------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the consumer thread; records begin to arrive through :meth:`get`."""
        if self._thread is not None:
            raise SourceError("the source was already started")
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, name=f"kafka-source-{self._settings.group_id}", daemon=True
        )
        self._thread.start()

    async def get(self, max_records: int | None = None) -> list[RawRecord]:
        """The records polled since the last call, at most ``max_records`` of them
        (waits for at least one)."""
        while True:
            await self.ready()
            records = self.take(max_records)
            if records:
                return records

    async def ready(self) -> None:
        """Returns once records wait to be taken; raises once the source stopped or failed."""
        while True:
            self._wake.clear()
            with self._lock:
                if self._ready:
                    return
            self._raise_if_not_running()
            await self._wake.wait()

    def take(self, max_records: int | None = None) -> list[RawRecord]:
        """The records polled since the last call, at most ``max_records`` of them,
        without waiting (maybe none)."""
        with self._lock:
            return take_batches(self._ready, max_records)

    def resume_from(self, positions: Mapping[PartitionId, int]) -> None:
        """Records from these offsets on were handed over but dropped downstream
        (their partition was revoked first): read them again if it comes back."""
        with self._lock:
            for tp, offset in positions.items():
                if offset < self._resume_at.get(tp, offset + 1):
                    self._resume_at[tp] = offset

    def release(self, nbytes: int) -> None:
        """The asyncio side is done with records of this many bytes (see :func:`batch_bytes`)."""
        with self._lock:
            self._pending_bytes = max(0, self._pending_bytes - nbytes)

    async def commit(self, offsets: Mapping[PartitionId, CommitOffset]) -> None:
        """Commit "next offset to read" per partition; returns once the broker confirmed.

        Only partitions this member owns: a member that lost them and joined
        again is a valid member of the new generation, which alone would not
        stop it from committing offsets of its former tenure."""
        if not offsets:
            return
        kafka_offsets = to_kafka_offsets(offsets, self._settings.commit_metadata)
        timeout_ms = self._settings.commit_timeout_ms

        def run(consumer: Any) -> None:
            stray = sorted(set(kafka_offsets) - set(consumer.assignment()))
            if stray:
                raise CommitFailed(
                    "not committing partitions this member does not own: "
                    + ", ".join(f"{tp.topic}[{tp.partition}]" for tp in stray)
                )
            try:
                consumer.commit(kafka_offsets, timeout_ms=timeout_ms)
            except Exception as exc:
                raise CommitFailed(f"offset commit failed: {exc!r}") from exc

        await self._call(run)

    async def committed(self, partitions: Iterable[PartitionId]) -> dict[PartitionId, int | None]:
        """The group's committed offsets (None where nothing was committed)."""
        wanted = list(partitions)

        def run(consumer: Any) -> dict[PartitionId, int | None]:
            return {tp: consumer.committed(TopicPartition(*tp)) for tp in wanted}

        return await self._call(run)

    def hold(self, held: bool) -> None:
        """Pause every partition (``True``) until released (``False``), whatever the
        pending bytes: the service owes the API more than its bound."""
        if held != self._held:
            log.info("%s reading: %s", "pausing" if held else "resuming", "work owed to the API")
        self._held = held

    def highwaters(self) -> dict[PartitionId, int]:
        """The log end offset of each owned partition, as the last fetch saw it."""
        with self._lock:
            return dict(self._highwaters)

    def role(self) -> str:
        """``active`` (owns partitions), ``standby`` (the group gave it none), or
        ``joining`` (no answer from the group yet)."""
        with self._lock:
            if self._assigned:
                return "active"
        if self._assignor is not None and self._assignor.generation != NO_GENERATION:
            return "standby"
        return "joining"

    def revoking(self) -> bool:
        """Whether a revocation is being handled (commits wait for its end)."""
        return self._revoking.is_set()

    async def committed_marks(
        self, partitions: Iterable[PartitionId]
    ) -> dict[PartitionId, tuple[int, str] | None]:
        """The group's commits of these partitions with their metadata (None: never)."""
        wanted = list(partitions)

        def run(consumer: Any) -> dict[PartitionId, tuple[int, str] | None]:
            found = {tp: consumer.committed(TopicPartition(*tp), metadata=True) for tp in wanted}
            return {
                tp: None if c is None else (int(c.offset), str(c.metadata or ""))
                for tp, c in found.items()
            }

        return await self._call(run)

    def waiting_records(self) -> int:
        """Records polled and not yet taken by :meth:`get`."""
        with self._lock:
            return sum(len(batch) for batch in self._ready)

    def assignment(self) -> set[PartitionId]:
        """The partitions this member currently owns."""
        with self._lock:
            return set(self._assigned)

    def is_active(self) -> bool:
        """Whether this member may act for its partitions right now: it owns some
        and (with ``single_active``) its heartbeat lease has not run out."""
        with self._lock:
            if not self._assigned:
                return False
        return self._lease is None or self._lease.valid()

    def leased(self) -> bool:
        """Whether activity is bounded by a heartbeat lease (``single_active``)."""
        return self._lease is not None

    def active_until(self) -> float | None:
        """The lease's deadline on its clock (:func:`lease_clock`) while owning partitions
        (None without partitions or before the first acknowledged heartbeat)."""
        with self._lock:
            if not self._assigned:
                return None
        return None if self._lease is None else self._lease.valid_until()

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop polling, close the consumer (committing nothing) and join the thread,
        ``timeout`` seconds at most: a consumer stuck on a lost broker is left behind
        (its thread is a daemon), never waited for."""
        self._stopping.set()
        if self._thread is not None:
            await in_daemon_thread(lambda: self._thread.join(timeout) if self._thread else None)
            if self._thread.is_alive():
                log.warning("the Kafka consumer did not close within %.0f s: left behind", timeout)
        self._fail_commands(SourceError("the source is stopped"))
        self._wake.set()

    # -- helpers shared by both sides ------------------------------------

    def _raise_if_not_running(self) -> None:
        if self._failure is not None:
            raise SourceError("the Kafka source thread failed") from self._failure
        if self._stopping.is_set():
            raise SourceError("the source is stopped")
        if self._thread is None:
            raise SourceError("the source was not started")

    async def _call(self, run: Callable[[Any], _T]) -> _T:
        self._raise_if_not_running()
        if self._revoking.is_set():
            # The consumer thread is inside poll() until on_revoke returns: a deadlock.
            raise RevokeInProgress(
                "commit()/committed() during on_revoke: the revocation commits instead"
            )
        answer: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._commands.put(_Command(run, answer))
        if self._failure is not None or self._stopping.is_set():
            # The thread may have drained its queue for the last time already.
            self._fail_commands(SourceError("the source is stopped"))
        return await answer

    def _notify(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback`` on the event loop (a no-op once the loop is closed)."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            log.debug("event loop closed; dropped a notification")

    def _answer(
        self, answer: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        def settle() -> None:
            if answer.done():
                return
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(result)

        self._notify(settle)

    def _fail_commands(self, error: BaseException) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            self._answer(command.answer, None, error)

    # -- consumer thread -------------------------------------------------

    def _run(self) -> None:
        consumer: Any = None
        try:
            consumer = self._open_consumer()
            while not self._stopping.is_set():
                self._run_commands(consumer)
                self._apply_memory_bound(consumer)
                polled = consumer.poll(timeout_ms=self._settings.poll_timeout_ms)
                self._hand_over(polled)
                assigned = consumer.assignment()
                ends = {(tp.topic, tp.partition): consumer.highwater(tp) for tp in assigned}
                with self._lock:
                    self._assigned = frozenset((tp.topic, tp.partition) for tp in assigned)
                    self._highwaters = {tp: end for tp, end in ends.items() if end is not None}
        except BaseException as exc:
            log.exception("the Kafka source thread failed")
            self._failure = exc
        finally:
            self._stopping.set()  # the revoke listener must not act during close
            if consumer is not None:
                try:
                    consumer.close(autocommit=False)
                except Exception:
                    log.exception("closing the Kafka consumer failed")
            with self._lock:
                self._assigned = frozenset()
            error = SourceError("the source is stopped")
            if self._failure is not None:
                error.__cause__ = self._failure
            self._fail_commands(error)
            self._notify(self._wake.set)

    def _open_consumer(self) -> Any:
        settings = self._settings
        ours: dict[str, Any] = {}
        if settings.single_active:
            self._assignor = SingleActiveAssignor()
            ours["partition_assignment_strategy"] = [self._assignor]
        config = consumer_config(
            settings.bootstrap_servers,
            settings.group_id,
            settings.extra,
            client_id=settings.client_id,
            auto_offset_reset="earliest",
            max_poll_records=settings.max_poll_records,
            allow_auto_create_topics=False,  # Debezium creates its topics, compacted
            **ours,
        )
        consumer = KafkaConsumer(**config)
        if self._assignor is not None:
            self._assignor.bind(consumer.assignment)
            lease = HeartbeatLease(consumer.config["session_timeout_ms"])
            lease.attach(consumer)
            self._lease = lease
        consumer.subscribe(topics=list(settings.topics), listener=RebalanceListener(self, consumer))
        # A metadata refresh after subscribing and before the first join: else
        # kafka-python 3.0's leader assigns against an empty metadata snapshot
        # and the next refresh forces a second rebalance (which sometimes stalls).
        existing = consumer.topics()
        for topic in settings.topics:
            if topic not in existing:
                log.warning("topic %s does not exist (yet)", topic)
        return consumer

    def _run_commands(self, consumer: Any) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                result = command.run(consumer)
            except Exception as exc:
                self._answer(command.answer, None, exc)
            else:
                self._answer(command.answer, result, None)

    def _apply_memory_bound(self, consumer: Any) -> None:
        limit = self._settings.max_pending_bytes
        with self._lock:
            pending = self._pending_bytes
        paused = consumer.paused()
        if pending > limit or self._held:
            unpaused = set(consumer.assignment()) - set(paused)
            if unpaused:
                log.info("pausing %d partitions: %d bytes pending", len(unpaused), pending)
                consumer.pause(*unpaused)
        elif paused and pending <= limit // 2 and not self._held:
            log.info("resuming %d partitions: %d bytes pending", len(paused), pending)
            consumer.resume(*paused)

    def _hand_over(self, polled: Mapping[Any, list[Any]]) -> None:
        batch = [raw_record(message) for messages in polled.values() for message in messages]
        if not batch:
            return
        size = batch_bytes(batch)
        with self._lock:
            self._ready.append(batch)
            self._pending_bytes += size
        self._notify(self._wake.set)
