"""A read-only view of the state store for planning one flush.

The planner reads, for every owed document, its row, an order's items and
customer, a guest's other orders and the accepted hashes. The view loads all
of that in a few bulk queries up front (see the note on the GIL in
``consumer/state/store.py``), then answers from memory; anything it did not foresee
it reads from the store.
"""

from __future__ import annotations

from collections.abc import Iterable

from consumer.state.store import StateStore, StoredRow
from schemas.entities import DocRef, Kind, MappedRow
from schemas.rfmcube import ItemFields


class StoreView:
    def __init__(self, store: StateStore, docs: Iterable[DocRef]) -> None:
        self._store = store
        refs = list(docs)
        order_keys = [key for kind, key in refs if kind is Kind.ORDER]
        self._rows = store.get_many(refs)
        self._items = store.items_of_many(order_keys)
        parents = {
            (Kind.CUSTOMER, stored.row.parent)
            for (kind, _), stored in self._rows.items()
            if kind is Kind.ORDER and stored.row.parent is not None
        }
        self._rows.update(store.get_many(parents - set(self._rows)))
        self._known = set(refs) | parents
        emails = {
            stored.row.email
            for (kind, _), stored in self._rows.items()
            if kind is Kind.ORDER and stored.row.email
        }
        self._by_email = store.customers_by_email_many(emails)
        self._guest_orders = store.guest_orders_many(emails)
        customer_emails = {
            stored.row.email
            for (kind, _), stored in self._rows.items()
            if kind is Kind.CUSTOMER and stored.row.email
        }
        hashed = [*refs, *((Kind.GUEST, email) for email in emails | customer_emails)]
        self._hashes = store.accepted_hashes(hashed)
        self._hashed = set(hashed)

    def get(self, kind: Kind, key: str) -> StoredRow | None:
        if (kind, key) in self._known:
            return self._rows.get((kind, key))
        return self._store.get(kind, key)

    def live(self, kind: Kind, key: str) -> MappedRow | None:
        stored = self.get(kind, key)
        return None if stored is None or stored.deleted else stored.row

    def items_of(self, order_key: str) -> list[ItemFields]:
        found = self._items.get(order_key)
        if found is None:
            found = self._store.items_of_many([order_key])[order_key]
        return found

    def customer_by_email(self, email: str) -> MappedRow | None:
        if email in self._guest_orders:
            return self._by_email.get(email)
        return self._store.customers_by_email_many([email]).get(email)

    def guest_orders(self, email: str) -> list[StoredRow]:
        found = self._guest_orders.get(email)
        if found is None:
            found = self._store.guest_orders_many([email])[email]
        return found

    def accepted_hash(self, doc: DocRef) -> str | None:
        if doc in self._hashed:
            return self._hashes.get(doc)
        return self._store.accepted_hash(doc)
