"""Whatever JSON arrives, decode_record returns or raises BadRecord: it never crashes."""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.changes.decode import decode_record, parse_hint
from consumer.errors import BadRecord
from schemas.debezium import ChangeEvent, Skipped
from testkit.debezium import dumps, encode_decimal, record

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
    | st.text(max_size=8)
    | st.sampled_from(["__debezium_unavailable_value", "2024-06-03T14:20:11Z", "AQ=="]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "amount",
                    "op",
                    "before",
                    "after",
                    "source",
                    "ts_ms",
                    "__op",
                    "__deleted",
                    "schema",
                    "payload",
                    "type",
                    "fields",
                    "name",
                    "parameters",
                    "field",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
HINTS = {
    name: parse_hint(hint)
    for name, hint in [("amount", "decimal(2)"), ("ts_ms", "epoch_millis"), ("id", "int")]
}


def decode_any(value: Any, key: Any) -> None:
    try:
        decoded = decode_record(record(value, key), HINTS)
    except BadRecord as exc:
        assert exc.reason  # always says why
    else:
        assert isinstance(decoded, ChangeEvent | Skipped)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, json_values)
def test_arbitrary_json_never_escapes_as_another_exception(value: Any, key: Any) -> None:
    decode_any(value, key)


@settings(max_examples=100)
@given(json_values, st.sampled_from(["c", "u", "d", "r", "t", "m", "x", None]))
def test_arbitrary_envelope_content(image: Any, op: Any) -> None:
    value = {
        "before": image,
        "after": {"id": 1, "amount": encode_decimal(Decimal(1), 2), "x": image},
        "source": image,
        "op": op,
        "ts_ms": image,
    }
    decode_any(value, {"id": 1})


@settings(max_examples=100)
@given(json_values)
def test_arbitrary_schema_around_a_payload(schema: Any) -> None:
    decode_any({"schema": schema, "payload": {"id": 1, "amount": "AQ=="}}, {"id": 1})
    raw = dumps({"schema": {"type": "struct", "fields": [schema]}, "payload": {"id": 1}})
    with contextlib.suppress(BadRecord):
        decode_record(record(None, {"id": 1}, raw_value=raw))
