"""Avro records that cannot be decoded are bad records that say why; a schema that was
not fetched is not (the registry's fault, not the record's); the hostile corpus's
Avro cases are dead letters with their reasons, their neighbours changes."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from consumer.changes.decode import AvroReader, AvroSchema, UnknownSchema, decode_record
from consumer.changes.limits import RecordLimits
from consumer.changes.mapping import Mapping
from consumer.changes.records import change_of
from consumer.errors import BadRecord, RegistryUnavailable
from consumer.registry import Registry
from schemas.debezium import ChangeEvent, Position, RawRecord
from schemas.entities import EntityChange
from testkit.avro import LocalRegistry, encode, fetcher
from testkit.poison import Poison, avro_poisons

TOPIC = "shop.public.things"
ROW = {
    "type": "record",
    "name": "Value",
    "namespace": TOPIC,
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "note", "type": "string"},  # last: a length past the end reads nothing after
    ],
}
FLAT_ID = 7


def frame(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def reader(*schemas: tuple[int, object]) -> AvroReader:
    return AvroReader("confluent", {i: AvroSchema(i, json.dumps(s)) for i, s in schemas})


def reason_of(record: RawRecord, avro: AvroReader) -> str:
    with pytest.raises(BadRecord) as caught:
        decode_record(record, None, avro)
    return caught.value.reason


def flat(value: bytes) -> RawRecord:
    return RawRecord(TOPIC, 0, 5, b'{"id": 1}', value)


def test_a_flattened_avro_row_decodes() -> None:
    body = encode(ROW, {"id": 1, "note": "hi"})
    event = decode_record(flat(frame(FLAT_ID, body)), None, reader((FLAT_ID, ROW)))
    assert isinstance(event, ChangeEvent)
    assert event.after == {"id": 1, "note": "hi"}
    assert event.key == {"id": 1}  # a JSON key beside an Avro value


def test_a_length_past_the_end_of_the_body_is_caught() -> None:
    body = encode(ROW, {"id": 1, "note": "hi"})
    assert body.endswith(b"\x04hi")
    huge = body[:-3] + b"\x80\x80\x80\x80\x80\x80\x80\x80\x40" + b"hi"  # 2^62 bytes, 2 there
    reason = reason_of(flat(frame(FLAT_ID, huge)), reader((FLAT_ID, ROW)))
    assert reason == (
        f"value is cut short: its Avro body (schema {FLAT_ID}) declares more bytes than it holds"
    )
    # one byte short is as bad as 2^62 (fastavro's read stops short without a word)
    short = body[:-3] + b"\x06hi"
    assert "declares more bytes" in reason_of(flat(frame(FLAT_ID, short)), reader((FLAT_ID, ROW)))
    negative = body[:-3] + b"\x05hi"  # -3
    assert "declares more bytes" in reason_of(
        flat(frame(FLAT_ID, negative)), reader((FLAT_ID, ROW))
    )


def test_bytes_after_the_body_make_it_bad() -> None:
    body = encode(ROW, {"id": 1, "note": "hi"}) + b"\x00"
    reason = reason_of(flat(frame(FLAT_ID, body)), reader((FLAT_ID, ROW)))
    assert reason == f"value has 1 bytes left over after its Avro body (schema {FLAT_ID})"


def test_a_schema_that_was_not_fetched_is_not_a_bad_record() -> None:
    body = encode(ROW, {"id": 1, "note": "hi"})
    record = flat(frame(FLAT_ID + 1, body))
    with pytest.raises(RegistryUnavailable):
        decode_record(record, None, reader((FLAT_ID, ROW)))
    with pytest.raises(RegistryUnavailable):
        change_of(record, None, Mapping.load(None), RecordLimits(), reader((FLAT_ID, ROW)))


def test_an_unknown_schema_is_a_bad_record_with_the_registrys_reason() -> None:
    avro = AvroReader("confluent", {9: UnknownSchema("schema 9 is not in the registry")})
    reason = reason_of(flat(frame(9, b"\x02")), avro)
    assert reason == "value: schema 9 is not in the registry"


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ('{"type": "record"', "the Avro schema is not JSON"),
        ('{"type": "rekord", "name": "x"}', "unknown Avro type 'rekord'"),
        (
            json.dumps({"type": "record", "name": "R", "fields": [
                {"name": "xs", "type": {"type": "array", "items": "null"}}]}),
            "an Avro array of items that take no bytes",
        ),
        ("[" * 5000 + "]" * 5000, "the Avro schema is nested too deeply"),
    ],
)  # fmt: skip
def test_a_schema_that_cannot_be_used_is_refused_once(schema: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        AvroSchema(3, schema)


def test_a_registry_that_cannot_serve_a_schema_makes_it_unknown_not_a_crash() -> None:
    local = LocalRegistry()
    local.by_id[4] = json.dumps(
        {"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}]}
    )
    registry = Registry("confluent", fetcher(local))
    record = flat(frame(4, b"\x00"))
    reason = reason_of(record, registry.reader([record]))
    assert reason == "column next: the Avro record 'L' contains itself: no Connect schema does"


def test_an_avro_value_without_a_registry_says_which_key_to_set() -> None:
    record = flat(frame(FLAT_ID, encode(ROW, {"id": 1, "note": "x"})))
    assert "set kafka.schema_registry.url" in reason_of(record, None)  # type: ignore[arg-type]


def test_apicurio_headers_of_the_wrong_size_make_the_record_bad() -> None:
    body = encode(ROW, {"id": 1, "note": "x"})
    record = RawRecord(TOPIC, 0, 1, None, body, (("apicurio.value.globalId", b"\x00\x07"),))
    avro = AvroReader("apicurio", {FLAT_ID: AvroSchema(FLAT_ID, json.dumps(ROW))})
    assert (
        reason_of(record, avro)
        == "header apicurio.value.globalId is 2 bytes, not an 8-byte globalId"
    )
    json_encoded = RawRecord(
        TOPIC,
        0,
        1,
        None,
        body,
        (
            ("apicurio.value.globalId", FLAT_ID.to_bytes(8, "big")),
            ("apicurio.value.encoding", b"JSON"),
        ),
    )
    assert "only BINARY is read" in reason_of(json_encoded, avro)


def test_decimals_and_floats_of_schemas_no_connect_converter_wrote() -> None:
    schema = {
        "type": "record",
        "name": "Plain",
        "fields": [
            {
                "name": "price",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
            },
            {"name": "ratio", "type": "float"},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        ],
    }  # fmt: skip
    # 123456 does not fit precision 4: fastavro would round it, the decoder keeps it
    body = encode(schema, {"price": (123456).to_bytes(3, "big"), "ratio": 0.1, "day": 1})
    event = decode_record(flat(frame(2, body)), None, reader((2, schema)))
    assert isinstance(event, ChangeEvent) and event.after is not None
    assert event.after["price"] == Decimal("1234.56")
    assert event.after["ratio"] == Decimal("0.1")  # the float32's shortest text, as Java writes it
    assert str(event.after["day"]) == "1970-01-02"


# -- the hostile corpus ---------------------------------------------------------------

LOCAL = LocalRegistry()
AVRO_POISON = avro_poisons(LOCAL)
REGISTRY = Registry("confluent", fetcher(LOCAL))
MAPPING = Mapping.load(None)
# Values of sent columns in the corpus: a reason must never repeat one.
COLUMN_VALUES = ("Ada", "Poison", "555-0100", "example.com", "SKU-7", "nike", "EUR", "@@poison@@")


def change(record: RawRecord) -> EntityChange | None:
    found = change_of(record, None, MAPPING, RecordLimits(), REGISTRY.reader([record]))
    assert not isinstance(found, list)
    return found if isinstance(found, EntityChange) else None


@pytest.mark.parametrize("poison", AVRO_POISON, ids=lambda p: p.name)
def test_each_avro_poison_is_a_bad_record_that_says_why_and_where(poison: Poison) -> None:
    topic = poison.topic()
    record = RawRecord(topic, 1, 3, poison.key, poison.value)
    with pytest.raises(BadRecord) as caught:
        change(record)
    reason = caught.value.reason
    assert poison.reason in reason
    assert caught.value.position == Position(topic, 1, 3)
    assert len(reason) < 300
    assert not [value for value in COLUMN_VALUES if value in reason], reason


@pytest.mark.parametrize("poison", AVRO_POISON, ids=lambda p: p.name)
def test_the_same_avro_record_without_its_poison_is_a_change(poison: Poison) -> None:
    record = RawRecord(poison.topic(), 1, 3, poison.neighbour_key, poison.neighbour_value)
    assert isinstance(change(record), EntityChange)
