"""Compile a Kafka Connect schema into a decoder plan, once per schema.

A Connect schema (the ``schema`` half of the JSON converter's envelope, and
what an Avro schema's ``connect.*`` properties describe) says for each column
its type, logical name and parameters. Walking it per record is slow, so it
is compiled into a :class:`StructDecoder`: the few columns that need work and
their converters. Columns of plain int/string/boolean types are left as
parsed. The plan also says what kind of record the schema describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.debezium import UNAVAILABLE, Row

from . import logical
from .exactjson import InexactFloat
from .logical import ColumnError, Converter, ValueDecodeError

# What a value schema describes (see envelope.py for what each becomes).
ENVELOPE = "envelope"
FLAT = "flat"
HEARTBEAT = "heartbeat"
SCHEMA_CHANGE = "schema_change"
TRANSACTION = "transaction"

_TINYINT_NAMES = frozenset({"TINYINT", "BOOL", "BOOLEAN"})
_SOURCE_TYPE = "__debezium.source.column.type"
_SOURCE_LENGTH = "__debezium.source.column.length"


class StructDecoder:
    """Decodes one struct (a row image or a key) in place."""

    __slots__ = ("converters", "meta_fields", "plain_converters")

    def __init__(
        self,
        converters: tuple[tuple[str, Converter], ...],
        plain_converters: tuple[tuple[str, Converter], ...],
        meta_fields: tuple[str, ...],
    ) -> None:
        # 'converters' also turn the unavailable-value placeholder into UNAVAILABLE;
        # 'plain_converters' skip that work for rows where no value can be it
        self.converters = converters
        self.plain_converters = plain_converters
        # flattened rows carry '__op', '__deleted', ... beside the columns
        self.meta_fields = meta_fields

    def __call__(self, row: Row, prefix: str = "column") -> Row:
        try:  # one C-level pass; a list or dict value (unhashable) needs the full check
            plain = logical.PLACEHOLDER_STRINGS.isdisjoint(row.values())
        except TypeError:
            plain = False
        name = ""
        try:
            for name, convert in self.plain_converters if plain else self.converters:
                value = row.get(name)
                if value is not None:
                    row[name] = convert(value)
        except ColumnError as exc:  # inside a nested struct
            raise ColumnError(f"{name}.{exc.column}", exc.reason, prefix=prefix) from None
        except ValueDecodeError as exc:
            raise ColumnError(name, str(exc), prefix=prefix) from None
        except InexactFloat:
            raise
        except Exception as exc:  # a fault of ours or of a library: still this column's record
            raise ColumnError(name, logical.unexpected(exc), prefix=prefix) from None
        return row


@dataclass(frozen=True, slots=True)
class SchemaPlan:
    """A compiled value or key schema: its kind and the decoder of its row images.

    ``rows`` is None for records we skip.
    """

    kind: str
    rows: StructDecoder | None


def placeholder_aware(convert: Converter | None, placeholders: bool) -> Converter | None:
    """Types that Debezium may fill with the unavailable-value placeholder."""
    if not placeholders:
        return convert

    def check(value: Any) -> Any:
        cls = value.__class__
        if cls is str:
            if value in logical.PLACEHOLDER_STRINGS:
                return UNAVAILABLE
        elif (cls is list or cls is dict) and logical.is_unavailable_container(value):
            return UNAVAILABLE
        return value if convert is None else convert(value)

    return check


def is_tinyint_one(parameters: Mapping[str, str]) -> bool:
    source_type = str(parameters.get(_SOURCE_TYPE, "")).upper()
    return source_type in _TINYINT_NAMES and str(parameters.get(_SOURCE_LENGTH)) == "1"


# Structs compiled so far in one schema, by id(): each field is compiled twice (with
# and without placeholder checks), so without it a struct nested n deep would be
# compiled 2^n times: a struct nested 21 deep took 7 minutes.
_Compiled = dict[int, "StructDecoder"]


def field_converter(
    schema: Mapping[str, Any], placeholders: bool = True, compiled: _Compiled | None = None
) -> Converter | None:
    """The converter of one field's values, or None when they stay as parsed."""
    kind = schema.get("type")
    name = schema.get("name")
    parameters = schema.get("parameters") or {}
    factory = logical.LOGICAL_TYPES.get(name) if isinstance(name, str) else None
    if factory is not None:
        convert: Converter | None = factory(parameters)
        return placeholder_aware(convert, placeholders) if kind in ("string", "bytes") else convert
    if kind in ("int8", "int16") and is_tinyint_one(parameters):
        return logical.boolean
    if kind in ("float32", "float64"):
        return logical.exact_number
    if kind in ("string", "bytes"):
        # bytes stay as their base64 text: the API takes JSON, not raw bytes
        return placeholder_aware(None, placeholders)
    if kind == "struct":
        nested = compile_struct(schema, compiled)
        return struct_value(nested) if nested.converters else None
    if kind == "array":
        item = field_converter(schema.get("items") or {}, placeholders, compiled)
        return placeholder_aware(None if item is None else each(item), placeholders)
    if kind == "map":
        item = field_converter(schema.get("values") or {}, placeholders, compiled)
        return placeholder_aware(None if item is None else each_value(item), placeholders)
    return None


def struct_value(decode: StructDecoder) -> Converter:
    def convert(value: Any) -> Any:
        if value.__class__ is not dict:
            raise ValueDecodeError(f"struct expects a JSON object, got {logical.describe(value)}")
        return decode(value)

    return convert


def each(convert: Converter) -> Converter:
    def convert_items(items: Any) -> Any:
        if items.__class__ is not list:
            raise ValueDecodeError(f"array expects a JSON list, got {logical.describe(items)}")
        return [None if item is None else convert(item) for item in items]

    return convert_items


def each_value(convert: Converter) -> Converter:
    def convert_values(items: Any) -> Any:
        if items.__class__ is not dict:
            raise ValueDecodeError(f"map expects a JSON object, got {logical.describe(items)}")
        return {k: None if v is None else convert(v) for k, v in items.items()}

    return convert_values


def compile_struct(schema: Mapping[str, Any], compiled: _Compiled | None = None) -> StructDecoder:
    """The decoder of a struct schema's rows; raises ColumnError for an unusable column."""
    compiled = {} if compiled is None else compiled
    done = compiled.get(id(schema))
    if done is not None:
        return done
    converters: list[tuple[str, Converter]] = []
    plain_converters: list[tuple[str, Converter]] = []
    meta: list[str] = []
    for field_schema in schema.get("fields") or ():
        if not isinstance(field_schema, Mapping):
            raise ValueDecodeError(
                f"schema field is not an object, but {logical.describe(field_schema)}"
            )
        field_name = field_schema.get("field")
        if not isinstance(field_name, str):
            raise ValueDecodeError("schema field without a name")
        if field_name.startswith("__"):
            meta.append(field_name)
            continue
        try:
            convert = field_converter(field_schema, True, compiled)
            plain_convert = field_converter(field_schema, False, compiled)
        except ColumnError as exc:  # a nested struct's column
            raise ColumnError(f"{field_name}.{exc.column}", exc.reason) from None
        except ValueDecodeError as exc:
            raise ColumnError(field_name, str(exc)) from None
        if convert is not None:
            converters.append((field_name, convert))
        if plain_convert is not None:
            plain_converters.append((field_name, plain_convert))
    decoder = StructDecoder(tuple(converters), tuple(plain_converters), tuple(meta))
    compiled[id(schema)] = decoder
    return decoder


def _fields(schema: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(f.get("field")): f for f in schema.get("fields") or () if isinstance(f, Mapping)}


def classify_value_schema(schema: Mapping[str, Any]) -> str:
    """Which kind of record a value schema describes, from its name and fields."""
    name = schema.get("name") or ""
    fields = _fields(schema)
    if name.endswith(".Envelope") or {"op", "source", "after"} <= fields.keys():
        return ENVELOPE
    if name.endswith("SchemaChangeValue") or ("ddl" in fields and "databaseName" in fields):
        return SCHEMA_CHANGE
    if name.endswith("TransactionMetadataValue"):
        return TRANSACTION
    if name.endswith("Heartbeat") or fields.keys() == {"ts_ms"}:
        return HEARTBEAT
    return FLAT


def _kind(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    return kind if isinstance(kind, str) and len(kind) <= 16 else logical.describe(kind)


def compile_value_schema(schema: Mapping[str, Any]) -> SchemaPlan:
    kind = classify_value_schema(schema)
    if kind == FLAT:
        if schema.get("type") != "struct":
            raise ValueDecodeError(f"value schema is a {_kind(schema)}, not a struct")
        return SchemaPlan(FLAT, compile_struct(schema))
    if kind == ENVELOPE:
        fields = _fields(schema)
        image = fields.get("after") or fields.get("before") or {}
        return SchemaPlan(ENVELOPE, compile_struct(image))
    return SchemaPlan(kind, None)


def compile_key_schema(schema: Mapping[str, Any]) -> SchemaPlan:
    if schema.get("type") != "struct":
        raise ValueDecodeError(f"key schema is a {_kind(schema)}, not a struct")
    return SchemaPlan(FLAT, compile_struct(schema))
