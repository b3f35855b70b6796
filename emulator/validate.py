"""Checks request bodies as Rfmcube does: mandatory fields, their types, with the field's path.

Every check raises :class:`BadRequest` whose message names the offending path,
e.g. ``customers[3].orders[0].amount is mandatory``. Values are returned as
sent (numbers are exact Decimals from :mod:`emulator.jsonio`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

_UTC_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
_FLAGS = ("overwriteDescriptors", "triggerIntegrations", "recalculateStats")

Document = dict[str, Any]


class BadRequest(ValueError):
    """The body breaks the API contract; answered with 400 and this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ImportRequest:
    customers: list[Document]
    total_orders: int


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    id: str | int | None
    email: str | None


def parse_import(body: Any) -> ImportRequest:
    root = _object(body, "the body")
    _check_flags(root)
    customers = root.get("customers")
    if customers is None:
        raise BadRequest("customers is mandatory")
    if not isinstance(customers, list):
        raise BadRequest("customers must be a list")
    total_orders = 0
    for index, customer in enumerate(customers):
        path = f"customers[{index}]"
        _check_customer(_object(customer, path), path)
        orders = customer.get("orders")
        if orders is None:
            continue
        if not isinstance(orders, list):
            raise BadRequest(f"{path}.orders must be a list")
        for order_index, order in enumerate(orders):
            order_path = f"{path}.orders[{order_index}]"
            _check_order(_object(order, order_path), order_path)
        total_orders += len(orders)
    if root.get("overwriteDescriptors") is True and total_orders == 0:
        raise BadRequest("overwriteDescriptors requires at least one order in the call")
    return ImportRequest(customers=customers, total_orders=total_orders)


def parse_merge_customer(body: Any) -> Document:
    root = _object(body, "the body")
    _check_flags(root)
    if "customer" not in root:
        raise BadRequest("customer is mandatory")
    customer = _object(root["customer"], "customer")
    _check_customer(customer, "customer")
    return customer


def parse_merge_order(body: Any) -> Document:
    root = _object(body, "the body")
    _check_flags(root)
    if "order" not in root:
        raise BadRequest("order is mandatory")
    order = _object(root["order"], "order")
    _check_order(order, "order")
    email = _optional_email(order, "customerEmail", "order")
    customer_id = _optional_id(order, "customerId", "order")
    if email is None and customer_id is None:
        raise BadRequest("order.customerEmail or order.customerId is mandatory")
    return order


def parse_delete_customer(body: Any) -> DeleteRequest:
    root = _object(body, "the body")
    customer_id = _optional_id(root, "id", "")
    email = _optional_email(root, "email", "")
    if customer_id is None and email is None:
        raise BadRequest("id or email is mandatory")
    return DeleteRequest(id=customer_id, email=email)


def _check_customer(customer: Document, path: str) -> None:
    _mandatory_email(customer, "email", path)
    _mandatory_timestamp(customer, "createdAt", path)
    _mandatory_timestamp(customer, "updatedAt", path)
    _optional_id(customer, "id", path)


def _check_order(order: Document, path: str) -> None:
    if order.get("id") is None:
        raise BadRequest(f"{path}.id is mandatory")
    _optional_id(order, "id", path)
    _mandatory_timestamp(order, "createdAt", path)
    _mandatory_timestamp(order, "updatedAt", path)
    amount = order.get("amount")
    if amount is None:
        raise BadRequest(f"{path}.amount is mandatory")
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
        raise BadRequest(f"{path}.amount must be a number")
    items = order.get("items")
    if items is not None:
        if not isinstance(items, list):
            raise BadRequest(f"{path}.items must be a list")
        for index, item in enumerate(items):
            _object(item, f"{path}.items[{index}]")


def _check_flags(root: Document) -> None:
    for flag in _FLAGS:
        if flag in root and not isinstance(root[flag], bool):
            raise BadRequest(f"{flag} must be a boolean")


def _object(value: Any, path: str) -> Document:
    if not isinstance(value, dict):
        raise BadRequest(f"{path} must be a JSON object")
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _mandatory_email(doc: Document, name: str, path: str) -> str:
    if doc.get(name) is None:
        raise BadRequest(f"{_join(path, name)} is mandatory")
    email = _optional_email(doc, name, path)
    assert email is not None
    return email


def _optional_email(doc: Document, name: str, path: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{_join(path, name)} must be a non-empty string")
    return value


def _optional_id(doc: Document, name: str, path: str) -> str | int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise BadRequest(f"{_join(path, name)} must be a non-empty string or an integer")
    return value


def _mandatory_timestamp(doc: Document, name: str, path: str) -> None:
    value = doc.get(name)
    if value is None:
        raise BadRequest(f"{_join(path, name)} is mandatory")
    if not isinstance(value, str) or not _is_utc_timestamp(value):
        raise BadRequest(
            f"{_join(path, name)} must be an ISO-8601 UTC timestamp such as 2011-12-03T10:15:30Z"
        )


def _is_utc_timestamp(value: str) -> bool:
    if not _UTC_TIMESTAMP.fullmatch(value):
        return False
    try:  # the pattern checked the shape; this checks the calendar (no month 13)
        datetime.fromisoformat(value[:19])
    except ValueError:
        return False
    return True
