"""Route B, measured: the Kafka fetch (and decoding) in a process of its own.

    .venv/bin/python -m bench.fetchproc [--records 60000] [--repeat 3]

The service's process holds one GIL; kafka-python parses fetches in Python on
two threads of it. This asks what the service's process would still pay per
record if the consumer ran elsewhere. The same records (the shop, as in
``bench.pipeline throughput``) are read three ways, each time by a fresh group:

- in process: a ``KafkaConsumer`` with the service's settings, each record
  turned into a ``RawRecord`` (what ``consumer.source`` hands over today);
- fetch process: the consumer in a child process (forkserver) that sends the
  records as tuples through a pipe; this process rebuilds ``RawRecord``s;
- fetch + decode process: the child also decodes and maps
  (``consumer.parallel.RecordDecoder``) and sends the results in the wire form
  of ``consumer.parallel``; this process rebuilds the ``EntityChange``s.

Printed per way: records/s, and CPU µs per record of this process (the one
that would hold the store, the planner and asyncio) and of the child.
This is a measurement harness, not a design: commits, rebalances and the
memory bound would have to cross the process boundary too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer

from bench.pipeline import fill, rig
from consumer.decode_worker import RecordDecoder, result_from_wire, result_to_wire
from consumer.mapping import Mapping
from consumer.source import SourceSettings, consumer_config, raw_record
from emulator.workbench import mapping_for_prefix
from schemas.debezium import RawRecord
from schemas.entities import EntityChange


def _consumer(bootstrap: str, group: str, topics: list[str]) -> Any:
    defaults = SourceSettings(bootstrap_servers=bootstrap, group_id=group, topics=tuple(topics))
    consumer = KafkaConsumer(
        **consumer_config(
            bootstrap,
            group,
            {},
            client_id=defaults.client_id,
            auto_offset_reset="earliest",
            max_poll_records=defaults.max_poll_records,
            allow_auto_create_topics=False,
        )
    )
    consumer.subscribe(topics=topics)
    return consumer


def in_process(bootstrap: str, group: str, topics: list[str], count: int) -> int:
    consumer = _consumer(bootstrap, group, topics)
    seen = 0
    try:
        while seen < count:
            for messages in consumer.poll(timeout_ms=200).values():
                seen += len([raw_record(m) for m in messages])
    finally:
        consumer.close(autocommit=False)
    return seen


def _child(
    conn: Connection, bootstrap: str, group: str, topics: list[str], count: int, mapping: str | None
) -> None:
    decoder = RecordDecoder(Mapping.from_text(mapping)) if mapping is not None else None
    consumer = _consumer(bootstrap, group, topics)
    seen = 0
    try:
        while seen < count:
            batch: list[Any] = []
            for messages in consumer.poll(timeout_ms=200).values():
                for m in messages:
                    record = raw_record(m)
                    if decoder is None:
                        batch.append(
                            (m.topic, m.partition, m.offset, m.key, m.value, record.headers)
                        )
                    else:
                        result = result_to_wire(decoder.result_of(record))
                        batch.append((m.topic, m.partition, m.offset, result))
            if batch:
                conn.send(batch)
                seen += len(batch)
    finally:
        consumer.close(autocommit=False)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        conn.send(usage.ru_utime + usage.ru_stime)
        conn.close()


def from_child(
    bootstrap: str, group: str, topics: list[str], count: int, mapping: str | None
) -> tuple[int, float]:
    """(records received, the child's CPU seconds); ``mapping``: the child decodes with it."""
    context = multiprocessing.get_context("forkserver")
    ours, theirs = context.Pipe(duplex=False)
    child = context.Process(
        target=_child, args=(theirs, bootstrap, group, topics, count, mapping), daemon=True
    )
    child.start()
    theirs.close()
    seen = 0
    while seen < count:
        batch = ours.recv()
        if mapping is not None:
            changes = 0
            for topic, partition, offset, wire in batch:
                record = RawRecord(topic, partition, offset, None, None)
                changes += isinstance(result_from_wire(wire, record), EntityChange)
            assert changes, "nothing mapped: wrong mapping?"
        else:
            for topic, partition, offset, key, value, headers in batch:
                _rebuilt(RawRecord(topic, partition, offset, key, value, headers))
        seen += len(batch)
    child_cpu = float(ours.recv())
    child.join()
    return seen, child_cpu


def _rebuilt(_: object) -> None:
    """Where the service would use the object."""


def measure(
    way: str, bootstrap: str, group: str, topics: list[str], count: int, mapping: str
) -> tuple[float, float, float]:
    """(wall seconds, this process's CPU seconds, the child's CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    child_cpu = 0.0
    if way == "in process":
        in_process(bootstrap, group, topics, count)
    else:
        decoding = None if way == "fetch process" else mapping
        _, child_cpu = from_child(bootstrap, group, topics, count, decoding)
    return time.perf_counter() - wall, time.process_time() - cpu, child_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ways = ["in process", "fetch process", "fetch + decode process"]
    figures: dict[str, list[tuple[float, float, float]]] = {way: [] for way in ways}
    print(f"load before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    with rig(requests_per_minute=1_000_000) as r:
        count = fill(r, args.records)
        mapping = mapping_for_prefix(r.shop.prefix)
        for n in range(args.repeat):
            for i, way in enumerate(ways):
                figures[way].append(
                    measure(way, r.bootstrap, f"{r.group}-{n}-{i}", r.topics, count, mapping)
                )
    print(
        f"{count} records, median of {args.repeat}:\n"
        f"{'':24s} {'records/s':>10s} {'this process µs/rec':>20s} {'child µs/rec':>13s}"
    )
    for way, runs in figures.items():
        wall = statistics.median(f[0] for f in runs)
        cpu = statistics.median(f[1] for f in runs)
        child = statistics.median(f[2] for f in runs)
        print(
            f"{way:24s} {count / wall:10,.0f} {cpu / count * 1e6:20.1f} {child / count * 1e6:13.1f}"
        )
    print(f"load after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
