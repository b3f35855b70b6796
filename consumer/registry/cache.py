"""The schemas fetched so far, by id: bounded, least recently used out first.

A schema never changes under its id, so a fetched one is kept until the
bound pushes it out. An id the registry did not know is kept too (each
record naming it would otherwise ask again), but only for a while: a
registry that lags behind the producer (a replica still reading its log)
may know it a little later. Thread-safe: the prefetch fills it from a worker
thread while the loop reads it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from consumer.changes.decode import AvroSchema, UnknownSchema

__all__ = ["SchemaCache"]

Entry = AvroSchema | UnknownSchema
UNKNOWN_TTL_SECONDS = 60.0


class SchemaCache:
    def __init__(
        self,
        max_entries: int,
        *,
        unknown_ttl: float = UNKNOWN_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_entries
        self._unknown_ttl = unknown_ttl
        self._clock = clock
        self._entries: OrderedDict[int, tuple[Entry, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, schema_id: int) -> Entry | None:
        with self._lock:
            found = self._entries.get(schema_id)
            if found is None:
                return None
            entry, expires = found
            if expires and self._clock() >= expires:
                del self._entries[schema_id]
                return None
            self._entries.move_to_end(schema_id)
            return entry

    def lookup(self, ids: Iterable[int]) -> tuple[dict[int, Entry], set[int]]:
        """The entries of ``ids`` that are here, and the ids that are not."""
        found: dict[int, Entry] = {}
        missing: set[int] = set()
        for schema_id in ids:
            entry = self.get(schema_id)
            if entry is None:
                missing.add(schema_id)
            else:
                found[schema_id] = entry
        return found, missing

    def put(self, schema_id: int, entry: Entry) -> None:
        expires = self._clock() + self._unknown_ttl if isinstance(entry, UnknownSchema) else 0.0
        with self._lock:
            self._entries[schema_id] = (entry, expires)
            self._entries.move_to_end(schema_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
