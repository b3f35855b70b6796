"""The emulated account: customers, their orders, and the matching rules of the API.

Where Rfmcube's documentation is silent, the rules are those of DESIGN.md:

- a customer is matched by ``id`` when one is sent and known, else by ``email``
  (email is Rfmcube's primary key, so a match by email adopts the sent id);
- a customer upsert replaces the customer's field set with what was sent (its
  orders stay; a stored id is kept when none is sent, so a customer never
  loses its identity);
- an order is matched by ``id`` across all customers: sent again, it replaces
  the stored order entirely (items included) and moves to the customer it is
  now sent with;
- ``merge_order`` for an unknown customer creates a guest from the order's
  customer email/id and dates; a customer without an id (a guest) has dates
  that span its orders, so each ``merge_order`` widens them;
- deleting a customer deletes all its orders.

Emails are not forced unique: a customer that changes its email to one still
held by another keeps both records (the other is usually about to change
too); a lookup by that email then finds the oldest of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Document = dict[str, Any]

# Fields of a sent order that say where it belongs rather than what it is.
_ORDER_LINKS = ("customerEmail", "customerId")


@dataclass(slots=True)
class _Customer:
    fields: Document
    orders: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Order:
    fields: Document
    customer: int


def _instant(timestamp: str) -> datetime:
    """A validated ``...Z`` timestamp as a datetime (text order is wrong with fractions)."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def _order_sort_key(key: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order ("2" before "10"), then the others as text."""
    return (0, int(key), "") if key.isascii() and key.isdigit() else (1, 0, key)


def _identity(value: Any) -> str | None:
    """The matching key of an id (``1`` and ``"1"`` are the same customer)."""
    return None if value is None else str(value)


class Store:
    """In-memory state of one Rfmcube connector."""

    def __init__(self) -> None:
        self._customers: dict[int, _Customer] = {}
        self._orders: dict[str, _Order] = {}
        self._by_id: dict[str, int] = {}
        self._by_email: dict[str, set[int]] = {}
        self._next_serial = 1

    def clear(self) -> None:
        self._customers.clear()
        self._orders.clear()
        self._by_id.clear()
        self._by_email.clear()

    @property
    def customer_count(self) -> int:
        return len(self._customers)

    @property
    def order_count(self) -> int:
        return len(self._orders)

    # -- the API's operations -------------------------------------------------

    def apply_import(self, customers: list[Document]) -> None:
        """``/import``: upserts each customer and each of its listed orders."""
        for sent in customers:
            serial = self.upsert_customer(sent)
            for order in sent.get("orders") or ():
                self._upsert_order(order, serial)

    def upsert_customer(self, sent: Document) -> int:
        """``merge_customer``: returns the customer's internal serial."""
        fields = {name: value for name, value in sent.items() if name != "orders"}
        serial = self._find(sent.get("id"), sent.get("email"))
        if serial is None:
            serial = self._next_serial
            self._next_serial += 1
            self._customers[serial] = _Customer(fields={})
        else:
            stored_id = self._customers[serial].fields.get("id")
            if fields.get("id") is None and stored_id is not None:
                fields["id"] = stored_id
        self._replace_fields(serial, fields)
        return serial

    def merge_order(self, order: Document) -> None:
        """``merge_order``: upserts the order under its customer, creating a guest if needed."""
        customer_id = order.get("customerId")
        email = order.get("customerEmail")
        serial = self._find(customer_id, email)
        if serial is None:
            guest: Document = {}
            if email is not None:
                guest["email"] = email
            if customer_id is not None:
                guest["id"] = customer_id
            guest["createdAt"] = order["createdAt"]
            guest["updatedAt"] = order["updatedAt"]
            serial = self.upsert_customer(guest)
        elif self._customers[serial].fields.get("id") is None:
            self._widen_guest_dates(self._customers[serial].fields, order)
        self._upsert_order(order, serial)

    def delete_customer(self, customer_id: str | int | None, email: str | None) -> int:
        """``delete_customer``: returns how many customers were deleted (0 or 1)."""
        serial = self._find(customer_id, email)
        if serial is None:
            return 0
        customer = self._customers.pop(serial)
        for key in customer.orders:
            del self._orders[key]
        self._unindex(serial, customer.fields)
        return 1

    # -- reading --------------------------------------------------------------

    def snapshot(self) -> dict[str, list[Document]]:
        """Every customer with its orders, as stored, in a stable order."""
        customers = sorted(
            self._customers.values(),
            key=lambda c: (_identity(c.fields.get("id")) or "", c.fields.get("email") or ""),
        )
        return {"customers": [self._render(customer) for customer in customers]}

    def _render(self, customer: _Customer) -> Document:
        orders = []
        for key in sorted(customer.orders, key=_order_sort_key):
            rendered = dict(self._orders[key].fields)
            rendered.setdefault("items", [])
            orders.append(rendered)
        return {**customer.fields, "orders": orders}

    # -- internals ------------------------------------------------------------

    def _find(self, customer_id: Any, email: Any) -> int | None:
        key = _identity(customer_id)
        if key is not None and key in self._by_id:
            return self._by_id[key]
        if isinstance(email, str) and self._by_email.get(email):
            return min(self._by_email[email])
        return None

    @staticmethod
    def _widen_guest_dates(guest: Document, order: Document) -> None:
        created, updated = guest.get("createdAt"), guest.get("updatedAt")
        if not isinstance(created, str) or _instant(order["createdAt"]) < _instant(created):
            guest["createdAt"] = order["createdAt"]
        if not isinstance(updated, str) or _instant(order["updatedAt"]) > _instant(updated):
            guest["updatedAt"] = order["updatedAt"]

    def _upsert_order(self, order: Document, serial: int) -> None:
        key = _identity(order["id"])
        assert key is not None
        previous = self._orders.get(key)
        if previous is not None:
            self._customers[previous.customer].orders.discard(key)
        fields = {name: value for name, value in order.items() if name not in _ORDER_LINKS}
        self._orders[key] = _Order(fields=fields, customer=serial)
        self._customers[serial].orders.add(key)

    def _replace_fields(self, serial: int, fields: Document) -> None:
        customer = self._customers[serial]
        self._unindex(serial, customer.fields)
        customer.fields = fields
        key = _identity(fields.get("id"))
        if key is not None:
            self._by_id[key] = serial
        email = fields.get("email")
        if isinstance(email, str):
            self._by_email.setdefault(email, set()).add(serial)

    def _unindex(self, serial: int, fields: Document) -> None:
        key = _identity(fields.get("id"))
        if key is not None and self._by_id.get(key) == serial:
            del self._by_id[key]
        email = fields.get("email")
        if isinstance(email, str):
            holders = self._by_email.get(email)
            if holders is not None:
                holders.discard(serial)
                if not holders:
                    del self._by_email[email]
