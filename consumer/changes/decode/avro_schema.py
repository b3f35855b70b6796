"""An Avro schema, as a schema registry serves it, compiled once into a decoder plan.

Kafka Connect's Avro converters (Confluent's AvroData and Apicurio's fork of
it) write each Connect schema as an Avro schema that keeps the Connect facts
in properties: ``connect.name`` (the logical type:
``io.debezium.time.ZonedTimestamp``, Connect's ``Decimal``...),
``connect.type`` (``int8``/``int16`` ride on Avro's ``int``) and
``connect.parameters`` (a Decimal's scale, a TINYINT(1)'s source type).
Compiling reads them back, so that a column decodes to the very value the
JsonConverter path gives (:mod:`.connect_schema`): the same
:mod:`.logical` decoders, fed Avro's native values instead of JSON's (bytes
instead of base64 text, binary floats instead of JSON numbers).

The body itself is read by code compiled for the schema (:mod:`.avro_reader`),
which knows nothing of logical types: a decimal stays its bytes (fastavro
would round it to the declared precision), a uuid its text. The plan decodes
those itself, exactly. A record that contains itself is no Connect schema.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from schemas.debezium import UNAVAILABLE

from . import avro_values, logical
from .avro_names import PRIMITIVES, Names, fullname
from .avro_reader import CutShort, Invalid, compile_reader
from .connect_schema import (
    ENVELOPE,
    FLAT,
    SchemaPlan,
    StructDecoder,
    classify_value_schema,
    each,
    each_value,
    is_tinyint_one,
    placeholder_aware,
    struct_value,
)
from .logical import ColumnError, Converter, ValueDecodeError, describe

__all__ = ["AvroSchema", "UnknownSchema"]

_DECIMAL = "org.apache.kafka.connect.data.Decimal"
_VARIABLE_SCALE = "io.debezium.data.VariableScaleDecimal"
# The Connect type of each Avro type, for the reasons of schemas we cannot use.
_CONNECT_TYPES = {"int": "int32", "long": "int64", "float": "float32", "double": "float64"}


class UnknownSchema:
    """A schema id the decoder cannot use: unknown to the registry, not Avro,
    unreadable. Every record naming it is bad input, with this reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"UnknownSchema({self.reason!r})"


# -- compiling ------------------------------------------------------------------------


class _Compiler:
    """Avro types → converters, as connect_schema.field_converter does for Connect's."""

    def __init__(self, names: Names) -> None:
        self._names = names
        self._records: dict[int, StructDecoder] = {}
        self._in_progress: set[int] = set()

    def converter(self, schema: Any, namespace: str, placeholders: bool) -> Converter | None:
        if isinstance(schema, list):  # a union: Connect's optional is [null, T]
            branches = [b for b in schema if b != "null"]
            if len(branches) == 1:
                return self.converter(branches[0], namespace, placeholders)
            return avro_values.native if branches else None
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return self._plain(schema, placeholders)
            target, target_namespace = self._names.resolve(schema, namespace)
            return self.converter(target, target_namespace, placeholders)
        if not isinstance(schema, dict):
            raise ValueDecodeError(f"an Avro type that is {describe(schema)}")
        kind = schema.get("type")
        if isinstance(kind, dict | list):  # {"type": {"type": "string", ...}}
            return self.converter(kind, namespace, placeholders)
        parameters = schema.get("connect.parameters") or {}
        if not isinstance(parameters, Mapping):
            raise ValueDecodeError(f"connect.parameters is {describe(parameters)}")
        name = schema.get("connect.name")
        if name == _DECIMAL:
            scale = parameters.get("scale", schema.get("scale"))
            return avro_values.decimal(logical.decimal_scale({"scale": scale}))
        if name == _VARIABLE_SCALE:
            return avro_values.variable_scale_decimal
        factory = logical.LOGICAL_TYPES.get(name) if isinstance(name, str) else None
        if factory is not None:
            convert: Converter = factory(parameters)
            if kind in ("bytes", "fixed"):
                return _after(avro_values.bytes_text, convert)
            return placeholder_aware(convert, placeholders) if kind == "string" else convert
        if name is None:
            known = self._avro_logical(schema)
            if known is not None:
                return known
        tinyint = kind == "int" and schema.get("connect.type") in ("int8", "int16")
        if tinyint and is_tinyint_one(parameters):
            return logical.boolean
        if kind in ("record", "error"):
            nested = self.record(schema, self._names.namespace.get(id(schema), namespace))
            return struct_value(nested) if nested.converters else None
        if kind == "array":
            return self._array(schema, namespace, placeholders)
        if kind == "map":
            item = self.converter(schema.get("values"), namespace, placeholders)
            return placeholder_aware(None if item is None else each_value(item), placeholders)
        if kind == "enum":
            return placeholder_aware(None, placeholders)
        if kind == "fixed":
            return avro_values.bytes_text
        if isinstance(kind, str) and kind in PRIMITIVES:
            return self._plain(kind, placeholders)
        raise ValueDecodeError(f"unknown Avro type {logical.describe(kind)}")

    def _avro_logical(self, schema: Mapping[str, Any]) -> Converter | None:
        kind = schema.get("logicalType")
        if kind == "decimal":
            return avro_values.decimal(logical.decimal_scale({"scale": schema.get("scale", 0)}))
        return avro_values.AVRO_LOGICAL.get(kind) if isinstance(kind, str) else None

    def _plain(self, kind: str, placeholders: bool) -> Converter | None:
        if kind == "string":
            return placeholder_aware(None, placeholders)
        if kind == "bytes":
            return avro_values.bytes_text  # the placeholder's bytes are checked in both variants
        if kind == "double":
            return avro_values.double
        if kind == "float":
            return avro_values.single
        return None  # null, boolean, int, long stay as read

    def _array(
        self, schema: Mapping[str, Any], namespace: str, placeholders: bool
    ) -> Converter | None:
        items = schema.get("items")
        entry = self._map_entry(items, namespace)
        if entry is not None:
            key_schema, value_schema, entry_namespace = entry
            return avro_values.pairs(
                self.converter(key_schema, entry_namespace, placeholders),
                self.converter(value_schema, entry_namespace, placeholders),
            )
        item = self.converter(items, namespace, placeholders)
        return placeholder_aware(None if item is None else each(item), placeholders)

    def _map_entry(self, items: Any, namespace: str) -> tuple[Any, Any, str] | None:
        if isinstance(items, str) and items not in PRIMITIVES:
            items, namespace = self._names.resolve(items, namespace)
        if not isinstance(items, dict) or items.get("type") != "record":
            return None
        name = str(items.get("name") or "")
        fields = {f.get("name"): f.get("type") for f in items.get("fields") or ()}
        if name.endswith("MapEntry") and fields.keys() == {"key", "value"}:
            own = self._names.namespace.get(id(items), namespace)
            return fields["key"], fields["value"], own
        return None

    def record(self, schema: Mapping[str, Any], namespace: str) -> StructDecoder:
        """The decoder of a record's rows (cf. connect_schema.compile_struct)."""
        key = id(schema)
        done = self._records.get(key)
        if done is not None:
            return done
        if key in self._in_progress:
            raise ValueDecodeError(
                f"the Avro record {schema.get('name')!r} contains itself: no Connect schema does"
            )
        self._in_progress.add(key)
        converters: list[tuple[str, Converter]] = []
        plain_converters: list[tuple[str, Converter]] = []
        meta: list[str] = []
        for field in schema.get("fields") or ():
            if not isinstance(field, Mapping):
                raise ValueDecodeError(f"Avro field is {describe(field)}")
            field_name = field.get("name")
            if not isinstance(field_name, str):
                raise ValueDecodeError("Avro field without a name")
            if field_name.startswith("__"):
                meta.append(field_name)
                continue
            try:
                convert = self.converter(field.get("type"), namespace, True)
                plain = self.converter(field.get("type"), namespace, False)
            except ColumnError as exc:
                raise ColumnError(f"{field_name}.{exc.column}", exc.reason) from None
            except ValueDecodeError as exc:
                raise ColumnError(field_name, str(exc)) from None
            if convert is not None:
                converters.append((field_name, convert))
            if plain is not None:
                plain_converters.append((field_name, plain))
        self._in_progress.discard(key)
        decoder = StructDecoder(tuple(converters), tuple(plain_converters), tuple(meta))
        self._records[key] = decoder
        return decoder


def _after(first: Converter, then: Converter) -> Converter:
    def convert(value: Any) -> Any:
        value = first(value)
        return value if value is UNAVAILABLE else then(value)

    return convert


# -- one registry schema ----------------------------------------------------------------


class AvroSchema:
    """One schema of the registry: the reader of its bodies, and the plans of its
    records as a key and as a value (compiled at first use, once)."""

    __slots__ = ("_compiler", "_key", "_names", "_reader", "_root", "_value", "schema_id")

    def __init__(self, schema_id: int, text: str | bytes) -> None:
        """Raises ValueDecodeError when the schema cannot be used at all."""
        self.schema_id = schema_id
        try:
            root = json.loads(text)
        except RecursionError:
            raise ValueDecodeError("the Avro schema is nested too deeply") from None
        except ValueError:
            raise ValueDecodeError("the Avro schema is not JSON") from None
        self._root = root
        try:
            self._names = Names(root)
            self._reader = compile_reader(root, self._names)
        except ValueDecodeError:
            raise
        except RecursionError:
            raise ValueDecodeError("the Avro schema is nested too deeply") from None
        except Exception as exc:  # a fault of ours: the schema is unusable, not the stream
            raise ValueDecodeError(
                f"the Avro schema cannot be read ({type(exc).__name__})"
            ) from None
        self._compiler = _Compiler(self._names)
        self._value: SchemaPlan | ValueDecodeError | None = None
        self._key: SchemaPlan | ValueDecodeError | None = None

    def read(self, data: bytes, start: int, what: str) -> Any:
        """The datum of a binary body at ``data[start:]``, which it must fill exactly."""
        size = len(data)
        try:
            datum, end = self._reader(data, start, size)
        except (CutShort, IndexError, struct.error):  # a length, a byte, a float past the end
            raise self._cut_short(what) from None
        except Invalid as exc:
            raise ValueDecodeError(
                f"{what} does not fit its Avro schema {self.schema_id}: {exc}"
            ) from None
        except Exception as exc:  # text that is not UTF-8, a body nested past the stack...
            raise ValueDecodeError(
                f"{what} does not fit its Avro schema {self.schema_id} ({type(exc).__name__})"
            ) from None
        if end < size:
            raise ValueDecodeError(
                f"{what} has {size - end} bytes left over after its Avro body"
                f" (schema {self.schema_id})"
            )
        return datum

    def _cut_short(self, what: str) -> ValueDecodeError:
        return ValueDecodeError(
            f"{what} is cut short: its Avro body (schema {self.schema_id}) declares more"
            " bytes than it holds"
        )

    def value_plan(self) -> SchemaPlan:
        if self._value is None:
            try:
                self._value = self._compile_value()
            except ValueDecodeError as exc:
                self._value = exc
            except RecursionError:
                self._value = ValueDecodeError("the Avro schema is nested too deeply")
        if isinstance(self._value, ValueDecodeError):
            raise ValueDecodeError(str(self._value))
        return self._value

    def key_plan(self) -> SchemaPlan:
        if self._key is None:
            try:
                record, namespace = self._record_of(self._root, "")
                if record is None:
                    raise ValueDecodeError(f"key schema is a {self._describe()}, not a struct")
                self._key = SchemaPlan(FLAT, self._compiler.record(record, namespace))
            except ValueDecodeError as exc:
                self._key = exc
            except RecursionError:
                self._key = ValueDecodeError("the Avro schema is nested too deeply")
        if isinstance(self._key, ValueDecodeError):
            raise ValueDecodeError(str(self._key))
        return self._key

    def _compile_value(self) -> SchemaPlan:
        record, namespace = self._record_of(self._root, "")
        view = self._connect_view(record, namespace)
        kind = classify_value_schema(view)
        if kind == FLAT:
            if record is None:
                raise ValueDecodeError(f"value schema is a {self._describe()}, not a struct")
            return SchemaPlan(FLAT, self._compiler.record(record, namespace))
        if kind == ENVELOPE:
            assert record is not None
            fields = {f.get("name"): f for f in record.get("fields") or () if isinstance(f, dict)}
            image = fields.get("after") or fields.get("before")
            if image is None:
                return SchemaPlan(ENVELOPE, StructDecoder((), (), ()))
            own = self._names.namespace.get(id(record), namespace)
            row, row_namespace = self._record_of(image.get("type"), own)
            if row is None:
                raise ValueDecodeError("the envelope's row image is not a record")
            return SchemaPlan(ENVELOPE, self._compiler.record(row, row_namespace))
        return SchemaPlan(kind, None)

    def _record_of(self, schema: Any, namespace: str) -> tuple[dict[str, Any] | None, str]:
        """The record a (nullable) type is, resolved; None when it is no record."""
        if isinstance(schema, list):
            branches = [b for b in schema if b != "null"]
            if len(branches) != 1:
                return None, namespace
            schema = branches[0]
        if isinstance(schema, str) and schema not in PRIMITIVES:
            schema, namespace = self._names.resolve(schema, namespace)
        if isinstance(schema, dict):
            kind = schema.get("type")
            if isinstance(kind, dict | list):
                return self._record_of(kind, namespace)
            if kind in ("record", "error"):
                return schema, self._names.namespace.get(id(schema), namespace)
        return None, namespace

    def _connect_view(self, record: dict[str, Any] | None, namespace: str) -> dict[str, Any]:
        """What classify_value_schema looks at: the Connect name and the field names."""
        if record is None:
            return {"type": self._describe(), "fields": []}
        name = record.get("connect.name") or fullname(str(record.get("name")), namespace)
        fields = [
            {"field": f.get("name")} for f in record.get("fields") or () if isinstance(f, dict)
        ]
        return {"type": "struct", "name": name, "fields": fields}

    def _describe(self) -> str:
        """The Connect type of a root schema that is no record, for a reason."""
        root = self._root
        kind = root.get("type") if isinstance(root, dict) else root
        if isinstance(root, dict) and root.get("connect.type"):
            kind = root["connect.type"]
        if isinstance(kind, str) and len(kind) <= 16:
            return _CONNECT_TYPES.get(kind, kind)
        return "union" if isinstance(kind, list) else describe(kind)
