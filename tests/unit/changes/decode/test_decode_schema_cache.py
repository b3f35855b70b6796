"""The compiled-plan cache and the exact re-parse never change what a record decodes to."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from consumer.changes.decode import decode_record
from schemas.debezium import ChangeEvent
from testkit.debezium import dumps, encode_decimal, field, record, struct, with_schema


def after_of(raw_value: bytes, topic: str = "shop.public.orders") -> dict[str, Any]:
    event = decode_record(record(None, {"id": 1}, raw_value=raw_value, topic=topic))
    assert isinstance(event, ChangeEvent) and event.after is not None
    return event.after


def amount_schema(scale: str, **extra: Any) -> dict[str, Any]:
    return struct(
        "shop.public.orders.Value",
        [
            field("id", "int64", optional=False),
            field(
                "amount",
                "bytes",
                name="org.apache.kafka.connect.data.Decimal",
                parameters={"scale": scale},
            ),
            *extra.get("more", []),
        ],
    )


def test_schemas_of_equal_length_are_not_confused() -> None:
    encoded = encode_decimal(Decimal("12.345"), 3)
    for _ in range(2):  # the second pass is served from the cache
        scale2 = after_of(dumps(with_schema(amount_schema("2"), {"id": 1, "amount": encoded})))
        scale3 = after_of(dumps(with_schema(amount_schema("3"), {"id": 1, "amount": encoded})))
        assert scale2["amount"] == Decimal("123.45")
        assert scale3["amount"] == Decimal("12.345")


def test_non_compact_layout_and_payload_first_still_decode() -> None:
    value = {"id": 1, "amount": encode_decimal(Decimal("9.99"), 2)}
    compact = dumps(with_schema(amount_schema("2"), value))
    pretty = json.dumps(with_schema(amount_schema("2"), value), indent=2).encode()
    payload_first = json.dumps({"payload": value, "schema": amount_schema("2")}).encode()
    for raw in (compact, pretty, payload_first, pretty, compact + b"\n", compact):
        assert after_of(raw)["amount"] == Decimal("9.99")


def test_schema_text_holding_the_payload_separator_is_decoded_correctly() -> None:
    # a struct default with a key named "payload" puts ',"payload":' inside the schema
    tricky = field(
        "meta",
        "struct",
        fields=[field("x", "int32"), field("payload", "int32")],
        default={"x": 1, "payload": 2},
    )
    schema = amount_schema("2", more=[tricky])
    value = {"id": 1, "amount": encode_decimal(Decimal("1.50"), 2), "meta": {"x": 3, "payload": 4}}
    for _ in range(2):
        after = after_of(dumps(with_schema(schema, value)))
        assert after == {"id": 1, "amount": Decimal("1.50"), "meta": {"x": 3, "payload": 4}}


def test_nested_struct_columns_are_decoded() -> None:
    point = field(
        "delivery",
        "struct",
        fields=[
            field("province", "string"),
            field(
                "fee",
                "bytes",
                name="org.apache.kafka.connect.data.Decimal",
                parameters={"scale": "2"},
            ),
        ],
    )
    schema = amount_schema("2", more=[point])
    value = {
        "id": 1,
        "amount": None,
        "delivery": {"province": "MI", "fee": encode_decimal(Decimal("4.90"), 2)},
    }
    assert after_of(dumps(with_schema(schema, value)))["delivery"] == {
        "province": "MI",
        "fee": Decimal("4.90"),
    }


def test_float_records_decode_the_same_before_and_after_the_topic_turns_exact() -> None:
    topic = "shop.public.float_prices"
    with_float = dumps(
        {"id": 1, "price": Decimal("19.90"), "ratio": Decimal("0.3333333333333333333")}
    )
    plain = dumps({"id": 1, "price": 20})
    first = after_of(with_float, topic)
    second = after_of(with_float, topic)
    assert (
        first
        == second
        == {"id": 1, "price": Decimal("19.90"), "ratio": Decimal("0.3333333333333333333")}
    )
    assert str(first["price"]) == "19.90"  # the text's own digits, trailing zero included
    assert after_of(plain, topic) == {"id": 1, "price": 20}
