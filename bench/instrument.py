"""The service in-process, with meters on its stages: where the time goes.

    python -m bench.instrument --config C --report R.json [--cprofile DIR]
        [--no-meters] [--gc-threshold A,B,C] [--gc-freeze] [--commit-interval S]

Runs ``rfmcube-cdc run`` exactly as the CLI does, after wrapping the
functions of each stage (decode, mapping, store, planning, serializing,
kafka-python's fetch parsing, the hand-over to asyncio) in meters that add
up, per stage, the wall time and the CPU time of the calling thread
(``time.thread_time``). For a stage that does no I/O, wall minus CPU is
time the thread could not run: waiting for the GIL, or for a core taken by
another process (the latter is told apart by the thread's run-queue wait in
``/proc/self/task/<tid>/schedstat``). A sampler reads every thread's CPU and
run-queue wait twice a second. The report (JSON) is written when the
service exits (the driver, ``bench.profile``, sends SIGTERM).

With ``--cprofile DIR`` every thread also runs under ``cProfile`` (its own
profile per thread, dumped to DIR); this slows Python code about twofold,
so the meters of such a run are not comparable with a run without it.

The meters cost about 1 µs per wrapped call; decode and mapping are wrapped
per record (about 30 µs together), everything else per batch.

The other options are variants bench/README.md measures, set at run time
(no file of the service changes): ``--gc-*`` tune the garbage collector;
``--commit-interval`` shortens the commit loop's sleep. The consumer in a
child process is the service's own option (``kafka.consumer_process`` in
the config); the child is spawned without the meters, so with it on the
source's two stages (kafka parse, hand-over) are missing from the report.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import os
import sys
import threading
import time
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
        original = getattr(owner, attr)
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

    def wrap_async(self, owner: Any, attr: str, name: str) -> None:
        """Record the spans (start, end) of a coroutine function."""
        original = getattr(owner, attr)
        spans = self.spans

        @functools.wraps(original)
        async def spanned(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return await original(*args, **kwargs)
            finally:
                spans.append((name, start, time.monotonic()))

        setattr(owner, attr, spanned)


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
    """Wrap the stages of the service as it is today (consumer/service.py & co)."""
    from kafka.consumer.fetcher import Fetcher

    from consumer import api, planner, sender, service, source, store
    from consumer.mapping import Mapping

    # main thread, per record
    meters.wrap(service, "decode_record", "decode")
    meters.wrap(Mapping, "map_event", "map")
    # main thread, per batch
    meters.wrap(store.StoreBatch, "prefetch", "store: prefetch (bulk read)")
    meters.wrap(store.StoreBatch, "apply", "store: apply (in memory)")
    meters.wrap(store.StoreBatch, "flush", "store: flush (executemany)")
    meters.wrap(planner, "StoreView", "plan: StoreView (bulk reads)")
    meters.wrap(planner, "document_hash", "plan: document_hash")
    meters.wrap(planner.Planner, "plan", "plan (all)")
    meters.wrap(sender, "dumps", "send: dumps")
    meters.wrap(store.StateStore, "set_accepted", "settle: set_accepted")
    meters.wrap(service.Service, "_settle", "settle (all)")
    # the source thread
    meters.wrap(Fetcher, "fetched_records", "kafka: fetched_records (parse)")
    meters.wrap(source.KafkaSource, "_hand_over", "source: RawRecord hand-over")

    original_ingest = service.Service.ingest

    @functools.wraps(original_ingest)
    def ingest(self: Any, records: list[Any]) -> None:
        w, c = time.perf_counter(), time.thread_time()
        now = time.monotonic()
        if meters.first_ingest is None:
            meters.first_ingest = now
        try:
            original_ingest(self, records)
        finally:
            meters.add("ingest (all)", time.perf_counter() - w, time.thread_time() - c)
            meters.records_ingested += len(records)
            meters.last_ingest = time.monotonic()

    service.Service.ingest = ingest  # type: ignore[method-assign]
    meters.wrap_async(service.Service, "_flush", "flush")
    meters.wrap_async(source.KafkaSource, "commit", "commit")
    meters.wrap_async(api.RfmcubeClient, "send", "api call")


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
    parser.add_argument("--config", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--cprofile", default=None)
    parser.add_argument("--no-meters", action="store_true", help="only the variants below")
    parser.add_argument("--gc-threshold", default=None, help="e.g. 50000,50,100")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after imports")
    parser.add_argument("--commit-interval", type=float, default=None, help="seconds")
    args = parser.parse_args(argv)
    meters = Meters()
    if not args.no_meters:
        install(meters)
    if args.commit_interval is not None:
        from consumer import service

        service.COMMIT_INTERVAL_SECONDS = args.commit_interval
    if args.gc_threshold:
        gc.set_threshold(*(int(n) for n in args.gc_threshold.split(",")))
    if args.gc_freeze:
        gc.freeze()
    collector = GcMeter()
    collector.install()
    sampler = ThreadSampler()
    sampler.start()
    profile = _profile_threads(Path(args.cprofile)) if args.cprofile else None
    from consumer import cli

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
