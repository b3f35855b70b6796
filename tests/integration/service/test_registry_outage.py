"""Avro through a real schema registry (Apicurio, scripts/registry), the registry going
away mid-stream and coming back: reading waits, nothing is dead-lettered or committed
past the records it could not decode, and Rfmcube ends equal to the shop; the Avro
poisons among them are dead letters all the same."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from kafka import KafkaConsumer

from schemas.debezium import RawRecord
from testkit.avro import ApicurioRegistry, avro_twin, json_bytes
from testkit.e2e.registry import port_of
from testkit.pipeline import Pipeline
from testkit.poison import avro_poisons
from testkit.proxy import Outage
from testkit.shop import Shop
from testkit.workbench import committed_offsets, end_offsets, partitions_of

Records = list[tuple[str, bytes | None, bytes | None]]


def with_loyalty_points(value: bytes | None) -> bytes | None:
    """The customer record after ``ALTER TABLE customers ADD loyalty_points``: a new schema."""
    if value is None:
        return None
    document = json.loads(value, parse_float=Decimal)
    for field in document["schema"]["fields"]:
        if field["field"] in ("before", "after"):
            field["fields"].append({"type": "int32", "optional": True, "field": "loyalty_points"})
    for image in ("before", "after"):
        if document["payload"][image] is not None:
            document["payload"][image]["loyalty_points"] = 250
    return json_bytes(document)


def avro(shop: Shop, start: int, registry: ApicurioRegistry, altered: str | None) -> Records:
    out: Records = []
    for record in shop.records[start:]:
        value = with_loyalty_points(record.value) if record.topic == altered else record.value
        twin = avro_twin(RawRecord(record.topic, 0, 0, record.key, value), registry)
        out.append((record.topic, twin.key, twin.value))
    return out


def dead_letters(pipeline: Pipeline) -> list[dict[str, str]]:
    consumer = KafkaConsumer(
        pipeline.dead_letters,
        bootstrap_servers=pipeline.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        return [{k: (v or b"").decode() for k, v in letter.headers} for letter in consumer]
    finally:
        consumer.close()


def committed(pipeline: Pipeline) -> dict[Any, int]:
    parts = partitions_of(pipeline.bootstrap, pipeline.topics)
    found = committed_offsets(pipeline.bootstrap, pipeline.group, parts)
    return {p: o or 0 for p, o in found.items()}


def test_a_registry_outage_pauses_reading_and_nothing_is_dead_lettered(
    pipeline: Pipeline, schema_registry: str
) -> None:
    direct = ApicurioRegistry(schema_registry)  # the converter's side: always there
    upstream, path = port_of(schema_registry), urlsplit(schema_registry).path
    shop = pipeline.shop(seed=19)
    shop.workload(customers=12, guest_orders=3)
    before = len(shop.records)
    poisons = avro_poisons(direct, pipeline.prefix)
    unknown = [p for p in poisons if "is not in the registry" in p.reason]
    first = avro(shop, 0, direct, None)
    first += [(p.topic(pipeline.prefix), p.key, p.value) for p in unknown]

    with Outage(upstream) as proxy:
        service = pipeline.start(
            kafka={"schema_registry": {"url": proxy.url_base + path}},
        )
        pipeline.write(first)
        pipeline.wait_caught_up(service, timeout=90)
        assert len(dead_letters(pipeline)) == len(unknown)

        # The registry goes away; the shop changes, its customers table gets a column
        # (a new schema the service has never seen).
        proxy.cut()
        for cid in list(shop.customers)[:4]:
            shop.edit_profile(cid)
            shop.place_order(cid, items=2)
        shop.sign_up()
        shop.delete_customer(next(iter(shop.customers)))
        pipeline.write(avro(shop, before, direct, pipeline.topics[0]))
        ends = end_offsets(pipeline.bootstrap, partitions_of(pipeline.bootstrap, pipeline.topics))
        assert service.wait_for_log("schema registry unavailable", timeout=30), service.log()
        time.sleep(2)  # what came before the first record of the new schema is committed
        held = committed(pipeline)
        time.sleep(4)  # a few more attempts
        assert service.running()
        assert len(dead_letters(pipeline)) == len(unknown), "nothing dead-lettered meanwhile"
        assert committed(pipeline) == held, "nothing committed past the records it waits on"
        assert any(held[p] < end for p, end in ends.items())

        proxy.restore()
        assert service.wait_for_log("schema registry answers again", timeout=60), service.log()
        pipeline.wait_caught_up(service, timeout=90)
        pipeline.wait_equal(shop, timeout=30)
        letters = dead_letters(pipeline)
        assert len(letters) == len(unknown)
        assert all("is not in the registry" in letter["rfmcube.reason"] for letter in letters)
        assert service.stop() == 0
        assert "Traceback" not in service.log()
