"""The documents we send, byte for byte against the examples of Rfmcube's documentation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from consumer.changes.mapping import Mapping
from schemas.debezium import ChangeEvent, Op, Position
from schemas.entities import Kind, MappedRow
from schemas.rfmcube import (
    ProcessInfo,
    customer_document,
    delete_customer_body,
    document_hash,
    dumps,
    import_body,
    import_customer,
    import_process_id,
    item_fields,
    item_key_order,
    merge_customer_body,
    merge_order_body,
    order_document,
)

# The examples as printed in the documentation (seeds/000_f292b5156c5e046b.txt).
DOC_IMPORT = """{ "overwriteDescriptors": false, "triggerIntegrations": false, "recalculateStats": false, "customers": [ { "email": "1test@rfmcube.com", "createdAt": "2020-01-01T13:06:39Z", "updatedAt": "2020-01-01T13:06:39Z", "id": "1", "orders": [ { "id": "1", "createdAt": "2020-01-01T13:30:39Z", "updatedAt": "2020-01-01T13:30:39Z", "amount": 85.85, "status": "10", "statusLabel": "Completato", "delivery": { "province": "MI" }, "items": [ { "item_id": 1342, "product_id": 43421, "brand": "nike" }, { "item_id": 1340, "product_id": 43420, "brand": "nike" } ] } ] } ] }"""  # noqa: E501
DOC_MERGE_CUSTOMER = """{ "triggerIntegrations": false, "customer": { "id": "1", "email": "test@rfmcube.com", "createdAt": "2020-01-01T13:06:39Z", "updatedAt": "2020-01-01T13:06:39Z" } }"""  # noqa: E501
DOC_MERGE_ORDER = """{ "triggerIntegrations": false, "order": { "id": "1", "createdAt": "2020-01-01T13:30:39Z", "updatedAt": "2020-01-01T13:30:39Z", "amount": 85.85, "customerEmail": "1test@rfmcube.com", "customerId": "1", "status": "10", "statusLabel": "Completato", "delivery": { "province": "MI" }, "items": [ { "item_id": 1342, "product_id": 43421, "brand": "nike" }, { "item_id": 1340, "product_id": 43420, "brand": "nike" } ] } }"""  # noqa: E501
DOC_DELETE_CUSTOMER = """{ "id": "321", "email": "test@example.com" }"""


def compact(documented: str) -> bytes:
    """The documentation's JSON, compact, numbers exact (85.85 stays 85.85)."""
    return dumps(json.loads(documented, parse_float=Decimal))


def items_sorted(body: dict[str, Any], *path: str) -> dict[str, Any]:
    """The documentation lists items 1342, 1340; we send items sorted by key."""
    node: Any = body
    for name in path:
        node = node[name][0] if isinstance(node[name], list) else node[name]
    node["items"].sort(key=lambda item: item["item_id"])
    return body


# The documentation's example, as MappedRows (what the mapper produces).
def doc_customer(email: str = "1test@rfmcube.com") -> MappedRow:
    fields = {
        "id": "1",
        "email": email,
        "createdAt": "2020-01-01T13:06:39Z",
        "updatedAt": "2020-01-01T13:06:39Z",
    }
    return MappedRow(Kind.CUSTOMER, "1", fields, email=email)


def doc_order() -> MappedRow:
    fields = {
        "status": "10",
        "statusLabel": "Completato",
        "id": "1",
        "createdAt": "2020-01-01T13:30:39Z",
        "updatedAt": "2020-01-01T13:30:39Z",
        "amount": Decimal("85.85"),
        "delivery": {"province": "MI"},
    }
    return MappedRow(Kind.ORDER, "1", fields, parent="1")


def doc_items() -> list[MappedRow]:
    return [
        MappedRow(Kind.ITEM, "1342", {"item_id": 1342, "product_id": 43421, "brand": "nike"}, "1"),
        MappedRow(Kind.ITEM, "1340", {"item_id": 1340, "product_id": 43420, "brand": "nike"}, "1"),
    ]


def test_import_body_matches_the_documentation() -> None:
    order = order_document(doc_order(), [item_fields(i) for i in doc_items()])
    customer = import_customer(customer_document(doc_customer()), [order])
    expected = dumps(
        items_sorted(json.loads(DOC_IMPORT, parse_float=Decimal), "customers", "orders")
    )
    assert dumps(import_body([customer])) == expected


def test_merge_customer_body_matches_the_documentation() -> None:
    body = merge_customer_body(customer_document(doc_customer("test@rfmcube.com")))
    assert dumps(body) == compact(DOC_MERGE_CUSTOMER)


def test_merge_order_body_matches_the_documentation() -> None:
    body = merge_order_body(
        order_document(doc_order(), [item_fields(i) for i in doc_items()]),
        customer_email="1test@rfmcube.com",
        customer_id="1",
    )
    expected = dumps(items_sorted(json.loads(DOC_MERGE_ORDER, parse_float=Decimal), "order"))
    assert dumps(body) == expected


def test_delete_customer_body_matches_the_documentation() -> None:
    body = delete_customer_body(id="321", email="test@example.com")
    assert dumps(body) == compact(DOC_DELETE_CUSTOMER)
    assert dumps(delete_customer_body(id=None, email="a@b.c")) == b'{"email":"a@b.c"}'
    with pytest.raises(ValueError):
        delete_customer_body(id=None, email=None)


def test_documents_from_the_default_mapping_have_the_documented_shape() -> None:
    """From shop rows through the mapper to bytes: the documented import, plus descriptors."""
    mapping = Mapping.load(None)
    moment = datetime(2020, 1, 1, 13, 6, 39, tzinfo=UTC)
    ordered = datetime(2020, 1, 1, 13, 30, 39, tzinfo=UTC)

    def mapped(topic: str, after: dict[str, Any]) -> MappedRow:
        change = mapping.map_event(
            ChangeEvent(Position(topic, 0, 0), {"id": after["id"]}, Op.READ, None, after)
        )
        assert change is not None and change.row is not None
        return change.row

    customer = mapped(
        "shop.public.customers",
        {
            "id": 1,
            "email": "1test@rfmcube.com",
            "first_name": "Ada",
            "last_name": None,
            "phone": None,
            "password_hash": "secret",
            "newsletter": False,
            "notes": "n",
            "created_at": moment,
            "updated_at": moment,
        },
    )
    order = mapped(
        "shop.public.orders",
        {
            "id": 1,
            "customer_id": 1,
            "customer_email": None,
            "status": "10",
            "status_label": "Completato",
            "amount": Decimal("85.85"),
            "currency": "EUR",
            "delivery_province": "MI",
            "created_at": ordered,
            "updated_at": ordered,
        },
    )
    items = [
        mapped(
            "shop.public.order_items",
            {
                "id": item_id,
                "order_id": 1,
                "product_id": product,
                "sku": None,
                "brand": "nike",
                "quantity": 1,
                "unit_price": Decimal("42.925"),
            },
        )
        for item_id, product in ((1342, 43421), (1340, 43420))
    ]
    body = import_body(
        [
            import_customer(
                customer_document(customer),
                [order_document(order, [item_fields(i) for i in items])],
            )
        ]
    )
    assert dumps(body) == (
        b'{"overwriteDescriptors":false,"triggerIntegrations":false,"recalculateStats":false,'
        b'"customers":[{"email":"1test@rfmcube.com","createdAt":"2020-01-01T13:06:39Z",'
        b'"updatedAt":"2020-01-01T13:06:39Z","id":"1","firstName":"Ada","lastName":null,'
        b'"phone":null,"newsletter":false,"orders":[{"id":"1","createdAt":"2020-01-01T13:30:39Z",'
        b'"updatedAt":"2020-01-01T13:30:39Z","amount":85.85,"status":"10",'
        b'"statusLabel":"Completato","currency":"EUR","delivery":{"province":"MI"},"items":['
        b'{"item_id":1340,"product_id":43420,"brand":"nike","sku":null,"quantity":1,'
        b'"price":42.925},'
        b'{"item_id":1342,"product_id":43421,"brand":"nike","sku":null,"quantity":1,'
        b'"price":42.925}]}]}]}'
    )


def test_guest_order_has_no_customer_id() -> None:
    body = merge_order_body(
        order_document(doc_order(), []), customer_email="guest@example.com", customer_id=None
    )
    order = json.loads(dumps(body))["order"]
    assert order["customerEmail"] == "guest@example.com" and "customerId" not in order
    assert order["items"] == []
    with pytest.raises(ValueError):
        merge_order_body(order_document(doc_order(), []), customer_email=None, customer_id=None)


def test_items_sorted_by_key_numbers_by_value() -> None:
    keys = ["10", "2", "1|10", "1|9", "a", "1"]
    items = [item_fields(MappedRow(Kind.ITEM, key, {"k": key}, "1")) for key in keys]
    document = order_document(doc_order(), items)
    assert [item["k"] for item in document["items"]] == ["1", "1|9", "1|10", "2", "10", "a"]
    assert sorted(["02", "2"], key=item_key_order) == ["02", "2"]


def test_items_as_the_stored_json_write_the_same_bytes_as_their_rows() -> None:
    odd = {"unit_price": Decimal("42.900"), "note": 'più ✓ "x"'}
    rows = [*doc_items(), MappedRow(Kind.ITEM, "7", odd, "1")]
    stored = [(row.key, orjson.Fragment(dumps(row.fields))) for row in rows]
    from_rows = order_document(doc_order(), [item_fields(row) for row in rows])
    from_store = order_document(doc_order(), stored)
    assert dumps(from_store) == dumps(from_rows)
    assert b'"unit_price":42.900' in dumps(from_store)
    assert document_hash(from_store) == document_hash(order_document(doc_order(), stored))
    changed = [
        (row.key, orjson.Fragment(dumps(row.fields).replace(b"nike", b"puma"))) for row in rows
    ]
    assert document_hash(order_document(doc_order(), changed)) != document_hash(from_store)


def test_documents_check_the_kind_of_their_rows() -> None:
    with pytest.raises(ValueError, match="expected order row, got customer row '1'"):
        order_document(doc_customer(), [])


def test_dumps_writes_decimals_exactly_and_refuses_what_is_not_json_ready() -> None:
    assert dumps([Decimal("85.85"), Decimal("0.10"), Decimal("1E+2"), Decimal("-0.000001")]) == (
        b"[85.85,0.10,100,-0.000001]"
    )
    assert dumps(Decimal("0.1") + Decimal("0.2")) == b"0.3"
    with pytest.raises(TypeError):
        dumps({"at": datetime(2020, 1, 1, tzinfo=UTC)})
    with pytest.raises(TypeError):
        dumps(Decimal("NaN"))


def test_document_hash_is_stable_and_content_sensitive() -> None:
    one = {"id": "1", "amount": Decimal("85.85"), "delivery": {"province": "MI", "city": "x"}}
    same = {"delivery": {"city": "x", "province": "MI"}, "amount": Decimal("85.85"), "id": "1"}
    assert document_hash(one) == document_hash(same)
    assert document_hash(one) != document_hash(one | {"amount": Decimal("85.86")})
    assert document_hash(one) != document_hash(one | {"delivery": {"province": "MI"}})
    assert len(document_hash(one)) == 32 and int(document_hash(one), 16) >= 0


def test_process_info_reads_the_documented_answer() -> None:
    answer = {
        "processId": 2,
        "createdAt": "2020-10-16T22:01:05Z",
        "updatedAt": "2020-10-16T22:01:16Z",
        "status": "completed",
        "type": "IMPORT_CUSTOMERS_API",
        "data": {
            "processedCustomers": 105,
            "totalCustomers": 105,
            "processedOrders": 0,
            "totalOrders": 960,
        },
    }
    info = ProcessInfo.parse(answer)
    assert info.process_id == 2 and info.status == "completed"
    assert info.finished and info.succeeded and not info.failed
    assert info.type == "IMPORT_CUSTOMERS_API"
    assert (info.processed_customers, info.total_customers) == (105, 105)
    assert (info.processed_orders, info.total_orders) == (0, 960)
    running = ProcessInfo.parse({"processId": "p-1", "status": "running"})
    assert not running.finished and running.total_orders is None
    with pytest.raises(ValueError):
        ProcessInfo.parse({"status": "completed"})
    with pytest.raises(ValueError):
        ProcessInfo.parse([1])


def test_import_process_id() -> None:
    assert import_process_id({"processId": 2}) == 2
    with pytest.raises(ValueError):
        import_process_id({"status": "ok"})
