"""The child process of :class:`consumer.source.process.ProcessSource`: it runs an
ordinary :class:`consumer.source.thread.KafkaSource` and serves the parent over a
pipe (what crosses it, and the guarantees: :mod:`consumer.source.process`).

Records go to the parent as tuples, with the source's state after each batch
and every ``STATUS_INTERVAL_SECONDS``; the parent's messages (callback replies,
released bytes, the hold, commands, stop) are read on a thread of their own, so
that a callback reply arrives while Kafka's IO thread waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

from consumer.errors import CommitFailed, RevokeInProgress, RfmcubeCdcError, SourceError
from consumer.ops.logs import configure
from consumer.source.base import SourceSettings
from consumer.source.thread import KafkaSource
from schemas.debezium import PartitionId, RawRecord

__all__ = ["ERROR_KINDS", "ChildStatus", "child_main"]

STATUS_INTERVAL_SECONDS: Final = 0.1

RecordTuple = tuple[
    str, int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...], int | None
]


@dataclass(frozen=True)
class ChildStatus:
    """The child source's state, as the parent last heard it."""

    assigned: frozenset[PartitionId] = frozenset()
    highwaters: Mapping[PartitionId, int] | None = None
    joined: bool = False  # the group answered (standby or active)
    leased: bool = False  # the source has a heartbeat lease (single active)
    active_until: float | None = None
    waiting: int = 0


def _to_tuple(record: RawRecord) -> RecordTuple:
    return (
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        record.headers,
        record.timestamp_ms,
    )


class _Child:
    """Runs a KafkaSource and serves the parent over ``conn``."""

    def __init__(self, settings: SourceSettings, conn: Connection) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()
        self._replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.source = KafkaSource(
            settings,
            on_revoke=self._forward("revoke"),
            on_assign=self._forward("assign"),
            on_lost=self._forward("lost"),
        )

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _forward(self, kind: str) -> Callable[[list[PartitionId]], Any]:
        def callback(partitions: list[PartitionId]) -> Any:
            # Kafka's IO thread waits here, as it would on an in-process callback.
            self.send(("call", kind, partitions))
            reply, dropped = self._replies.get()
            if dropped:
                self.source.resume_from(dropped)
            return reply

        return callback

    async def serve(self) -> None:
        self.source.start(self._loop)
        listener = threading.Thread(target=self._listen, name="parent-listener", daemon=True)
        listener.start()
        failure: BaseException | None = None
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.source.ready(), STATUS_INTERVAL_SECONDS)
                await asyncio.to_thread(self._send_records_and_status)
        except SourceError as exc:
            failure = exc.__cause__ or exc
        except (OSError, EOFError):
            pass  # the parent is gone
        finally:
            await self.source.stop()
        if failure is not None:
            with contextlib.suppress(OSError):
                self.send(("failed", f"{type(failure).__name__}: {failure}"))

    def _send_records_and_status(self) -> None:
        source = self.source
        with self._send_lock:
            # Taken and sent under the lock a forwarded callback needs: the parent
            # sees every record taken before a revocation before the revocation.
            records = source.take()
            if records:
                self._conn.send(("records", [_to_tuple(r) for r in records]))
            role = source.role()
            status = ChildStatus(
                assigned=frozenset(source.assignment()),
                highwaters=source.highwaters(),
                joined=role != "joining",
                leased=source.leased(),
                active_until=source.active_until(),
                waiting=source.waiting_records(),
            )
            self._conn.send(("status", status))

    def _listen(self) -> None:
        """The parent's messages, on a thread of their own: a callback reply must
        arrive while the event loop waits on a full pipe or Kafka's IO thread waits on us."""
        try:
            while True:
                message = self._conn.recv()
                kind = message[0]
                if kind == "reply":
                    self._replies.put(message[1:])
                elif kind == "release":
                    self.source.release(message[1])
                elif kind == "hold":
                    self.source.hold(message[1])
                elif kind == "command":
                    self._loop.call_soon_threadsafe(self._start_command, *message[1:])
                elif kind == "stop":
                    break
        except (EOFError, OSError):
            pass  # the parent died: leave the group now rather than after a session
        self._replies.put(({}, {}))  # a callback waiting for a reply must not hang the close
        self._loop.call_soon_threadsafe(self._stop.set)

    def _start_command(self, command_id: int, name: str, args: Any) -> None:
        self._loop.create_task(self._run_command(command_id, name, args))

    async def _run_command(self, command_id: int, name: str, args: Any) -> None:
        source = self.source
        try:
            result: Any = None
            if name == "commit":
                await source.commit(args)
            elif name == "committed":
                result = await source.committed(args)
            elif name == "committed_marks":
                result = await source.committed_marks(args)
            else:
                raise SourceError(f"unknown command {name!r}")
        except Exception as exc:
            answer: tuple[Any, ...] = ("answer", command_id, None, _error_of(exc))
        else:
            answer = ("answer", command_id, result, None)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.send, answer)


ERROR_KINDS: Final = {"revoke": RevokeInProgress, "commit": CommitFailed, "source": SourceError}


def _error_of(exc: BaseException) -> tuple[str, str]:
    """An error of the child's source as it crosses the pipe: its kind, its message."""
    kind = next(k for k, cls in ERROR_KINDS.items() if isinstance(exc, cls) or k == "source")
    return kind, str(exc) if isinstance(exc, RfmcubeCdcError) else f"{exc!r}"


def child_main(settings: SourceSettings, conn: Connection, log_format: str, log_level: int) -> None:
    # The parent decides when to stop (SIGTERM goes to it; Ctrl-C to both).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure(log_format, log_level)
    try:  # spawned early (its imports overlap the service's start-up): wait for the word
        if conn.recv()[0] != "start":
            return
    except (EOFError, OSError):
        return  # the parent is gone

    async def main() -> None:
        await _Child(settings, conn).serve()

    asyncio.run(main())
