"""Decode Debezium change records into ChangeEvents: pure code, no I/O.

    decode_record(record, hints, avro) -> ChangeEvent | Skipped   (raises BadRecord)
    parse_hint(text) -> ColumnHint                                (raises ValueError)

Modules, by role: ``json_converter`` reads the JsonConverter wire format;
``avro`` reads Avro records of a schema registry (its framings; the schemas
come already fetched, in an :class:`AvroReader`) and ``avro_schema`` compiles
a registry's schema into the same plan; ``connect_schema`` compiles a Connect
schema into a cached decoder plan; ``envelope`` gives the payload its meaning
(Debezium envelope, flattened rows, tombstones, skipped kinds); ``logical``
decodes column values by logical type; ``hints`` does so for schemaless
columns; ``exactjson`` keeps every decimal digit.
"""

from __future__ import annotations

from collections.abc import Mapping

from consumer.errors import BadRecord, RegistryUnavailable
from schemas.debezium import ChangeEvent, RawRecord, Skipped

from .avro import AvroReader, Framing, schema_ids
from .avro_schema import AvroSchema, UnknownSchema
from .envelope import HEARTBEAT_TOPIC_PREFIX
from .exactjson import InexactFloat
from .hints import ColumnHint, parse_hint
from .json_converter import decode_json_record
from .logical import ValueDecodeError

_CONFLUENT_MAGIC = b"\x00"
_APICURIO_HEADER = "apicurio.value.globalId"


def decode_record(
    record: RawRecord,
    hints: Mapping[str, ColumnHint] | None = None,
    avro: AvroReader | None = None,
) -> ChangeEvent | Skipped:
    """Decode one Kafka record.

    ``hints`` maps column name → hint and is used only for values that carry
    no schema; ``avro`` reads Avro records (None: no schema registry is
    configured). Raises :class:`BadRecord` with an actionable reason when the
    record cannot be decoded (a reason names columns and positions, never a
    column's value), and :class:`RegistryUnavailable` when a schema was not
    fetched (never the record's fault).
    """
    if record.topic.startswith(HEARTBEAT_TOPIC_PREFIX):
        return Skipped(record.position, "heartbeat")
    value = record.value
    try:
        if avro is not None:
            decoded = avro.decode(record, hints)
            if decoded is not None:
                return decoded
        elif value is not None and (
            value.startswith(_CONFLUENT_MAGIC)
            or any(name == _APICURIO_HEADER for name, _ in record.headers)
        ):
            raise BadRecord(
                record.position,
                "value is Avro of a schema registry (or Protobuf): set"
                " kafka.schema_registry.url to read it",
            )
        return decode_json_record(record, hints)
    except (BadRecord, RegistryUnavailable):
        raise
    except ValueDecodeError as exc:
        raise BadRecord(record.position, str(exc)) from None
    except InexactFloat:  # cannot happen after the exact re-parse; never let it escape
        raise BadRecord(record.position, "a number could not be read exactly") from None
    except (TypeError, AttributeError, KeyError, IndexError) as exc:
        # JSON of a shape no Debezium form has (a schema whose 'parameters' is a list, ...);
        # the class only: an exception's message may quote a value
        raise BadRecord(
            record.position, f"unexpected record shape ({type(exc).__name__})"
        ) from None
    except RecursionError:
        raise BadRecord(record.position, "nested too deeply to decode (RecursionError)") from None
    except Exception as exc:  # anything else: still this record's fault, never the stream's
        raise BadRecord(record.position, f"cannot be decoded ({type(exc).__name__})") from None


__all__ = [
    "AvroReader",
    "AvroSchema",
    "ColumnHint",
    "Framing",
    "UnknownSchema",
    "decode_record",
    "parse_hint",
    "schema_ids",
]
