"""The Kafka source in a child process, so that the consumer gets a core of its own.

kafka-python parses fetched record batches and runs its network loop in
Python: about a quarter of the service's CPU, under the same GIL as decoding,
mapping and the store (bench/README.md, "Where the time goes"). Here a child
process (:mod:`consumer.source.child`) runs an ordinary
:class:`consumer.source.thread.KafkaSource` and the service
talks to it through a pipe; :class:`ProcessSource` offers the same interface,
so the service does not know which one it has.

What crosses the pipe, child to parent: batches of records (as tuples), the
source's state after each batch and every 0.1 s (assignment, high-water marks,
lease deadline, role), answers to commands, and the rebalance callbacks,
which the child's Kafka IO thread forwards and waits on exactly as it waits
on an in-process callback. Parent to child: commits and offset queries,
released bytes, the hold, callback replies, and stop.

The guarantees are those of the in-process source:

- Order: one pipe, one sender at a time; records of a partition arrive in
  the order the consumer returned them.
- Memory: the child counts a batch's bytes as pending until the service
  releases them, so the pause above ``max_pending_bytes`` still bounds
  everything in flight (the pipe and the parent's queue included).
- Revocation: the child takes records and sends them under the same lock as
  a forwarded callback, so the parent has every record taken before the
  revocation when it handles it; it drops the ones of revoked partitions
  the service has not taken, and the child reads them again if the
  partition comes back (:meth:`KafkaSource.resume_from`).
- Leases: the deadline is on the lease's clock (``CLOCK_BOOTTIME``), one
  clock for both processes on Linux; the parent's copy lags by at most one
  status message, so it errs early.
- A dead child (killed, crashed) ends the pipe: :meth:`get` and every
  command raise :class:`SourceError`, and the service exits rather than
  stalls. A dead parent ends the pipe too: the child closes its consumer,
  which leaves the group at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from multiprocessing.connection import Connection
from typing import Any, Final

from consumer.errors import RevokeInProgress, SourceError
from consumer.source.assignor import lease_clock
from consumer.source.base import (
    CommitOffset,
    OnAssign,
    OnLost,
    OnRevoke,
    SourceSettings,
    record_bytes,
    take_batches,
)
from consumer.source.child import ERROR_KINDS, ChildStatus, child_main
from consumer.waiting import in_daemon_thread
from schemas.debezium import PartitionId, RawRecord

__all__ = ["ProcessSource"]

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS: Final = 15.0  # closing the consumer leaves the group: allow for it


class ProcessSource:
    """:class:`consumer.source.thread.KafkaSource`'s interface, its consumer in a child process.

    The callbacks run on a thread of this process (the pipe's reader), never
    on the event loop, with the same rules as KafkaSource's."""

    def __init__(
        self,
        settings: SourceSettings,
        *,
        on_revoke: OnRevoke | None = None,
        on_assign: OnAssign | None = None,
        on_lost: OnLost | None = None,
        log_format: str = "text",
    ) -> None:
        self._settings = settings
        self._log_format = log_format
        self._on_revoke = on_revoke
        self._on_assign = on_assign
        self._on_lost = on_lost
        self._conn: Connection | None = None
        self._process: Any = None
        self._reader: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # guards what the reader thread writes
        self._ready: deque[list[RawRecord]] = deque()
        self._status = ChildStatus()
        self._assigned: frozenset[PartitionId] = frozenset()
        self._revoking = threading.Event()
        self._held = False
        self._wake = asyncio.Event()
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._failure: str | None = None
        self._stopping = False

    # -- life cycle --------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the child process, which imports its modules and then waits for
        :meth:`start`: that half second overlaps the service's own start-up."""
        if self._process is not None:
            return
        # spawn: a fork of a process with threads (health server, store) is unsafe.
        context = multiprocessing.get_context("spawn")
        self._conn, child_end = context.Pipe(duplex=True)
        self._process = context.Process(
            target=child_main,
            args=(
                self._settings,
                child_end,
                self._log_format,
                logging.getLogger().getEffectiveLevel(),
            ),
            name=f"kafka-source-{self._settings.group_id}",
            daemon=True,
        )
        self._process.start()
        child_end.close()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Join the group and start reading (spawning the child first if need be)."""
        if self._reader is not None:
            raise SourceError("the source was already started")
        self._loop = loop
        self.spawn()
        self._send(("start",))
        self._reader = threading.Thread(target=self._read, name="kafka-source-pipe", daemon=True)
        self._reader.start()

    async def stop(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """Ask the child to close its consumer (committing nothing) and wait for it,
        ``timeout`` seconds at most; then it is killed."""
        self._stopping = True
        if self._process is not None:
            with contextlib.suppress(OSError, ValueError):
                self._send(("stop",))
            await in_daemon_thread(lambda: self._process.join(max(0.1, timeout - 1.0)))
            if self._process.is_alive():
                log.warning("the Kafka source process did not stop in time; killing it")
                self._process.kill()
                await in_daemon_thread(lambda: self._process.join(1.0))
        if self._reader is not None:
            await in_daemon_thread(lambda: self._reader.join(1.0) if self._reader else None)
        self._fail_answers("the source is stopped")
        self._wake.set()

    def pid(self) -> int | None:
        """The child's process id (None before start)."""
        return None if self._process is None else int(self._process.pid)

    # -- records -----------------------------------------------------------------------

    async def get(self, max_records: int | None = None) -> list[RawRecord]:
        """The records received since the last call, at most ``max_records`` of them
        (waits for at least one)."""
        while True:
            self._wake.clear()
            with self._lock:
                records = take_batches(self._ready, max_records)
            if records:
                return records
            self._raise_if_not_running()
            await self._wake.wait()

    def release(self, nbytes: int) -> None:
        self._send_quietly(("release", nbytes))

    def hold(self, held: bool) -> None:
        if held != self._held:
            log.info("%s reading: %s", "pausing" if held else "resuming", "work owed to the API")
        self._held = held
        self._send_quietly(("hold", held))

    # -- commands ----------------------------------------------------------------------

    async def commit(self, offsets: Mapping[PartitionId, CommitOffset]) -> None:
        if offsets:
            await self._call("commit", dict(offsets))

    async def committed(self, partitions: Iterable[PartitionId]) -> dict[PartitionId, int | None]:
        result: dict[PartitionId, int | None] = await self._call("committed", list(partitions))
        return result

    async def committed_marks(
        self, partitions: Iterable[PartitionId]
    ) -> dict[PartitionId, tuple[int, str] | None]:
        result: dict[PartitionId, tuple[int, str] | None] = await self._call(
            "committed_marks", list(partitions)
        )
        return result

    # -- state -------------------------------------------------------------------------

    def highwaters(self) -> dict[PartitionId, int]:
        with self._lock:
            return dict(self._status.highwaters or {})

    def role(self) -> str:
        with self._lock:
            if self._assigned:
                return "active"
            return "standby" if self._status.joined else "joining"

    def revoking(self) -> bool:
        return self._revoking.is_set()

    def waiting_records(self) -> int:
        with self._lock:
            return self._status.waiting + sum(len(batch) for batch in self._ready)

    def assignment(self) -> set[PartitionId]:
        with self._lock:
            return set(self._assigned)

    def is_active(self) -> bool:
        with self._lock:
            if not self._assigned:
                return False
            status = self._status
        if not status.leased:
            return True
        return status.active_until is not None and lease_clock() < status.active_until

    def active_until(self) -> float | None:
        with self._lock:
            if not self._assigned:
                return None
            return self._status.active_until

    # -- the pipe ----------------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._conn is None:
            raise SourceError("the source was not started")
        with self._send_lock:
            self._conn.send(message)

    def _send_quietly(self, message: tuple[Any, ...]) -> None:
        """A notice the child may no longer need (it failed or stopped: get() says so)."""
        with contextlib.suppress(OSError, ValueError, SourceError):
            self._send(message)

    def _raise_if_not_running(self) -> None:
        if self._failure is not None:
            raise SourceError(self._failure)
        if self._stopping:
            raise SourceError("the source is stopped")
        if self._reader is None:
            raise SourceError("the source was not started")

    async def _call(self, name: str, args: Any) -> Any:
        self._raise_if_not_running()
        if self._revoking.is_set():
            raise RevokeInProgress(
                "commit()/committed() during on_revoke: the revocation commits instead"
            )
        command_id = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[command_id] = answer
        try:
            self._send(("command", command_id, name, args))
        except (OSError, ValueError) as exc:
            self._answers.pop(command_id, None)
            raise SourceError(f"the Kafka source process is gone: {exc!r}") from exc
        if self._failure is not None:
            self._fail_answers(self._failure)
        return await answer

    def _notify(self, callback: Callable[..., object], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(callback, *args)

    def _settle(self, command_id: int, result: Any, error: tuple[str, str] | None) -> None:
        answer = self._answers.pop(command_id, None)
        if answer is None or answer.done():
            return
        if error is None:
            answer.set_result(result)
        else:
            kind, message = error
            answer.set_exception(ERROR_KINDS.get(kind, SourceError)(message))

    def _fail_answers(self, message: str) -> None:
        answers, self._answers = self._answers, {}
        for answer in answers.values():
            if not answer.done():
                answer.set_exception(SourceError(message))

    def _read(self) -> None:
        """The child's messages, in order, on this thread."""
        assert self._conn is not None
        failure: str | None = None
        try:
            while True:
                message = self._conn.recv()
                kind = message[0]
                if kind == "records":
                    batch = [RawRecord(*fields) for fields in message[1]]
                    with self._lock:
                        self._ready.append(batch)
                    self._notify(self._wake.set)
                elif kind == "status":
                    status: ChildStatus = message[1]
                    with self._lock:
                        self._status = status
                        if not self._revoking.is_set():
                            self._assigned = status.assigned
                elif kind == "answer":
                    self._notify(self._settle, *message[1:])
                elif kind == "call":
                    self._callback(message[1], message[2])
                elif kind == "failed":
                    failure = f"the Kafka source failed: {message[1]}"
        except (EOFError, OSError):
            pass
        if failure is None and not self._stopping:
            code = self._process.exitcode if self._process is not None else None
            if code is None and self._process is not None:
                self._process.join(1)
                code = self._process.exitcode
            failure = f"the Kafka source process died unexpectedly (exit code {code})"
        if failure is not None:
            log.error("%s", failure)
        self._failure = failure or "the source is stopped"
        with self._lock:
            self._assigned = frozenset()
        self._notify(self._fail_answers, self._failure)
        self._notify(self._wake.set)

    def _callback(self, kind: str, partitions: list[PartitionId]) -> None:
        """A rebalance callback forwarded by the child, whose Kafka IO thread waits."""
        gone = set(partitions)
        dropped: dict[PartitionId, int] = {}
        reply: Any = None
        if kind in ("revoke", "lost"):
            with self._lock:
                dropped = self._drop(gone)
                self._assigned = self._assigned - gone
        try:
            if kind == "revoke":
                reply = {}
                if self._on_revoke is not None and partitions and not self._stopping:
                    self._revoking.set()
                    try:
                        reply = dict(self._on_revoke(partitions))
                    finally:
                        self._revoking.clear()
            elif kind == "lost":
                if self._on_lost is not None and partitions and not self._stopping:
                    self._on_lost(partitions)
            elif kind == "assign":
                with self._lock:
                    self._assigned = self._assigned | gone
                if self._on_assign is not None:
                    reply = self._on_assign(partitions)
        except Exception:
            log.exception("on_%s failed for %s", kind, partitions)
            reply = {} if kind == "revoke" else None
        self._send_quietly(("reply", reply, dropped))

    def _drop(self, partitions: set[PartitionId]) -> dict[PartitionId, int]:
        """Forget the received records of these partitions; where each must resume.
        Their bytes are released, since the service will never take them."""
        dropped: dict[PartitionId, int] = {}
        kept: deque[list[RawRecord]] = deque()
        released = 0
        for batch in self._ready:
            keep = []
            for record in batch:
                tp = (record.topic, record.partition)
                if tp in partitions:
                    dropped.setdefault(tp, record.offset)
                    released += record_bytes(record)
                else:
                    keep.append(record)
            if keep:
                kept.append(keep)
        self._ready = kept
        if released:
            self._send_quietly(("release", released))
        return dropped
