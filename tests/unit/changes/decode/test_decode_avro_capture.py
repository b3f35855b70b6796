"""Real records of Debezium's MariaDB 3.5 and PostgreSQL 3.6 connectors, written by the
JsonConverter and by Apicurio's Avro converter at once (fixtures/avro-capture): every
Avro twin decodes to the ChangeEvent of its JSON twin, in the Confluent framing and in
Apicurio's own, and testkit's Avro converter writes the schemas the real one registered."""

from __future__ import annotations

import base64
import json
import struct
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from consumer.changes.decode import AvroReader, AvroSchema, decode_record
from schemas.debezium import ChangeEvent, RawRecord, Skipped
from testkit.avro import avro_schema

CAPTURE = Path(__file__).resolve().parents[4] / "fixtures" / "avro-capture"
REGISTRY = json.loads((CAPTURE / "registry.json").read_text(encoding="utf-8"))
BY_CONTENT_ID = {
    int(k): AvroSchema(int(k), v["served"]["schema"]) for k, v in REGISTRY["schemas_by_id"].items()
}
BY_GLOBAL_ID = {
    int(k): AvroSchema(int(k), json.dumps(v["schema"]))
    for k, v in REGISTRY["apicurio_schemas_by_global_id"].items()
}
READERS = {
    "avro": AvroReader("confluent", BY_CONTENT_ID),
    "apicurio": AvroReader("apicurio", BY_GLOBAL_ID),
}


def captured(name: str) -> list[RawRecord]:
    records = []
    with (CAPTURE / name).open(encoding="utf-8") as lines:
        for line in lines:
            r = json.loads(line)
            if r["topic"].endswith(".schema-history"):  # Debezium's own, always JSON
                continue
            headers = tuple(
                (k, None if v is None else base64.b64decode(v)) for k, v in r["headers"]
            )
            key = None if r["key"] is None else base64.b64decode(r["key"])
            value = None if r["value"] is None else base64.b64decode(r["value"])
            records.append(RawRecord(r["topic"], r["partition"], r["offset"], key, value, headers))
    return records


def table(topic: str) -> str:
    """The table a topic holds, whatever the connector's prefix (DDL: the prefix itself)."""
    return topic.split(".", 1)[1] if "." in topic else "(schema changes)"


def outcome(event: ChangeEvent | Skipped) -> str:
    """What two connectors' twins share: all but the times and the position."""
    if isinstance(event, Skipped):
        return repr((event.kind, event.detail))
    return repr((event.key, event.op, event.before, event.after, event.tombstone))


def by_table(name: str, reader: AvroReader | None) -> dict[str, Counter[str]]:
    found: dict[str, Counter[str]] = {}
    for record in captured(name):
        event = decode_record(record, None, reader)
        if isinstance(event, Skipped) and event.kind == "heartbeat":
            continue
        found.setdefault(table(record.topic), Counter())[outcome(event)] += 1
    return found


@pytest.mark.parametrize(
    ("database", "form"),
    [("mariadb", "avro"), ("mariadb", "apicurio"), ("postgres", "avro")],
)
def test_avro_twins_decode_to_the_change_events_of_their_json_twins(
    database: str, form: str
) -> None:
    from_json = by_table(f"{database}-json.jsonl", None)
    from_avro = by_table(f"{database}-{form}.jsonl", READERS[form])
    assert from_avro.keys() == from_json.keys()
    for name, events in from_json.items():
        assert from_avro[name] == events, name
    rows = sum(sum(events.values()) for name, events in from_json.items())
    assert rows >= 27


def test_every_debezium_type_of_the_capture_is_decoded_as_the_json_path_does() -> None:
    """One record, column by column: the MariaDB types the issue names."""
    events = {
        (table(r.topic), r.offset, r.partition): decode_record(r, None, READERS["avro"])
        for r in captured("mariadb-avro.jsonl")
    }
    orders = [
        e
        for (name, _, _), e in events.items()
        if name == "shop.orders" and isinstance(e, ChangeEvent) and e.after
    ]
    first = next(e for e in orders if e.after is not None and e.after["id"] == 103)
    assert first.after is not None
    after = first.after
    assert str(after["amount"]) == "99999999999999.999999"  # DECIMAL(20,6)
    assert after["status"] == "shipped"  # ENUM
    # DATETIME(6), a wall clock read as UTC, and TIMESTAMP(6)
    assert after["created_at"].isoformat() == "2024-06-04T08:00:00.500000+00:00"
    assert after["updated_at"].isoformat() == "2024-06-04T08:00:00.500000+00:00"
    assert str(after["delivery_slot"]) == "23:59:59"  # TIME: no fraction kept by the column
    customers = [
        e
        for (name, _, _), e in events.items()
        if name == "shop.customers" and isinstance(e, ChangeEvent)
    ]
    ada = next(e.after for e in customers if e.after and e.after["id"] == 1 and e.op == "r")
    assert ada is not None
    assert ada["newsletter"] is True  # TINYINT(1) with its source type propagated
    assert ada["attributes"] == '{"tier": "gold", "tags": ["vip", "early"], "score": 9.5}'
    assert str(ada["birthday"]) == "1965-12-10"  # DATE


@pytest.mark.parametrize("database", ["mariadb", "postgres"])
def test_testkit_avro_converter_writes_the_schemas_the_real_converter_registered(
    database: str,
) -> None:
    """What the property test's Avro twins stand on: testkit.avro is AvroData."""
    prefix = f"{database}_json"
    mine: set[tuple[str, str, str]] = set()
    for record in captured(f"{database}-json.jsonl"):
        for part, data in (("key", record.key), ("value", record.value)):
            if data is not None:
                schema = avro_schema(json.loads(data)["schema"])
                text = json.dumps(schema, sort_keys=True).replace(prefix, f"{database}_avro")
                mine.add((record.topic.replace(prefix, f"{database}_avro"), part, text))
    served: set[tuple[str, str, str]] = set()
    for record in captured(f"{database}-avro.jsonl"):
        for part, data in (("key", record.key), ("value", record.value)):
            if data is not None:
                (schema_id,) = struct.unpack(">I", data[1:5])
                text = REGISTRY["schemas_by_id"][str(schema_id)]["served"]["schema"]
                served.add((record.topic, part, json.dumps(json.loads(text), sort_keys=True)))
    assert mine == served


def test_apicurio_framing_keeps_its_ids_in_headers_and_decodes_the_bare_body() -> None:
    records = [r for r in captured("mariadb-apicurio.jsonl") if r.value is not None]
    assert records and all(r.value is not None and r.value[:1] != b"{" for r in records)
    event: Any = decode_record(records[0], None, READERS["apicurio"])
    assert isinstance(event, ChangeEvent | Skipped)
    with_headers = [r for r in records if any(k == "apicurio.value.globalId" for k, _ in r.headers)]
    assert len(with_headers) == len(records)
    # the same record without its headers is not Avro to the reader: JSON, and not JSON
    bare = replace(records[0], headers=())
    assert READERS["apicurio"].decode(bare, None) is None
