"""The schemas a batch of records needs, fetched before it is decoded.

    registry = Registry.from_config(settings.kafka.schema_registry)  # None: no registry
    avro = await registry.prefetch(records, stopped)       # on the event loop
    avro = registry.prefetch_blocking(records, stopped)    # in a thread (restore)
    change_of(record, ..., avro=avro)                      # decodes with no I/O

Decoding is pure: every schema id a batch names is looked up first, in the
cache or from the registry in a worker thread, so the event loop never waits
on the network. The batch's reader holds its own schemas, so the cache's
bound can never push one out between the prefetch and the decoding.

An unreachable registry is not bad input: the prefetch waits and asks again
(jittered backoff up to :data:`MAX_BACKOFF_SECONDS`) until it answers or the
service stops; meanwhile no record of the batch is decoded, so nothing is
dead-lettered and no offset moves past it, and the source pauses its
partitions once its buffer is full. A schema the registry says does not
exist, or one we cannot use, is the record's fault: the reader dead-letters
the records naming it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from consumer.changes.decode import AvroReader, AvroSchema, Framing, UnknownSchema, schema_ids
from consumer.changes.decode.logical import ValueDecodeError
from consumer.config import SchemaRegistryConfig
from consumer.errors import RegistryUnavailable
from schemas.debezium import RawRecord

from .cache import Entry, SchemaCache
from .client import RegistryClient, SchemaNotFound

__all__ = ["Registry"]

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
_STOP_CHECK_SECONDS = 0.2


class Fetcher(Protocol):
    def fetch(self, schema_id: int) -> str: ...


class Registry:
    def __init__(
        self,
        framing: Framing,
        client: Fetcher,
        *,
        max_schemas: int = 1000,
        first_backoff: float = FIRST_BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self.framing: Framing = framing
        self._client = client
        self._cache = SchemaCache(max_schemas)
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self.fetched = 0  # schemas fetched from the registry
        self.waits = 0  # prefetches that found the registry unavailable and waited

    @classmethod
    def from_config(cls, config: SchemaRegistryConfig) -> Registry | None:
        if config.url is None:
            return None
        return cls(config.framing, RegistryClient(config), max_schemas=config.max_schemas)

    # -- blocking: in a worker thread ---------------------------------------------

    def fetch(self, ids: Iterable[int]) -> dict[int, Entry]:
        """Fetch and compile ``ids`` (cached as they come); raises RegistryUnavailable
        at the first that cannot be fetched now."""
        fetched: dict[int, Entry] = {}
        for schema_id in ids:
            entry: Entry
            try:
                text = self._client.fetch(schema_id)
            except SchemaNotFound as exc:
                entry = UnknownSchema(exc.reason)
            else:
                try:
                    entry = AvroSchema(schema_id, text)
                except ValueDecodeError as exc:
                    entry = UnknownSchema(f"schema {schema_id} cannot be used: {exc}")
                self.fetched += 1
            self._cache.put(schema_id, entry)
            fetched[schema_id] = entry
        return fetched

    def reader(self, records: Sequence[RawRecord]) -> AvroReader:
        """The batch's reader, fetching what is missing once (blocking; raises
        RegistryUnavailable): for a caller in a thread, or with nothing missing."""
        found, missing = self._cache.lookup(self._ids(records))
        if missing:
            found.update(self.fetch(sorted(missing)))
        return AvroReader(self.framing, found)

    def prefetch_blocking(
        self, records: Sequence[RawRecord], stopped: Callable[[], bool]
    ) -> AvroReader | None:
        """The batch's reader, waiting out an unavailable registry; None if stopped."""
        backoff = _Backoff(self._first_backoff, self._max_backoff)
        while True:
            try:
                reader = self.reader(records)
                backoff.recovered()
                return reader
            except RegistryUnavailable as exc:
                delay = backoff.failed(exc)
                self.waits += 1
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if stopped():
                    return None
                time.sleep(max(0.0, min(_STOP_CHECK_SECONDS, deadline - time.monotonic())))

    # -- on the event loop ----------------------------------------------------------

    async def prefetch(
        self, records: Sequence[RawRecord], stopped: Callable[[], bool]
    ) -> AvroReader | None:
        """The batch's reader, fetching in a worker thread what the cache lacks and
        waiting out an unavailable registry; None if stopped meanwhile."""
        ids = self._ids(records)
        found, missing = self._cache.lookup(ids)
        if not missing:
            return AvroReader(self.framing, found)
        backoff = _Backoff(self._first_backoff, self._max_backoff)
        while True:
            try:
                found.update(await asyncio.to_thread(self.fetch, sorted(missing)))
                backoff.recovered()
                return AvroReader(self.framing, found)
            except RegistryUnavailable as exc:
                delay = backoff.failed(exc)
                self.waits += 1
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if stopped():
                    return None
                await asyncio.sleep(max(0.0, min(_STOP_CHECK_SECONDS, deadline - time.monotonic())))
            more, missing = self._cache.lookup(missing)  # fetched before the failure
            found.update(more)

    def _ids(self, records: Sequence[RawRecord]) -> set[int]:
        framing = self.framing
        return {schema_id for record in records for schema_id in schema_ids(record, framing)}


class _Backoff:
    """Jittered exponential delays, and the log lines of one outage."""

    def __init__(self, first: float, most: float) -> None:
        self._next = first
        self._most = most
        self._since: float | None = None

    def failed(self, exc: RegistryUnavailable) -> float:
        delay = self._next * random.uniform(0.75, 1.25)
        self._next = min(self._next * 2, self._most)
        if self._since is None:
            self._since = time.monotonic()
        log.warning(
            "schema registry unavailable (%s): reading waits for it, nothing is dead-lettered"
            " or committed past it; asking again in %.1f s",
            exc,
            delay,
        )
        return delay

    def recovered(self) -> None:
        if self._since is not None:
            log.info(
                "schema registry answers again after %.1f s: reading goes on",
                time.monotonic() - self._since,
            )
