"""The planner: a window of dirty documents becomes what to send.

It reads the state store to build whole documents (an order with all its
current items and its customer's identity), drops those whose hash equals what
Rfmcube last accepted, and groups the rest by customer, as ``/import`` wants
them. It decides nothing about requests: the sender packs the groups into
imports or merges.

Rules where the API leaves a choice (see README.md, "Semantics"):
- a customer delete goes first, then the customer's upsert if it exists again;
- an order of a deleted customer is not sent (it would re-create the customer);
- an order whose customer is unknown waits up to ``orphan_wait``; then it goes
  out under its guest email if it has one, else it is dead-lettered;
- a guest order (no customer id) is filed under the registered customer of the
  same email when there is one, else under a guest customer made of the email
  and the first and last timestamps of that email's orders;
- an order delete becomes an upsert through ``mark_deleted`` (None: ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consumer.coalesce import DirtyDoc
from consumer.store import CustomerIdentity, DocRef, StateStore
from consumer.storeview import StoreView
from schemas.entities import Kind, MappedRow
from schemas.rfmcube import customer_document, document_hash, order_document


@dataclass(slots=True)
class Upsert:
    """One document to send, with the hash to remember once it is accepted."""

    ref: DocRef
    doc: dict[str, Any]
    hash: str


@dataclass(slots=True)
class CustomerGroup:
    """A customer as ``/import`` nests it: the customer and some of its orders.

    ``customer`` is None when only the customer's orders changed (the
    customer document then only carries them). ``identity`` is what
    ``merge_order`` needs when the group holds a single order.
    """

    customer_doc: dict[str, Any]
    customer: Upsert | None
    orders: list[Upsert] = field(default_factory=list)
    customer_id: str | None = None
    customer_email: str | None = None
    guest: bool = False  # no registered customer: the container is made from the orders

    @property
    def upserts(self) -> list[Upsert]:
        return ([self.customer] if self.customer else []) + self.orders


@dataclass(slots=True)
class Plan:
    deletes: list[tuple[DocRef, CustomerIdentity]] = field(default_factory=list)
    groups: list[CustomerGroup] = field(default_factory=list)
    unchanged: list[DocRef] = field(default_factory=list)  # nothing to send: done
    deferred: list[DocRef] = field(default_factory=list)  # wait for the next window
    rejected: list[tuple[DocRef, str]] = field(default_factory=list)  # dead-letter: reason

    def upsert_count(self) -> int:
        return sum(len(g.upserts) for g in self.groups)


def _guest_customer(email: str, view: StoreView) -> dict[str, Any]:
    orders = [stored.row.fields for stored in view.guest_orders(email)]
    created = min((str(f.get("createdAt")) for f in orders if f.get("createdAt")), default=None)
    updated = max((str(f.get("updatedAt")) for f in orders if f.get("updatedAt")), default=None)
    return {"email": email, "createdAt": created, "updatedAt": updated}


class Planner:
    def __init__(
        self,
        store: StateStore,
        *,
        mark_deleted: Callable[[MappedRow], MappedRow] | None,
        orphan_wait: float,
    ) -> None:
        self._store = store
        self._view: StoreView  # the store as it stands for the plan being made
        self._mark_deleted = mark_deleted
        self._orphan_wait = orphan_wait

    def plan(self, docs: dict[DocRef, DirtyDoc], now: float) -> Plan:
        self._view = StoreView(self._store, docs)
        plan = Plan()
        groups: dict[tuple[str, str], CustomerGroup] = {}
        for ref, dirty in docs.items():
            if ref[0] is Kind.CUSTOMER:
                self._plan_customer(ref, dirty, plan, groups)
            else:
                self._plan_order(ref, dirty, now, plan, groups)
        plan.groups = list(groups.values())
        return plan

    def _changed(self, ref: DocRef, doc: dict[str, Any], plan: Plan) -> Upsert | None:
        view = self._view
        digest = document_hash(doc)
        if view.accepted_hash(ref) == digest:
            plan.unchanged.append(ref)
            return None
        return Upsert(ref, doc, digest)

    def _plan_customer(
        self,
        ref: DocRef,
        dirty: DirtyDoc,
        plan: Plan,
        groups: dict[tuple[str, str], CustomerGroup],
    ) -> None:
        view = self._view
        # Only the first delete matters: later ones delete what was re-created
        # in between, which the single upsert below then writes again anyway.
        if dirty.deletes:
            plan.deletes.append((ref, dirty.deletes[0]))
        row = view.live(Kind.CUSTOMER, ref[1])
        if row is None:
            if not dirty.deletes:
                plan.unchanged.append(ref)
            return
        doc = customer_document(row)
        upsert = Upsert(ref, doc, document_hash(doc))
        if not dirty.deletes:
            changed = self._changed(ref, doc, plan)
            if changed is None:
                return
            upsert = changed
        group = self._group_for(row, groups)
        group.customer = upsert

    def _group_for(
        self, customer: MappedRow, groups: dict[tuple[str, str], CustomerGroup]
    ) -> CustomerGroup:
        slot = ("id", customer.key)
        group = groups.get(slot)
        if group is None:
            group = groups[slot] = CustomerGroup(
                customer_document(customer),
                None,
                customer_id=customer.key,
                customer_email=customer.email,
            )
        return group

    def _plan_order(
        self,
        ref: DocRef,
        dirty: DirtyDoc,
        now: float,
        plan: Plan,
        groups: dict[tuple[str, str], CustomerGroup],
    ) -> None:
        view = self._view
        stored = view.get(Kind.ORDER, ref[1])
        if stored is None:
            plan.unchanged.append(ref)  # items of an order never seen: nothing to send
            return
        order = stored.row
        if stored.deleted:
            if self._mark_deleted is None:
                plan.unchanged.append(ref)
                return
            order = self._mark_deleted(order)
        doc = order_document(order, view.items_of(order.key))

        owner: MappedRow | None = None  # the registered customer the order goes under
        if order.parent is not None:
            customer = view.get(Kind.CUSTOMER, order.parent)
            if customer is not None and customer.deleted:
                plan.unchanged.append(ref)  # gone with its customer
                return
            if customer is not None:
                owner = customer.row
            elif now - dirty.first_seen < self._orphan_wait:
                plan.deferred.append(ref)
                return
            elif not order.email:
                plan.rejected.append(
                    (ref, f"order {order.key}: customer {order.parent} unknown and no guest email")
                )
                return
        if owner is None:
            if not order.email:
                plan.rejected.append((ref, f"order {order.key}: neither customer id nor email"))
                return
            owner = view.customer_by_email(order.email)
        customer_id: str | None
        if owner is not None:
            slot, customer_id, email = ("id", owner.key), owner.key, owner.email
        else:
            slot, customer_id, email = ("email", order.email or ""), order.parent, order.email
        identity = {"customerId": customer_id, "customerEmail": email}
        upsert = self._changed(ref, {**doc, "__identity": identity}, plan)
        if upsert is None:
            return
        upsert.doc = doc
        group = groups.get(slot)
        if group is None:
            if owner is not None:
                group = self._group_for(owner, groups)
            else:
                group = groups[slot] = CustomerGroup(
                    _guest_customer(slot[1], self._view),
                    None,
                    customer_id=customer_id,
                    customer_email=email,
                    guest=True,
                )
        group.orders.append(upsert)
