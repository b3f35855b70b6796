"""The registry's schemas for a batch: fetched once per id, off the event loop, kept in a
bounded cache; an unavailable registry is waited out, never turned into bad records."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable

import pytest

from consumer.changes.decode import AvroSchema, UnknownSchema
from consumer.errors import RegistryUnavailable
from consumer.registry import Registry
from consumer.registry.cache import SchemaCache
from consumer.registry.client import SchemaNotFound
from schemas.debezium import RawRecord

SCHEMA = json.dumps({"type": "record", "name": "R", "fields": [{"name": "id", "type": "long"}]})


def record(schema_id: int, offset: int = 0) -> RawRecord:
    return RawRecord("t", 0, offset, None, b"\x00" + schema_id.to_bytes(4, "big") + b"\x02")


class Flaky:
    """A registry that is down for ``down`` requests, then serves ids below 100."""

    def __init__(self, down: int = 0) -> None:
        self.down = down
        self.asked: list[int] = []
        self.threads: set[str] = set()

    def fetch(self, schema_id: int) -> str:
        self.threads.add(threading.current_thread().name)
        if self.down:
            self.down -= 1
            raise RegistryUnavailable("GET http://registry/schemas/ids/1: Connection refused")
        self.asked.append(schema_id)
        if schema_id >= 100:
            raise SchemaNotFound(f"schema {schema_id} is not in the registry")
        return SCHEMA


def registry(client: Flaky, **options: int) -> Registry:
    return Registry("confluent", client, first_backoff=0.01, max_backoff=0.05, **options)


async def test_each_schema_is_fetched_once_and_off_the_event_loop() -> None:
    client = Flaky()
    schemas = registry(client)
    loop_thread = threading.current_thread().name
    batch = [record(1), record(2), record(1, 1)]
    first = await schemas.prefetch(batch, lambda: False)
    second = await schemas.prefetch(batch, lambda: False)
    assert first is not None and second is not None
    assert sorted(client.asked) == [1, 2]
    assert loop_thread not in client.threads


async def test_an_unavailable_registry_is_waited_out_and_nothing_is_unknown() -> None:
    client = Flaky(down=3)
    schemas = registry(client)
    reader = await schemas.prefetch([record(1)], lambda: False)
    assert reader is not None
    assert schemas.waits == 3
    assert isinstance(reader._schemas[1], AvroSchema)


async def test_a_stop_ends_the_wait() -> None:
    client = Flaky(down=10**6)
    stop = threading.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    assert await registry(client).prefetch([record(1)], stop.is_set) is None


def test_the_blocking_prefetch_waits_and_stops_alike() -> None:
    client = Flaky(down=2)
    assert registry(client).prefetch_blocking([record(1)], lambda: False) is not None
    stopped: Callable[[], bool] = lambda: True  # noqa: E731
    assert registry(Flaky(down=10**6)).prefetch_blocking([record(1)], stopped) is None


def test_an_id_the_registry_does_not_know_is_unknown_to_the_batch() -> None:
    schemas = registry(Flaky())
    reader = schemas.reader([record(100)])
    entry = reader._schemas[100]
    assert isinstance(entry, UnknownSchema)
    assert entry.reason == "schema 100 is not in the registry"


def test_a_batch_keeps_its_schemas_whatever_the_cache_bound() -> None:
    client = Flaky()
    schemas = registry(client, max_schemas=1)
    reader = schemas.reader([record(1), record(2), record(3)])
    assert sorted(reader._schemas) == [1, 2, 3]


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = SchemaCache(2)
    for schema_id in (1, 2):
        cache.put(schema_id, AvroSchema(schema_id, SCHEMA))
    assert cache.get(1) is not None  # 1 is now the most recent
    cache.put(3, AvroSchema(3, SCHEMA))
    assert cache.get(2) is None and cache.get(1) is not None and len(cache) == 2


def test_an_unknown_id_is_asked_again_after_a_while() -> None:
    now = [0.0]
    cache = SchemaCache(10, unknown_ttl=60, clock=lambda: now[0])
    cache.put(5, UnknownSchema("schema 5 is not in the registry"))
    assert cache.get(5) is not None
    now[0] = 61.0
    assert cache.get(5) is None


def test_without_a_batch_reader_the_fetch_is_one_attempt() -> None:
    schemas = registry(Flaky(down=1))
    with pytest.raises(RegistryUnavailable):
        schemas.reader([record(1)])
    assert schemas.reader([record(1)]) is not None
