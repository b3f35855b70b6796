"""Kafka Connect's Avro converter, for tests: the Avro twin of a JsonConverter record.

What Confluent's and Apicurio's AvroData do with a Connect schema and its
value, written down independently of the decoder (checked against the
registry's schemas of real Debezium captures in the tests):

- a struct is a record named after the Connect name (``<topic>.Value`` →
  ``Value`` in namespace ``<topic>``), carrying ``connect.name``; a record met
  again is referred to by its name;
- an optional field is ``["null", T]`` with ``default: null``;
- int8/int16 ride on ``int`` with ``connect.type``; int64 is ``long``,
  float32 ``float``, float64 ``double``;
- Connect's Decimal is ``bytes`` with ``logicalType: decimal``, its scale and
  precision, and the unscaled value's two's complement as the bytes;
- ``connect.name``, ``connect.version`` and ``connect.parameters`` keep the
  logical types (``io.debezium.time.*`` stay plain ints, longs and strings);
- a map with string keys is an Avro map, any other an array of
  ``{key, value}`` records (``MapEntry``).

:func:`avro_twin` turns a JsonConverter record (schemas on) into the record
the Avro converter writes for the same change: magic byte 0, the schema id
a :class:`Registry` gives, the binary body (or, ``framing="apicurio"``, the
bare body and an 8-byte globalId in the headers).
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

import orjson
from fastavro import parse_schema, schemaless_writer

from schemas.debezium import RawRecord

__all__ = [
    "ApicurioRegistry",
    "LocalRegistry",
    "avro_schema",
    "avro_twin",
    "avro_value",
    "encode",
]

_PRIMITIVE = {
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "long",
    "float32": "float",
    "float64": "double",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
}
_DECIMAL = "org.apache.kafka.connect.data.Decimal"
_VARIABLE_SCALE = "io.debezium.data.VariableScaleDecimal"
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Registry(Protocol):
    def register(self, subject: str, schema: dict[str, Any]) -> int: ...


class LocalRegistry:
    """Ids for schemas, as a registry hands them out (one id per distinct schema),
    and the schemas by id, as it serves them (``GET /schemas/ids/{id}``'s text)."""

    def __init__(self, first_id: int = 1) -> None:
        self.by_id: dict[int, str] = {}
        self._ids: dict[str, int] = {}
        self._next = first_id

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        text = json.dumps(schema, separators=(",", ":"))
        if text not in self._ids:
            self._ids[text] = self._next
            self.by_id[self._next] = text
            self._next += 1
        return self._ids[text]


class ApicurioRegistry:
    """A real registry's Confluent-compatible API (``scripts/registry``): schemas are
    registered under ``<topic>-key`` / ``<topic>-value`` as the converter does."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._known: dict[tuple[str, str], int] = {}

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        text = json.dumps(schema, separators=(",", ":"))
        known = self._known.get((subject, text))
        if known is not None:
            return known
        request = urllib.request.Request(
            f"{self.url}/subjects/{subject}/versions",
            data=json.dumps({"schema": text}).encode(),
            headers={"content-type": "application/vnd.schemaregistry.v1+json"},
            method="POST",
        )
        with _LOOPBACK.open(request, timeout=30) as answer:
            schema_id = int(json.loads(answer.read())["id"])
        self._known[(subject, text)] = schema_id
        return schema_id


# -- schemas -----------------------------------------------------------------------


def avro_schema(connect: Mapping[str, Any]) -> Any:
    """The Avro schema AvroData writes for a Connect schema (the JsonConverter's form)."""
    return _Schemas().convert(connect, top=True)


class _Schemas:
    def __init__(self) -> None:
        self._defined: set[str] = set()
        self._unnamed = 0
        self._namespace = ""  # of the record being written: nested names are relative to it

    def convert(self, connect: Mapping[str, Any], top: bool = False) -> Any:
        schema = self._type(connect)
        if connect.get("optional") and not top:
            # a default goes first: Avro's default is the first branch's
            return [schema, "null"] if connect.get("default") is not None else ["null", schema]
        return schema

    def _props(self, connect: Mapping[str, Any]) -> dict[str, Any]:
        props: dict[str, Any] = {}
        if connect.get("doc"):
            props["connect.doc"] = connect["doc"]
        if connect.get("version") is not None:
            props["connect.version"] = connect["version"]
        if connect.get("parameters"):
            props["connect.parameters"] = dict(connect["parameters"])
        if connect.get("default") is not None:
            props["connect.default"] = connect["default"]
        if connect.get("name"):
            props["connect.name"] = connect["name"]
        return props

    def _type(self, connect: Mapping[str, Any]) -> Any:
        kind = connect["type"]
        name = connect.get("name")
        if name == _DECIMAL:
            parameters = connect.get("parameters") or {}
            return {
                "type": "bytes",
                "scale": int(parameters["scale"]),
                "precision": int(parameters.get("connect.decimal.precision", 64)),
                **self._props(connect),
                "logicalType": "decimal",
            }
        if kind == "struct":
            return self._record(connect)
        if kind == "array":
            return {
                "type": "array",
                "items": self.convert(connect["items"]),
                **self._props(connect),
            }
        if kind == "map":
            keys, values = connect["keys"], connect["values"]
            if keys["type"] == "string":
                return {"type": "map", "values": self.convert(values), **self._props(connect)}
            entry = {
                "type": "record",
                "name": "MapEntry",
                "namespace": "io.confluent.connect.avro",
                "fields": [
                    {"name": "key", "type": self.convert(keys)},
                    {"name": "value", "type": self.convert(values)},
                ],
            }
            return {"type": "array", "items": entry}
        props = self._props(connect)
        if kind in ("int8", "int16"):
            props["connect.type"] = kind
        return {"type": _PRIMITIVE[kind], **props} if props else _PRIMITIVE[kind]

    def _record(self, connect: Mapping[str, Any]) -> Any:
        name = connect.get("name")
        if not name:
            self._unnamed += 1
            name = f"io.confluent.connect.avro.ConnectDefault{self._unnamed}"
        namespace, _, short = name.rpartition(".")
        if name in self._defined:
            return short if namespace == self._namespace else name
        self._defined.add(name)
        outer, self._namespace = self._namespace, namespace
        fields = []
        for field in connect.get("fields") or ():
            avro = {"name": field["field"], "type": self.convert(field)}
            if field.get("default") is not None:
                avro["default"] = field["default"]
            elif field.get("optional"):
                avro["default"] = None
            fields.append(avro)
        self._namespace = outer
        record: dict[str, Any] = {"type": "record", "name": short}
        if namespace != outer:
            record["namespace"] = namespace
        record["fields"] = fields
        record.update(self._props(connect))
        return record


# -- values ------------------------------------------------------------------------


def avro_value(connect: Mapping[str, Any], value: Any) -> Any:
    """The JsonConverter's value (numbers exact) as fastavro writes it for the schema."""
    if value is None:
        return None
    kind, name = connect["type"], connect.get("name")
    if name == _VARIABLE_SCALE:
        return {"scale": value["scale"], "value": base64.b64decode(value["value"])}
    if kind == "bytes":
        return base64.b64decode(value)
    if kind in ("float32", "float64"):
        return float(value)
    if kind == "struct":
        return {f["field"]: avro_value(f, value.get(f["field"])) for f in connect["fields"]}
    if kind == "array":
        return [avro_value(connect["items"], item) for item in value]
    if kind == "map":
        keys, values = connect["keys"], connect["values"]
        if keys["type"] == "string":
            return {k: avro_value(values, v) for k, v in value.items()}
        return [{"key": avro_value(keys, k), "value": avro_value(values, v)} for k, v in value]
    return value


def _writable(schema: Any) -> Any:
    """fastavro writes raw bytes for a decimal only without its logicalType."""
    if isinstance(schema, dict):
        return {k: _writable(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_writable(v) for v in schema]
    return schema


def encode(schema: Any, datum: Any) -> bytes:
    """Avro's binary encoding of ``datum`` (no container, no framing)."""
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(_writable(schema)), datum)
    return buffer.getvalue()


def _exact(data: bytes) -> Any:
    return json.loads(data, parse_float=Decimal)


def avro_twin(record: RawRecord, registry: Registry, framing: str = "confluent") -> RawRecord:
    """The Avro record of a JsonConverter record with schemas (key and value)."""
    headers = list(record.headers)
    parts: dict[str, bytes | None] = {}
    for part in ("key", "value"):
        data = record.key if part == "key" else record.value
        if data is None:
            parts[part] = None
            continue
        document = _exact(data)
        schema = avro_schema(document["schema"])
        body = encode(schema, avro_value(document["schema"], document["payload"]))
        schema_id = registry.register(f"{record.topic}-{part}", schema)
        if framing == "confluent":
            parts[part] = b"\x00" + schema_id.to_bytes(4, "big") + body
        else:
            parts[part] = body
            headers.append((f"apicurio.{part}.globalId", schema_id.to_bytes(8, "big")))
            headers.append((f"apicurio.{part}.encoding", b"BINARY"))
    return RawRecord(
        record.topic,
        record.partition,
        record.offset,
        parts["key"],
        parts["value"],
        tuple(headers),
        record.timestamp_ms,
    )


def json_bytes(value: Any) -> bytes:
    """JSON as the JsonConverter writes it, Decimals as their exact text."""
    return orjson.dumps(
        value, default=lambda v: orjson.Fragment(str(v)) if isinstance(v, Decimal) else v
    )


def fetcher(registry: LocalRegistry) -> Any:
    """A registry client over a LocalRegistry (what ``GET /schemas/ids/{id}`` would
    serve), for consumer.registry.Registry in tests without a registry."""
    from consumer.registry.client import SchemaNotFound

    class _Fetcher:
        def fetch(self, schema_id: int) -> str:
            text = registry.by_id.get(schema_id)
            if text is None:
                raise SchemaNotFound(f"schema {schema_id} is not in the registry")
            return text

    return _Fetcher()
