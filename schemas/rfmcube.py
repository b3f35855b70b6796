"""The Rfmcube documents and request bodies: the output contract of the service.

Exactly the shapes of Rfmcube's API documentation, key order included (tests
compare bytes with its examples). Key orders differ between calls, as in the
documentation:

- ``/merge_customer``: ``id, email, createdAt, updatedAt, <descriptors>``
- ``/import`` customer: ``email, createdAt, updatedAt, id, <descriptors>, orders``
- order: ``id, createdAt, updatedAt, amount, status, statusLabel, <others>, items``;
  ``/merge_order`` puts ``customerEmail, customerId`` after ``amount``.

Values arrive JSON-ready from the mapper (:class:`~schemas.entities.MappedRow`):
ISO-8601 ``...Z`` strings, ``Decimal`` money, plain JSON types. :func:`dumps`
writes a Decimal as the exact number it is (``85.85``), never through float.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypedDict

import orjson

from schemas.entities import Kind, MappedRow

Document = dict[str, Any]
"""A customer or order document: Rfmcube's fields plus any descriptors."""

ImportCustomer = dict[str, Any]
"""A customer document in ``/import`` key order, with its ``orders`` list."""

CUSTOMER_FIELDS = ("id", "email", "createdAt", "updatedAt")
IMPORT_CUSTOMER_FIELDS = ("email", "createdAt", "updatedAt", "id")
ORDER_FIELDS = ("id", "createdAt", "updatedAt", "amount", "status", "statusLabel")
ORDER_MERGE_HEAD = ("id", "createdAt", "updatedAt", "amount")


class ImportBody(TypedDict):
    overwriteDescriptors: bool
    triggerIntegrations: bool
    recalculateStats: bool
    customers: list[ImportCustomer]


class MergeCustomerBody(TypedDict):
    triggerIntegrations: bool
    customer: Document


class MergeOrderBody(TypedDict):
    triggerIntegrations: bool
    order: Document


class DeleteCustomerBody(TypedDict, total=False):
    id: str
    email: str


def _ordered(fields: Mapping[str, Any], head: Sequence[str]) -> Document:
    """``head`` keys first (those present), then the others in their given order."""
    document = {name: fields[name] for name in head if name in fields}
    document.update(fields)  # a key already placed keeps its place
    return document


def _check_kind(row: MappedRow, kind: Kind) -> None:
    # Fields still in row.unavailable (no stored value to fill them from, see
    # consumer.changes.mapping.fill_unavailable) are simply absent: the best we know.
    if row.kind is not kind:
        raise ValueError(f"expected {kind.value} row, got {row.kind.value} row {row.key!r}")


# -- documents ---------------------------------------------------------------------------


def customer_document(row: MappedRow) -> Document:
    """The customer as ``/merge_customer`` sends it: id, email, createdAt, updatedAt, others."""
    _check_kind(row, Kind.CUSTOMER)
    return _ordered(row.fields, CUSTOMER_FIELDS)


def item_key_order(key: str) -> tuple[Any, ...]:
    """Sort key for item keys, numbers by value: ``"2"`` before ``"10"``; ``"7|3"`` by parts."""
    if key.isascii() and key.isdigit():  # the common key, without the regex (a resync sorts
        return (((0, int(key), ""),), key)  # millions): the same tuple as below
    parts = re.split(r"(\d+)", key)
    return (
        tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts if part),
        key,
    )


ItemFields = tuple[str, "Mapping[str, Any] | orjson.Fragment"]
"""An item of an order: its key and its fields, as a mapping or as the JSON the
state store holds (an :class:`orjson.Fragment`, written out as it is: a resync
reads a million items, and parsing each only to write it again cost a tenth of
building its documents). The fields' own key order is the stored one."""


def item_fields(item: MappedRow) -> ItemFields:
    """An item row as :func:`order_document` takes it."""
    _check_kind(item, Kind.ITEM)
    return item.key, dict(item.fields)


def order_document(order: MappedRow, items: Sequence[ItemFields]) -> Document:
    """The order with all its items, sorted by item key (numbers by value)."""
    _check_kind(order, Kind.ORDER)
    document = _ordered(order.fields, ORDER_FIELDS)
    document["items"] = [fields for _, fields in sorted(items, key=_item_order)]
    return document


def _item_order(item: ItemFields) -> tuple[Any, ...]:
    return item_key_order(item[0])


def import_customer(customer: Document, orders: Sequence[Document]) -> ImportCustomer:
    """A customer document (from :func:`customer_document`) in ``/import`` form."""
    entry = _ordered({k: v for k, v in customer.items() if k != "orders"}, IMPORT_CUSTOMER_FIELDS)
    entry["orders"] = list(orders)
    return entry


# -- request bodies ------------------------------------------------------------------------


def import_body(
    customers: Sequence[ImportCustomer],
    *,
    overwrite_descriptors: bool = False,
    trigger_integrations: bool = False,
    recalculate_stats: bool = False,
) -> ImportBody:
    return {
        "overwriteDescriptors": overwrite_descriptors,
        "triggerIntegrations": trigger_integrations,
        "recalculateStats": recalculate_stats,
        "customers": list(customers),
    }


def import_body_bytes(
    customer_parts: Sequence[bytes],
    *,
    overwrite_descriptors: bool = False,
    trigger_integrations: bool = False,
    recalculate_stats: bool = False,
) -> bytes:
    """An ``/import`` body around customers already serialized with :func:`dumps`
    (each once, however many requests a split makes of them)."""
    empty = dumps(
        import_body(
            [],
            overwrite_descriptors=overwrite_descriptors,
            trigger_integrations=trigger_integrations,
            recalculate_stats=recalculate_stats,
        )
    )
    head, tail = empty[: -len(b"]}")], b"]}"
    assert empty.endswith(b'"customers":[]}')
    # One allocation of the body's size (it may be 200 MB): head + join + tail made three.
    pieces = [head]
    for index, part in enumerate(customer_parts):
        if index:
            pieces.append(b",")
        pieces.append(part)
    pieces.append(tail)
    return b"".join(pieces)


def merge_customer_body(
    customer_doc: Document, *, trigger_integrations: bool = False
) -> MergeCustomerBody:
    return {"triggerIntegrations": trigger_integrations, "customer": customer_doc}


def merge_order_body(
    order_doc: Document,
    *,
    customer_email: str | None,
    customer_id: str | None,
    trigger_integrations: bool = False,
) -> MergeOrderBody:
    """The order with its customer's identity; a guest order has no ``customerId``."""
    if customer_email is None and customer_id is None:
        raise ValueError(f"order {order_doc.get('id')!r}: needs a customer email or id")
    order = {name: order_doc[name] for name in ORDER_MERGE_HEAD if name in order_doc}
    if customer_email is not None:
        order["customerEmail"] = customer_email
    if customer_id is not None:
        order["customerId"] = customer_id
    for name, value in order_doc.items():
        if name not in order and name not in ("customerEmail", "customerId"):
            order[name] = value
    return {"triggerIntegrations": trigger_integrations, "order": order}


def delete_customer_body(*, id: str | None, email: str | None) -> DeleteCustomerBody:
    """Rfmcube looks the customer up by id first, then by email."""
    if id is None and email is None:
        raise ValueError("delete_customer needs an id or an email")
    body: DeleteCustomerBody = {}
    if id is not None:
        body["id"] = id
    if email is not None:
        body["email"] = email
    return body


# -- bytes -------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"not a finite number: {value!r}")
        return orjson.Fragment(format(value, "f"))
    # datetimes are formatted by the mapper; one here is a bug, not a format to guess
    raise TypeError(f"not JSON-ready: {type(value).__name__}")


_DUMPS_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(obj: Any) -> bytes:
    """Compact JSON; Decimal as its exact digits (``85.85``), never through float."""
    return orjson.dumps(obj, default=_json_default, option=_DUMPS_OPTIONS)


def document_hash(doc: Any) -> str:
    """A stable digest of a document (keys sorted): equal content, equal hash. An
    order's items given as stored JSON (:data:`ItemFields`) are digested as they are
    stored: their own keys in the order the store wrote them, which is the same for
    the same row."""
    data = orjson.dumps(doc, default=_json_default, option=_DUMPS_OPTIONS | orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# -- answers ---------------------------------------------------------------------------


def import_process_id(answer: Any) -> int | str:
    """The ``processId`` of an ``/import`` answer; raises ValueError if absent."""
    if isinstance(answer, dict):
        process_id = answer.get("processId")
        if isinstance(process_id, int | str) and not isinstance(process_id, bool):
            return process_id
    raise ValueError(f"no processId in the import answer: {answer!r:.200}")


PROCESS_DONE = frozenset({"completed", "failed"})


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """The answer of ``GET /processes/{processId}``."""

    process_id: int | str
    status: str
    type: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    processed_customers: int | None = None
    total_customers: int | None = None
    processed_orders: int | None = None
    total_orders: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in PROCESS_DONE

    @property
    def succeeded(self) -> bool:
        return self.status == "completed"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @classmethod
    def parse(cls, answer: Any) -> ProcessInfo:
        """From the decoded JSON answer; raises ValueError on a shape it cannot read."""
        if not isinstance(answer, dict):
            raise ValueError(f"process answer is not an object: {answer!r:.200}")
        process_id = answer.get("processId")
        status = answer.get("status")
        if not isinstance(process_id, int | str) or isinstance(process_id, bool):
            raise ValueError(f"process answer without processId: {answer!r:.200}")
        if not isinstance(status, str):
            raise ValueError(f"process answer without status: {answer!r:.200}")
        data = answer.get("data")
        counts = data if isinstance(data, dict) else {}
        return cls(
            process_id=process_id,
            status=status,
            type=_optional(answer, "type", str),
            created_at=_optional(answer, "createdAt", str),
            updated_at=_optional(answer, "updatedAt", str),
            processed_customers=_count(counts, "processedCustomers"),
            total_customers=_count(counts, "totalCustomers"),
            processed_orders=_count(counts, "processedOrders"),
            total_orders=_count(counts, "totalOrders"),
        )


def _optional(answer: dict[str, Any], name: str, kind: type[str]) -> str | None:
    value = answer.get(name)
    return value if isinstance(value, kind) else None


def _count(counts: dict[str, Any], name: str) -> int | None:
    value = counts.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
