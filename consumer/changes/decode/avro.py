"""Avro records of a schema registry: the framing, and the change they carry.

Two framings, chosen by configuration (``kafka.schema_registry.framing``),
since the first byte cannot tell them apart (a bare Avro body often starts
with 0 too):

- ``confluent``: magic byte 0, the schema's 4-byte big-endian id, the binary
  body. Confluent's converter, Apicurio's with ``as-confluent=true``, Redpanda,
  Karapace. The id is what ``GET {registry}/schemas/ids/{id}`` serves.
- ``apicurio``: Apicurio's converter on its defaults: the bare body, and the
  schema's 8-byte globalId in the record headers ``apicurio.key.globalId`` /
  ``apicurio.value.globalId``.

A record whose key or value is framed so is read here; any other (JSON) part
goes to the JsonConverter path, so a deployment may mix the two. The schemas
are looked up in a mapping the caller filled before (the registry's prefetch:
nothing here does I/O); an id missing from it is not the record's fault
(:class:`consumer.errors.RegistryUnavailable`), an id the registry does not
know is (:class:`UnknownSchema`, a bad record).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from typing import Literal

from consumer.errors import RegistryUnavailable
from schemas.debezium import Decoded, RawRecord, Row

from . import envelope
from .avro_schema import AvroSchema, UnknownSchema
from .hints import ColumnHint
from .json_converter import decode_json_key, decode_json_record
from .logical import ValueDecodeError, describe

__all__ = ["AvroReader", "Framing", "schema_ids"]

Framing = Literal["confluent", "apicurio"]
Part = Literal["key", "value"]
SchemaEntry = AvroSchema | UnknownSchema

_MAGIC = 0
_HEADER_BYTES = 5
_GLOBAL_ID = {"key": "apicurio.key.globalId", "value": "apicurio.value.globalId"}
_ENCODING = {"key": "apicurio.key.encoding", "value": "apicurio.value.encoding"}


def _frame(record: RawRecord, part: Part, framing: Framing) -> tuple[int, int] | None:
    """(schema id, start of the body) of an Avro key or value; None for any other."""
    data = record.key if part == "key" else record.value
    if data is None:
        return None
    if framing == "confluent":
        if not data or data[0] != _MAGIC:
            return None
        if len(data) < _HEADER_BYTES:
            raise ValueDecodeError(
                f"{part} starts with the Schema Registry's magic byte but holds {len(data)}"
                " bytes: its 4-byte schema id is cut short"
            )
        return int.from_bytes(data[1:_HEADER_BYTES], "big"), _HEADER_BYTES
    wanted = _GLOBAL_ID[part]
    found: tuple[int, int] | None = None
    for name, value in record.headers:
        if name == wanted:
            if value is None or len(value) != 8:
                shown = "empty" if value is None else f"{len(value)} bytes"
                raise ValueDecodeError(f"header {wanted} is {shown}, not an 8-byte globalId")
            found = int.from_bytes(value, "big", signed=True), 0
        elif name == _ENCODING[part] and value not in (None, b"BINARY"):
            raise ValueDecodeError(
                f"header {name} says the {part} is not Avro's binary encoding: only BINARY is read"
            )
    return found


def schema_ids(record: RawRecord, framing: Framing) -> Iterator[int]:
    """The ids a record's Avro parts name (a malformed frame names none: decoding
    says what is wrong with it)."""
    for part in ("key", "value"):
        try:
            frame = _frame(record, part, framing)
        except ValueDecodeError:
            continue
        if frame is not None:
            yield frame[0]


class AvroReader:
    """Decodes the Avro records of one batch with the schemas fetched for it."""

    __slots__ = ("_framing", "_schemas")

    def __init__(self, framing: Framing, schemas: Mapping[int, SchemaEntry]) -> None:
        self._framing = framing
        self._schemas = schemas

    @property
    def framing(self) -> Framing:
        return self._framing

    def decode(self, record: RawRecord, hints: Mapping[str, ColumnHint] | None) -> Decoded | None:
        """The record's change, or None when neither its key nor its value is Avro.
        Raises ValueDecodeError (a bad record) or RegistryUnavailable (not fetched)."""
        framing = self._framing
        value_frame = _frame(record, "value", framing)
        key_frame = _frame(record, "key", framing)
        if value_frame is None and key_frame is None:
            return None
        load_key = partial(self._key, record.key, key_frame, hints)
        if record.value is None:
            return envelope.tombstone(record.position, load_key, record.headers)
        if value_frame is None:  # a JSON value beside an Avro key
            return decode_json_record(record, hints, load_key)
        schema_id, start = value_frame
        schema = self._schema(schema_id, "value")
        plan = schema.value_plan()
        payload = schema.read(record.value, start, "value")
        return envelope.interpret_planned(record.position, payload, plan, load_key, record.headers)

    def _schema(self, schema_id: int, part: str) -> AvroSchema:
        entry = self._schemas.get(schema_id)
        if entry is None:
            # the prefetch fills in every id of the batch before decoding: never the record's fault
            raise RegistryUnavailable(f"schema {schema_id} was not fetched before decoding")
        if isinstance(entry, UnknownSchema):
            raise ValueDecodeError(f"{part}: {entry.reason}")
        return entry

    def _key(
        self,
        data: bytes | None,
        frame: tuple[int, int] | None,
        hints: Mapping[str, ColumnHint] | None,
    ) -> Row | None:
        if data is None:
            return None
        if frame is None:
            return decode_json_key(data, hints)
        schema_id, start = frame
        schema = self._schema(schema_id, "key")
        datum = schema.read(data, start, "key")
        if datum is None:
            return None
        rows = schema.key_plan().rows
        if datum.__class__ is not dict or rows is None:
            raise ValueDecodeError(f"key is {describe(datum)}, not a record")
        return rows(datum, "key column")
