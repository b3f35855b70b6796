"""Prototype of route B for the throughput run: the Kafka consumer in a child process.

Not the product: just enough of ``consumer.source.KafkaSource``'s interface
(``start``, ``get``, ``release``, ``commit``, ``stop``) for the throughput
benchmark, with a fresh group and a single member. No rebalance callbacks, no
pause/resume (the pipe's back-pressure bounds memory instead), no
``committed()``. ``bench.instrument --fetch-process [--decode-in-fetch]``
patches it into the service at run time.

The child polls with the service's consumer settings and sends each poll's
records through a pipe, as tuples; with ``decode`` it also decodes and maps
them (``consumer.decode_worker.RecordDecoder``) and sends, per record, its
position and its result in the wire form (key and value only for rejected
records, which are dead-lettered). Commits go the other way on a second pipe
and are answered once the broker confirmed them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import threading
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from consumer.decode_worker import (
    RecordDecoder,
    Result,
    result_from_wire,
    result_to_wire,
)
from consumer.source import SourceSettings, consumer_config, raw_record, to_kafka_offsets
from schemas.debezium import RawRecord

_REJECTED = 2  # consumer.decode_worker's tag for a refused record


def _child(
    settings: SourceSettings,
    mapping: tuple[str, str] | None,
    records_out: Connection,
    commands_in: Connection,
    answers_out: Connection,
) -> None:
    from kafka import KafkaConsumer

    from consumer.mapping import Mapping

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    decoder = None
    if mapping is not None:
        decoder = RecordDecoder(Mapping.from_text(mapping[0], source=mapping[1]))
    consumer = KafkaConsumer(
        **consumer_config(
            settings.bootstrap_servers,
            settings.group_id,
            settings.extra,
            client_id=settings.client_id,
            auto_offset_reset="earliest",
            max_poll_records=settings.max_poll_records,
            allow_auto_create_topics=False,
        )
    )
    consumer.subscribe(topics=list(settings.topics))
    try:
        while True:
            while commands_in.poll():
                command = commands_in.recv()
                if command is None:
                    return
                try:
                    consumer.commit(to_kafka_offsets(command), timeout_ms=30_000)
                    answers_out.send(None)
                except Exception as exc:
                    answers_out.send(repr(exc))
            polled = consumer.poll(timeout_ms=settings.poll_timeout_ms)
            batch: list[Any] = []
            for messages in polled.values():
                for m in messages:
                    record = raw_record(m)
                    if decoder is None:
                        batch.append((m.topic, m.partition, m.offset, m.key, m.value))
                        continue
                    wire = result_to_wire(decoder.result_of(record))
                    bad = wire is not None and wire[0] == _REJECTED
                    key, value = (m.key, m.value) if bad else (None, None)
                    batch.append((m.topic, m.partition, m.offset, key, value, wire))
            if batch:
                records_out.send(batch)
    finally:
        consumer.close(autocommit=False)


class ProcessSource:
    """A stand-in for ``KafkaSource`` whose consumer runs in a child process."""

    def __init__(
        self, settings: SourceSettings, mapping: tuple[str, str] | None = None, **_: Any
    ) -> None:
        self._settings = settings
        self._mapping = mapping
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Queue[tuple[list[RawRecord], list[Result] | None]] = asyncio.Queue()
        self._process: Any = None
        self._lock = asyncio.Lock()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        context = multiprocessing.get_context("forkserver")
        self._records_in, records_out = context.Pipe(duplex=False)
        commands_in, self._commands_out = context.Pipe(duplex=False)
        self._answers_in, answers_out = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_child,
            args=(self._settings, self._mapping, records_out, commands_in, answers_out),
            daemon=True,
        )
        self._process.start()
        for end in (records_out, commands_in, answers_out):
            end.close()
        self._loop = loop
        # A thread drains the pipe, so that the child never waits for the event
        # loop to be idle before it can send the next poll's records.
        self._reader = threading.Thread(target=self._receive, name="fetch-reader", daemon=True)
        self._reader.start()

    def _receive(self) -> None:
        assert self._loop is not None
        while True:
            try:
                batch = self._records_in.recv()
            except (EOFError, OSError):
                return
            if self._mapping is None:
                records = [RawRecord(t, p, o, k, v) for t, p, o, k, v in batch]
                got: tuple[list[RawRecord], list[Result] | None] = (records, None)
            else:
                records = [RawRecord(t, p, o, k, v) for t, p, o, k, v, _ in batch]
                results = [
                    result_from_wire(wire, record)
                    for (*_, wire), record in zip(batch, records, strict=True)
                ]
                got = (records, results)
            try:
                self._loop.call_soon_threadsafe(self._ready.put_nowait, got)
            except RuntimeError:
                return  # the loop is closed

    async def get_decoded(self) -> tuple[list[RawRecord], list[Result] | None]:
        return await self._ready.get()

    async def get(self) -> list[RawRecord]:
        records, _ = await self._ready.get()
        return records

    def release(self, nbytes: int) -> None:
        """The pipe bounds what is in flight; nothing to count here."""

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if not offsets:
            return
        async with self._lock:
            self._commands_out.send(dict(offsets))
            error = await asyncio.to_thread(self._answers_in.recv)
        if error is not None:
            raise RuntimeError(f"commit failed in the fetch process: {error}")

    def assignment(self) -> set[tuple[str, int]]:
        return set()

    async def stop(self) -> None:
        if self._process is not None:
            self._commands_out.send(None)
            await asyncio.to_thread(self._process.join, 2)
            if self._process.is_alive():
                self._process.kill()
