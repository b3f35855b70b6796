"""The service in-process, with meters on its stages: where the time goes.

    python -m bench.instrument --config C --report R.json [--cprofile DIR]
        [--no-meters] [--gc-threshold A,B,C] [--gc-freeze] [--commit-interval S]
    python -m bench.instrument --check      # install the meters, list them, exit

Runs ``rfmcube-cdc run`` exactly as the CLI does, after wrapping the
functions of each stage in meters that add up, per stage, the wall time and
the CPU time of the calling thread (``time.thread_time``). For a stage that
does no I/O, wall minus CPU is time the thread could not run: waiting for
the GIL, or for a core taken by another process (the latter is told apart by
the thread's run-queue wait in ``/proc/self/task/<tid>/schedstat``). A
sampler reads every thread's CPU and run-queue wait twice a second. The
report (JSON) is written when the service exits (the driver,
``bench.profile``, sends SIGTERM).

The stages, as the service is laid out since ingest, flush and commits left
``consumer/app/service.py`` (see :func:`install` for the exact names):

- ingest (``Ingest.ingest``, ``consumer/ingest.py``), and within it, per
  record: decode (``consumer.changes.records.decode_record``), mapping
  (``Mapping.map_event``), the safety net's check (``consumer.changes.records._checked``)
  and the store's in-memory apply (``StoreBatch.apply``); per batch: the
  store's bulk read (``StoreBatch.prefetch``) and its writes
  (``StoreBatch.finish``: rows, obligations, offsets in ``executemany``);
- flush (``Flusher._flush``, a span): the owed documents read
  (``Obligations.take``), planning (``Planner.plan``, its ``StoreView`` bulk
  reads and ``document_hash``), packing request bodies (``consumer.delivery.packing``'s
  ``part_of``, ``import_body``, ``delete_body``, ``merge_body`` as
  ``consumer.delivery.sender`` calls them), the API call (``RfmcubeClient.send``, a
  span) and settling (``Flusher._settle_outcome``, ``Flusher._settle_plan``,
  ``Obligations.settle``);
- commit: the floors (``Obligations.commit_floors``) and the broker's commit
  (``KafkaSource.commit`` / ``ProcessSource.commit``, a span);
- the consumer in a thread (``kafka.consumer_process: false``): kafka-python's
  fetch parsing (``Fetcher.fetched_records``) and the ``RawRecord`` hand-over
  to asyncio (``KafkaSource._hand_over``).

Stages dropped since the earlier layout: the coalescing window (gone with
``consumer/coalesce.py``: the store's obligations replaced it, so its cost is
in the store's writes) and ``StateStore.set_accepted`` (settling writes the
accepted hashes in ``Obligations.settle``). Serializing is now packing:
``sender.dumps`` became ``consumer.delivery.packing``.

With the consumer in a child process (``kafka.consumer_process: true``, the
default of ``bench.pipeline``'s rig) the child is spawned without the meters:
the two kafka-side stages are missing from the report, and the parent's
side of the hand-over (unpickling the batches, rebuilding ``RawRecord``) is
the ``kafka-source-pipe`` thread in the report's thread list.

A wrapped name that no longer exists, or that changed from a plain function
to a coroutine function or back, stops the run at once with
:class:`StaleMeter` naming it: update :func:`install` when the service moves.

With ``--cprofile DIR`` every thread also runs under ``cProfile`` (its own
profile per thread, dumped to DIR); this slows Python code about twofold,
so the meters of such a run are not comparable with a run without it.

The meters cost about 1 µs per wrapped call; decode, mapping, the check and
the store's apply are wrapped per record (about 30 µs together, plus about
4 µs of meters), everything else per batch or per request.

The other options are variants bench/README.md measures, set at run time
(no file of the service changes): ``--gc-threshold`` sets the collector's
thresholds (and the service's own ``GC_THRESHOLD``, which it applies when it
starts streaming); ``--gc-freeze`` freezes right after the imports (the
service itself freezes once start-up is done); ``--commit-interval`` sets
``COMMIT_INTERVAL_SECONDS``, the longest wait of the commit loop (commits
also follow each settled flush, at most every ``COMMIT_SPACING_SECONDS``).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import inspect
import os
import sys
import threading
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Stage:
    calls: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    thread: str = ""


class Meters:
    def __init__(self) -> None:
        self.stages: dict[str, Stage] = {}
        self.events: list[tuple[float, str]] = []
        self.spans: list[tuple[str, float, float]] = []
        self.records_ingested = 0
        self.first_ingest: float | None = None
        self.last_ingest: float | None = None
        self.started = time.monotonic()
        self.wrapped: list[tuple[str, str]] = []  # (what, stage)
        self._lock = threading.Lock()

    def add(self, name: str, wall: float, cpu: float) -> None:
        stage = self.stages.get(name)
        if stage is None:
            with self._lock:
                stage = self.stages.setdefault(name, Stage(thread=threading.current_thread().name))
        stage.calls += 1
        stage.wall += wall
        stage.cpu += cpu

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        """Meter a plain function or method: ``owner.attr`` is replaced in place."""
        original = _wrappable(owner, attr, coroutine=False)
        add = self.add
        perf, cpu = time.perf_counter, time.thread_time

        @functools.wraps(original)
        def metered(*args: Any, **kwargs: Any) -> Any:
            w, c = perf(), cpu()
            try:
                return original(*args, **kwargs)
            finally:
                add(name, perf() - w, cpu() - c)

        setattr(owner, attr, metered)
        self.wrapped.append((_where(owner, attr), name))

    def wrap_async(self, owner: Any, attr: str, name: str) -> None:
        """Record the spans (start, end) of a coroutine function."""
        original = _wrappable(owner, attr, coroutine=True)
        spans = self.spans

        @functools.wraps(original)
        async def spanned(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return await original(*args, **kwargs)
            finally:
                spans.append((name, start, time.monotonic()))

        setattr(owner, attr, spanned)
        self.wrapped.append((_where(owner, attr), f"{name} (span)"))


class StaleMeter(AttributeError):
    """A stage's function moved or changed: bench.instrument no longer matches the service."""


def _where(owner: Any, attr: str) -> str:
    if isinstance(owner, types.ModuleType):
        return f"{owner.__name__}.{attr}"
    return f"{owner.__module__}.{owner.__qualname__}.{attr}"


def _wrappable(owner: Any, attr: str, *, coroutine: bool) -> Any:
    """``owner.attr``, checked: it exists, is callable, and is (or is not) a coroutine
    function as the meter expects. Raises StaleMeter naming what is wrong."""
    where = _where(owner, attr)
    original = getattr(owner, attr, None)
    if original is None or not callable(original):
        raise StaleMeter(
            f"bench.instrument: {where} does not exist (any more): the service was"
            " restructured; point the meter in bench/instrument.py install() at the"
            " function that does this stage now"
        )
    if inspect.iscoroutinefunction(original) != coroutine:
        expected = "a coroutine function" if coroutine else "a plain function"
        raise StaleMeter(
            f"bench.instrument: {where} is no longer {expected}: update its meter in"
            " bench/instrument.py install() (wrap / wrap_async)"
        )
    return original


class GcMeter:
    """Time spent in the garbage collector, per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._started
            self.collections[generation] += 1


def _thread_times() -> dict[int, tuple[float, float, float]]:
    """Per native thread id: (CPU seconds, run-queue wait seconds, on-CPU seconds)."""
    found = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            run_ns, wait_ns, _ = (task / "schedstat").read_text().split()
        except OSError:
            continue
        cpu = (int(stat[11]) + int(stat[12])) / _TICKS
        found[int(task.name)] = (cpu, int(wait_ns) / 1e9, int(run_ns) / 1e9)
    return found


class ThreadSampler:
    """Keeps the last CPU and run-queue readings of every thread, by thread name."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.threads: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for tid, (cpu, wait, run) in _thread_times().items():
            name = names.get(tid, f"tid-{tid}")
            self.threads[f"{name} ({tid})"] = {"cpu": cpu, "runqueue_wait": wait, "on_cpu": run}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def install(meters: Meters) -> None:
    """Wrap the stages of the service as it is today (consumer/ingest.py, flush.py & co).

    A meter goes where the name is looked up when the service calls it: a
    function imported into another module (``from consumer.delivery.packing import
    delete_body`` in consumer/delivery/sender.py) is wrapped in that module, a method on
    its class."""
    from kafka.consumer.fetcher import Fetcher

    from consumer import ingest
    from consumer.changes import records
    from consumer.changes.mapping import Mapping
    from consumer.delivery import flush, packing, planner, sender
    from consumer.delivery.http import client as api
    from consumer.source import process as source_process
    from consumer.source import thread as source
    from consumer.state.batch import StoreBatch
    from consumer.state.obligations import Obligations

    # main thread, per record (Ingest.mapped -> consumer.changes.records.change_of)
    meters.wrap(records, "decode_record", "decode")
    meters.wrap(Mapping, "map_event", "map")
    meters.wrap(records, "_checked", "check (safety net)")
    meters.wrap(StoreBatch, "apply", "store: apply (in memory)")
    # main thread, per batch (open_batch: one transaction)
    meters.wrap(StoreBatch, "prefetch", "store: prefetch (bulk read)")
    meters.wrap(StoreBatch, "finish", "store: finish (executemany)")
    _meter_ingest(meters, ingest.Ingest)
    # main thread, per flush page (Flusher._flush)
    meters.wrap(Obligations, "take", "flush: take owed (read)")
    meters.wrap(planner, "StoreView", "plan: StoreView (bulk reads)")
    meters.wrap(planner, "document_hash", "plan: document_hash")
    meters.wrap(planner.Planner, "plan", "plan (all)")
    meters.wrap(packing, "draft_of", "pack: draft_of (serialize a customer)")
    meters.wrap(sender.Dispatch, "_body", "pack: import body (concatenate)")
    meters.wrap(sender, "delete_body", "pack: delete and merge bodies")
    meters.wrap(sender, "merge_body", "pack: delete and merge bodies")
    meters.wrap(Obligations, "settle", "settle: Obligations.settle (SQLite)")
    meters.wrap(flush.Flusher, "_settle_outcome", "settle: answered requests (all)")
    meters.wrap(flush.Flusher, "_settle_plan", "settle: unchanged, parked (all)")
    # main thread, the commit loop
    meters.wrap(Obligations, "commit_floors", "commit: floors (SQLite)")
    # the source thread (the consumer in a thread only: a child process is not metered)
    meters.wrap(Fetcher, "fetched_records", "kafka: fetched_records (parse)")
    meters.wrap(source.KafkaSource, "_hand_over", "source: RawRecord hand-over")
    # spans
    meters.wrap_async(flush.Flusher, "_flush", "flush")
    meters.wrap_async(source.KafkaSource, "commit", "commit")
    meters.wrap_async(source_process.ProcessSource, "commit", "commit")
    meters.wrap_async(api.RfmcubeClient, "send", "api call")


def _meter_ingest(meters: Meters, cls: Any) -> None:
    """``Ingest.ingest``: a stage, and the timeline of the records read from Kafka
    (a restore, ``owe=False``, and a standby's follower are metered, not counted)."""
    original = _wrappable(cls, "ingest", coroutine=False)

    @functools.wraps(original)
    def ingest(self: Any, records: Any, *args: Any, **kwargs: Any) -> Any:
        streamed = kwargs.get("owe", True) and not kwargs.get("follower", False)
        w, c = time.perf_counter(), time.thread_time()
        if streamed and meters.first_ingest is None:
            meters.first_ingest = time.monotonic()
        try:
            return original(self, records, *args, **kwargs)
        finally:
            meters.add("ingest (all)", time.perf_counter() - w, time.thread_time() - c)
            if streamed:
                meters.records_ingested += len(records)
                meters.last_ingest = time.monotonic()

    cls.ingest = ingest
    meters.wrapped.append((_where(cls, "ingest"), "ingest (all)"))


def _profile_threads(folder: Path) -> cProfile.Profile:
    """Run every new thread under its own cProfile; returns the main thread's."""
    folder.mkdir(parents=True, exist_ok=True)
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()
            profile.dump_stats(folder / f"{self.name}-{self.native_id}.pstats")

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile()
    main.enable()
    return main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--report")
    parser.add_argument(
        "--check", action="store_true", help="install the meters, list them and exit"
    )
    parser.add_argument("--cprofile", default=None)
    parser.add_argument("--no-meters", action="store_true", help="only the variants below")
    parser.add_argument("--gc-threshold", default=None, help="e.g. 50000,50,100")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after imports")
    parser.add_argument(
        "--commit-interval", type=float, default=None, help="seconds (COMMIT_INTERVAL_SECONDS)"
    )
    args = parser.parse_args(argv)
    meters = Meters()
    if args.check:
        install(meters)
        for where, stage in meters.wrapped:
            print(f"{stage:40s} {where}")
        return 0
    if not args.config or not args.report:
        parser.error("--config and --report are required (or --check)")
    if not args.no_meters:
        install(meters)
    if args.commit_interval is not None or args.gc_threshold:
        from consumer import checkpoint
        from consumer.app import service

        for module, name in ((checkpoint, "COMMIT_INTERVAL_SECONDS"), (service, "GC_THRESHOLD")):
            if not hasattr(module, name):
                raise StaleMeter(f"bench.instrument: {module.__name__}.{name} does not exist")
        if args.commit_interval is not None:
            checkpoint.COMMIT_INTERVAL_SECONDS = args.commit_interval
        if args.gc_threshold:
            thresholds = [int(n) for n in args.gc_threshold.split(",")]
            gc.set_threshold(*thresholds)
            # The service sets the young generation's threshold as it starts streaming.
            service.GC_THRESHOLD = thresholds[0]
    if args.gc_freeze:
        gc.freeze()
    collector = GcMeter()
    collector.install()
    sampler = ThreadSampler()
    sampler.start()
    profile = _profile_threads(Path(args.cprofile)) if args.cprofile else None
    from consumer.cli import main as cli

    try:
        return cli.main(["run", "--config", args.config])
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(Path(args.cprofile) / "MainThread.pstats")
        sampler.stop()
        report = {
            "stages": {name: asdict(stage) for name, stage in meters.stages.items()},
            "spans": [(n, s - meters.started, e - meters.started) for n, s, e in meters.spans],
            "records_ingested": meters.records_ingested,
            "first_ingest": (meters.first_ingest or meters.started) - meters.started,
            "last_ingest": (meters.last_ingest or meters.started) - meters.started,
            "threads": sampler.threads,
            "gc": {"seconds": collector.seconds, "collections": collector.collections},
        }
        Path(args.report).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    sys.exit(main())
