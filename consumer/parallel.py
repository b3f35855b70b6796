"""Decoding and mapping in worker processes, results in input order.

The service's process holds one GIL, shared by kafka-python's fetch parsing,
the store, the planner and asyncio; decoding and mapping are the largest
pure-Python part of it (about 31 µs of a record's 101 µs, see
bench/README.md). This stage runs them in worker processes:

    stage = DecodeStage(mapping_text, mapping_source=source, workers=2)
    stage.start()                      # blocking: at start-up (asyncio.to_thread)
    job = stage.submit(records)        # never blocks; raises StageFull past the bound
    results = await job                # or job.result(timeout) from plain threads
    for record, result in zip(records, results): ...
    stage.close()

or, inside an asyncio ingest loop, ``async for records, results in
stage.decoded(source.get)`` (closed with ``contextlib.aclosing``), which keeps
the stage full and yields batches in the order they were read.
``mapping_text`` and ``mapping_source`` are what
``consumer.mapping.loading.read_text(settings.mapping)`` returns.

Each result, aligned with its record, is one of (see
:mod:`consumer.decode_worker`, which decides it in ``RecordDecoder.result_of``):

- an :class:`~schemas.entities.EntityChange` (the record changes an entity);
- a :class:`~schemas.debezium.Skipped` (heartbeat, schema change, ...);
- a :class:`Rejected` with the reason of the :class:`~consumer.errors.BadRecord`
  the decoder or the mapper raised: dead-letter the record with it;
- ``None``: the mapping does not map the event (``Mapping.map_event`` gave None).

Order: a job's results are in the order of its records, and
:meth:`DecodeStage.decoded` yields jobs in submission order, so the records of
one partition come out in offset order.

Failures: a worker that dies (killed, segfault, out of memory) breaks the
stage: every job not yet collected, and every later ``submit``, raises
:class:`StageBroken` within about a second (the executor watches the worker
processes), never hangs. A job that takes longer than ``stall_seconds`` raises
:class:`StageStalled`. Any exception other than ``BadRecord`` while decoding
a record is a bug, not a bad record: it raises :class:`StageFailed` with the
worker's exception as its cause. In every case the service should stop.

    RfmcubeCdcError
    ├── ConfigError        start(): the mapping text is refused (checked here first)
    └── StageFailed        the parallel stage cannot go on: stop the service
        ├── StageBroken    a worker process died
        └── StageStalled   a job did not finish within stall_seconds
    StageFull (RuntimeError): submit() past max_in_flight_records: a caller bug

Workers are started with ``forkserver`` (never ``fork``: the service has
threads; the program's main module must be import-safe, as ``consumer.cli``
is), ignore SIGINT (the service stops them) but not SIGTERM (the executor
terminates the workers of a broken pool with it: under systemd, use
``KillMode=mixed`` so that only the service gets the stop signal), and exit
when the service's process goes away. A stage is used from one thread (the
event loop's); it is not thread-safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, Final, NoReturn, TypeVar

from consumer.decode_worker import (
    RecordDecoder,
    Rejected,
    Result,
    WireResult,
    decode_chunk,
    init_worker,
    ready,
    result_from_wire,
    to_wire,
)
from consumer.errors import BadRecord, RfmcubeCdcError
from consumer.mapping import Mapping
from schemas.debezium import RawRecord

__all__ = [
    "DecodeJob",
    "DecodeStage",
    "RecordDecoder",
    "Rejected",
    "Result",
    "StageBroken",
    "StageFailed",
    "StageFull",
    "StageStalled",
]

_T = TypeVar("_T")

DEFAULT_CHUNK_RECORDS: Final = 500
DEFAULT_MAX_IN_FLIGHT_RECORDS: Final = 8_000
DEFAULT_STALL_SECONDS: Final = 60.0


class StageFailed(RfmcubeCdcError):
    """The parallel stage cannot go on; the service should stop (and restart)."""


class StageBroken(StageFailed):
    """A worker process died (killed, crashed, out of memory)."""


class StageStalled(StageFailed):
    """A job did not come back within ``stall_seconds``."""


class StageFull(RuntimeError):
    """``submit`` past ``max_in_flight_records``: collect results first (``has_room``)."""


class _Countdown:
    """Sets ``done`` once ``left`` chunk futures are done."""

    def __init__(self, left: int, done: concurrent.futures.Future[None]) -> None:
        self._left = left
        self._done = done
        self._lock = threading.Lock()
        if left == 0:
            done.set_result(None)

    def one_done(self, _: concurrent.futures.Future[list[WireResult]]) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._done.set_result(None)


class DecodeJob:
    """The results of one submitted batch, aligned with its records."""

    def __init__(
        self,
        stage: DecodeStage,
        records: Sequence[RawRecord],
        chunks: list[tuple[int, concurrent.futures.Future[list[WireResult]]]],
    ) -> None:
        self.records = records
        self._stage = stage
        self._chunks = chunks  # (index of the chunk's first record, future)
        self._deadline = time.monotonic() + stage.stall_seconds
        self._results: list[Result] | None = None
        self._abandoned = False
        # Done when every chunk is (its result or its failure), set from the
        # executor's thread, so that waiting never cancels a chunk. The chunks'
        # callbacks hold a countdown, not the job: a job in a reference cycle
        # would keep its records until the garbage collector's next full pass.
        self._all_done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._awaitable: asyncio.Future[None] | None = None
        countdown = _Countdown(len(chunks), self._all_done)
        for _, future in chunks:
            future.add_done_callback(countdown.one_done)

    def done(self) -> bool:
        """True when the results (or the stage's failure) are ready: result() won't wait."""
        return self._all_done.done()

    def time_left(self) -> float:
        """Seconds until this job counts as stalled."""
        return max(0.0, self._deadline - time.monotonic())

    def result(self, timeout: float | None = None) -> list[Result]:
        """Wait for the results (blocking) at most ``timeout`` seconds, by default
        until ``stall_seconds`` after the submit; raises StageFailed."""
        if self._abandoned:
            raise StageFailed("this job was abandoned")
        if self._results is None:
            wait = self.time_left() if timeout is None else timeout
            if not self._all_done.done():
                concurrent.futures.wait([self._all_done], timeout=wait)
            if not self._all_done.done():
                self._stage._fail(
                    StageStalled(
                        f"a decode job did not come back within {wait:.0f} s: a worker is stuck"
                    )
                )
            self._finish([self._stage._outcome(f.result) for _, f in self._chunks])
        assert self._results is not None
        return self._results

    async def wait(self, timeout: float | None = None) -> list[Result]:
        """Await the results at most ``timeout`` seconds, by default until
        ``stall_seconds`` after the submit; raises StageFailed."""
        if self._results is None and not self._all_done.done():
            left = self.time_left() if timeout is None else timeout
            await asyncio.wait([self.awaitable()], timeout=left)
        return self.result(timeout=0)

    def __await__(self) -> Generator[Any, None, list[Result]]:
        return self.wait().__await__()

    def awaitable(self) -> asyncio.Future[None]:
        """An asyncio future done with the job (never cancel it: use asyncio.wait)."""
        if self._awaitable is None:
            self._awaitable = asyncio.wrap_future(self._all_done)
        return self._awaitable

    def abandon(self) -> None:
        """Give the job up: chunks not started are cancelled, and its records no
        longer count against the bound; ``result()`` then raises StageFailed."""
        if self._results is not None or self._abandoned:
            return
        self._abandoned = True
        for _, future in self._chunks:
            future.cancel()
        self._stage._collected(len(self.records))

    def _finish(self, wires: list[list[WireResult]]) -> None:
        results: list[Result] = []
        records = self.records
        for (start, _), chunk in zip(self._chunks, wires, strict=True):
            for index, wire in enumerate(chunk, start):
                results.append(result_from_wire(wire, records[index]))
        if len(results) != len(records):
            self._stage._fail(
                StageFailed(f"a job came back with {len(results)} results for {len(records)}")
            )
        self._results = results
        self._stage._collected(len(records))


class DecodeStage:
    """A pool of worker processes that decode and map batches of raw records.

    ``mapping_text`` is the mapping file's text (workers compile it themselves:
    ``Mapping.from_text``). A batch is cut into chunks of ``chunk_records``
    spread over the workers; at most ``max_in_flight_records`` records may be
    submitted and not yet collected (``has_room``), which bounds the memory
    the stage holds (twice the record's bytes: the batch and its pickled chunks).
    """

    def __init__(
        self,
        mapping_text: str,
        *,
        mapping_source: str = "<mapping>",
        workers: int = 2,
        chunk_records: int = DEFAULT_CHUNK_RECORDS,
        max_in_flight_records: int = DEFAULT_MAX_IN_FLIGHT_RECORDS,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        start_method: str = "forkserver",
    ) -> None:
        if workers < 1 or chunk_records < 1 or max_in_flight_records < 1:
            raise ValueError("workers, chunk_records and max_in_flight_records must be >= 1")
        if start_method == "fork":
            raise ValueError("fork is unsafe in a process with threads: use forkserver or spawn")
        self.workers = workers
        self.chunk_records = chunk_records
        self.max_in_flight_records = max_in_flight_records
        self.stall_seconds = stall_seconds
        self._mapping = (mapping_text, mapping_source)
        self._start_method = start_method
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._in_flight = 0
        self._failure: StageFailed | None = None

    def __repr__(self) -> str:
        return (
            f"DecodeStage(workers={self.workers}, in_flight={self._in_flight},"
            f" failed={self._failure is not None})"
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start the workers and wait until each has compiled the mapping (blocking)."""
        if self._executor is not None:
            raise RuntimeError("the stage was already started")
        text, source = self._mapping
        Mapping.from_text(text, source=source)  # a ConfigError here, not a dead worker
        context = multiprocessing.get_context(self._start_method)
        if self._start_method == "forkserver":
            # Workers fork from a server that imported the decoder once.
            context.set_forkserver_preload([init_worker.__module__])
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=init_worker,
            initargs=self._mapping,
        )
        try:
            warm_up = [self._executor.submit(ready) for _ in range(self.workers)]
            deadline = time.monotonic() + timeout
            for future in warm_up:
                left = max(0.0, deadline - time.monotonic())
                self._outcome(partial(future.result, left))
        except BaseException:
            self.close()
            raise

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers (blocking: from asyncio, ``asyncio.to_thread``); jobs not
        collected yet are cancelled. A worker that has not finished its chunk
        within ``timeout`` seconds (a stuck one) is killed."""
        executor, self._executor = self._executor, None
        if self._failure is None:
            self._failure = StageFailed("the parallel stage is closed")
        if executor is None:
            return
        # ProcessPoolExecutor lists its workers only in a private dict, and
        # shutdown(wait=True) alone would wait forever for a stuck one.
        processes: list[Any] = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout)
        executor.shutdown(wait=True)

    def __enter__(self) -> DecodeStage:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (for tests and metrics)."""
        # ProcessPoolExecutor keeps them in a private dict; nothing public lists them.
        processes: dict[int, Any] = getattr(self._executor, "_processes", None) or {}
        return sorted(processes)

    # -- work --------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Records submitted whose results were not collected yet."""
        return self._in_flight

    def has_room(self) -> bool:
        return self._in_flight < self.max_in_flight_records

    def check(self) -> None:
        """Raise the stage's failure, if any. A worker that dies while the stage is
        idle is found by the next submit()."""
        if self._failure is not None:
            raise self._failure
        if self._executor is None:
            raise StageFailed("the parallel stage was not started")

    def submit(self, records: Sequence[RawRecord]) -> DecodeJob:
        """Queue a batch; its job's results come back aligned with ``records``.

        Never blocks. Raises StageFailed if the stage is broken or closed, and
        StageFull if the batch would be submitted while the bound is reached
        (one batch may overshoot it: a full stage takes no more)."""
        self.check()
        if not self.has_room():
            raise StageFull(
                f"{self._in_flight} records in flight (bound {self.max_in_flight_records})"
            )
        executor = self._executor
        assert executor is not None
        size = self.chunk_records
        chunks: list[tuple[int, concurrent.futures.Future[list[WireResult]]]] = []
        for start in range(0, len(records), size):
            wire = [to_wire(r) for r in records[start : start + size]]
            submitted = self._outcome(partial(executor.submit, decode_chunk, wire))
            chunks.append((start, submitted))
        self._in_flight += len(records)
        return DecodeJob(self, records, chunks)

    async def decoded(
        self, get: Callable[[], Awaitable[Sequence[RawRecord]]]
    ) -> AsyncIterator[tuple[Sequence[RawRecord], list[Result]]]:
        """Batches from ``get`` with their results, in the order ``get`` returned them.

        While there is room, the next batch is read and submitted before the
        oldest is awaited, so the workers decode while the caller applies.
        Raises StageFailed; exceptions of ``get`` propagate. Close it when done
        (``async with contextlib.aclosing(stage.decoded(get)) as batches``):
        batches read ahead and not yet yielded are then abandoned, and their
        records no longer count against the bound."""
        jobs: deque[DecodeJob] = deque()
        reading: asyncio.Future[Sequence[RawRecord]] | None = None
        try:
            while True:
                if reading is None and self.has_room():
                    reading = asyncio.ensure_future(get())
                if jobs and jobs[0].done():
                    job = jobs.popleft()
                    yield job.records, job.result(timeout=0)
                    continue
                waiting: set[asyncio.Future[Any]] = set()
                if reading is not None:
                    waiting.add(reading)
                if jobs:
                    waiting.add(jobs[0].awaitable())
                if not waiting:
                    raise StageFull("no room and no job of this iterator: another caller's?")
                timeout = jobs[0].time_left() if jobs else None
                await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if jobs and not jobs[0].done() and jobs[0].time_left() == 0:
                    jobs[0].result(timeout=0)  # raises StageStalled
                if reading is not None and reading.done():
                    batch, reading = reading.result(), None
                    if batch:
                        jobs.append(self.submit(batch))
        finally:
            if reading is not None:
                reading.cancel()
            for job in jobs:  # the caller stopped reading: these will never be applied
                job.abandon()

    # -- helpers -------------------------------------------------------------------------

    def _outcome(self, call: Callable[[], _T]) -> _T:
        """Run ``call``, turning the executor's failures into ours (and remembering them)."""
        try:
            return call()
        except BrokenProcessPool as exc:
            self._fail(
                StageBroken(
                    "a decode worker process died (killed, crashed or out of memory):"
                    " the stage cannot go on"
                ),
                exc,
            )
        except TimeoutError as exc:
            self._fail(StageStalled("a decode worker did not answer: it is stuck"), exc)
        except concurrent.futures.CancelledError as exc:
            self._fail(StageFailed("the parallel stage is closed"), exc)
        except BadRecord:
            raise  # cannot happen: caught per record in the worker
        except RuntimeError as exc:  # submit() after shutdown
            self._fail(StageFailed(f"the parallel stage is closed ({exc})"), exc)
        except Exception as exc:  # a bug in decode or mapping, raised in a worker
            self._fail(StageFailed(f"a decode worker failed: {type(exc).__name__}: {exc}"), exc)

    def _fail(self, failure: StageFailed, cause: BaseException | None = None) -> NoReturn:
        """Remember the first failure (a dead worker wins over what it caused) and raise."""
        if self._failure is None or (
            isinstance(failure, StageBroken) and not isinstance(self._failure, StageBroken)
        ):
            self._failure = failure
        raise failure from cause

    def _collected(self, records: int) -> None:
        self._in_flight = max(0, self._in_flight - records)
