"""The planner: owed documents become what to send.

It reads the state store to build whole documents (an order with all its
current items and its customer's identity), drops those whose hash equals what
Rfmcube last accepted, and groups the rest by customer, as ``/import`` wants
them. It decides nothing about requests: :mod:`consumer.delivery.packing` does.

Rules where the API leaves a choice (see README.md, "Semantics"):
- a customer delete goes first, then the customer's upsert if it exists again;
  the orders Rfmcube deleted with it are sent again whatever their hash;
- an order of a deleted customer is not sent (it would re-create the customer);
- an order whose customer is unknown waits up to ``orphan_wait``; then it is
  parked: its records are released, and it goes out when its customer arrives
  (the customer's record touches it);
- a guest order (no customer id) is filed under the registered customer of the
  same email when there is one, else under a guest customer made of the email
  and the first and last timestamps of that email's orders; when a registered
  customer takes an email whose guest customer Rfmcube holds, that guest
  customer is deleted first (email is Rfmcube's key: it would stay a twin);
- a delete waits while an import that carries its customer is pending: the
  import would re-create the customer after the delete;
- an order delete becomes an upsert through ``mark_deleted`` (None: ignored);
- with an ``anonymizer`` (``customer_delete: anonymize``), a deleted customer is
  sent anonymized instead of deleted: it keeps its orders in Rfmcube.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consumer.delivery.privacy import Anonymizer
from consumer.state.obligations import Obligations, OwedDoc
from consumer.state.store import StateStore
from consumer.state.view import StoreView
from schemas.entities import CustomerIdentity, DocRef, Kind, MappedRow
from schemas.rfmcube import customer_document, document_hash, order_document

__all__ = ["CustomerGroup", "Delete", "Plan", "Planner", "PlannerSpec", "Upsert"]


@dataclass(slots=True)
class Upsert:
    """One document to send, with the hash to remember once it is accepted."""

    ref: DocRef
    doc: dict[str, Any]
    hash: str
    owed: OwedDoc


@dataclass(slots=True)
class Delete:
    """A ``delete_customer``; ``owed`` is None for a guest customer the planner retires."""

    ref: DocRef
    identity: CustomerIdentity
    owed: OwedDoc | None


@dataclass(slots=True)
class CustomerGroup:
    """A customer as ``/import`` nests it: the customer and some of its orders.

    ``customer`` is None when only the customer's orders changed (the
    customer document then only carries them). ``customer_id`` and
    ``customer_email`` are what ``merge_order`` needs for a single order.
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

    @property
    def container_ref(self) -> DocRef:
        """The customer document Rfmcube holds for this group."""
        if self.guest:
            return (Kind.GUEST, self.customer_email or "")
        return (Kind.CUSTOMER, self.customer_id or "")


@dataclass(slots=True)
class Plan:
    deletes: list[Delete] = field(default_factory=list)
    groups: list[CustomerGroup] = field(default_factory=list)
    done: list[OwedDoc] = field(default_factory=list)  # nothing to send: the obligation is met
    parked: list[OwedDoc] = field(default_factory=list)  # waiting for their customer
    deferred: list[OwedDoc] = field(default_factory=list)  # stay owed for a later flush
    rejected: list[tuple[OwedDoc, str]] = field(default_factory=list)  # dead-letter: reason
    hurry: set[str] = field(default_factory=set)  # imports a deferred delete waits for

    def upsert_count(self) -> int:
        return sum(len(g.upserts) for g in self.groups)


@dataclass(frozen=True, slots=True)
class PlannerSpec:
    """A planner's rules, to plan the same way elsewhere (a worker process:
    :mod:`consumer.delivery.workers`)."""

    mark_deleted: Callable[[MappedRow], MappedRow] | None
    orphan_wait: float
    anonymizer: Anonymizer | None


class Planner:
    def __init__(
        self,
        store: StateStore,
        obligations: Obligations,
        *,
        mark_deleted: Callable[[MappedRow], MappedRow] | None,
        orphan_wait: float,
        anonymizer: Anonymizer | None = None,
    ) -> None:
        self._store = store
        self._obligations = obligations
        self._mark_deleted = mark_deleted
        self._orphan_wait = orphan_wait
        self._anonymizer = anonymizer

    @property
    def spec(self) -> PlannerSpec:
        return PlannerSpec(self._mark_deleted, self._orphan_wait, self._anonymizer)

    def plan(self, owed: list[OwedDoc], now: float) -> Plan:
        """``now`` is the wall clock, like ``OwedDoc.since``."""
        return _Planning(self, owed, now).run()


class _Planning:
    """One plan in the making."""

    def __init__(self, planner: Planner, owed: list[OwedDoc], now: float) -> None:
        self.planner = planner
        self.owed = owed
        self.now = now
        self.view = StoreView(planner._store, [doc.ref for doc in owed])
        self.plan = Plan()
        self.groups: dict[tuple[str, str], CustomerGroup] = {}
        self.blocked: set[str] = set()  # customers whose upsert waits: their orders wait too
        self.forced: set[str] = set()  # customers Rfmcube deletes first: orders sent whatever
        self.retired: set[str] = set()  # emails whose guest customer is deleted first
        self.deleting: set[str] = set()  # customers whose delete this plan sends
        self._deletes_owed: dict[str, bool] | None = None

    def delete_owed(self, customer_key: str) -> bool:
        """Whether this customer still has a delete owed (in this plan or a later one)."""
        if self._deletes_owed is None:
            parents = set()
            for doc in self.owed:
                stored = self.view.get(*doc.ref) if doc.ref[0] is Kind.ORDER else None
                if stored is not None and stored.row.parent is not None:
                    parents.add(stored.row.parent)
            self._deletes_owed = {key: False for key in parents}
            for key in self.planner._obligations.deletes_owed(parents):
                self._deletes_owed[key] = True
        found = self._deletes_owed.get(customer_key)
        if found is None:
            found = bool(self.planner._obligations.deletes_owed([customer_key]))
            self._deletes_owed[customer_key] = found
        return found

    def run(self) -> Plan:
        customers = [doc for doc in self.owed if doc.ref[0] is Kind.CUSTOMER]
        self._blocking_imports(customers)
        for doc in customers:
            self._customer(doc)
        for doc in self.owed:
            if doc.ref[0] is Kind.ORDER:
                self._order(doc)
            elif doc.ref[0] is not Kind.CUSTOMER:
                self.plan.done.append(doc)  # nothing is owed for other kinds
        # Registered customers first: one that leaves an email must do so before
        # the guest customer of that email is looked up by it.
        self.plan.groups = sorted(self.groups.values(), key=lambda g: g.guest)
        return self.plan

    # -- customers --------------------------------------------------------------

    def _blocking_imports(self, customers: list[OwedDoc]) -> None:
        """Customers with a delete to send that a pending import still carries."""
        view = self.view
        watched: dict[DocRef, str] = {}
        for doc in customers:
            if doc.deletes and self.planner._anonymizer is None:
                watched[doc.ref] = doc.ref[1]
            row = view.live(Kind.CUSTOMER, doc.ref[1])
            if row is not None and row.email and view.accepted_hash((Kind.GUEST, row.email)):
                watched[(Kind.GUEST, row.email)] = doc.ref[1]
        for ref, pids in self.planner._obligations.imports_carrying(watched).items():
            self.blocked.add(watched[ref])
            self.plan.hurry |= pids

    def _customer(self, doc: OwedDoc) -> None:
        view, plan = self.view, self.plan
        key = doc.ref[1]
        if key in self.blocked:
            plan.deferred.append(doc)
            return
        anonymizer = self.planner._anonymizer
        if doc.deletes and anonymizer is not None:
            self.deleting.add(key)
            if view.live(Kind.CUSTOMER, key) is None:
                self._anonymized(doc, anonymizer)
                return
            # Re-created: the upsert below replaces the anonymized customer.
        elif doc.deletes:
            # Only the first delete matters: later ones delete what was re-created
            # in between, which the single upsert below then writes again anyway.
            plan.deletes.append(Delete(doc.ref, doc.deletes[0][1], doc))
            self.forced.add(key)
            self.deleting.add(key)
        row = view.live(Kind.CUSTOMER, key)
        if row is None:
            if not doc.deletes:
                plan.done.append(doc)
            return
        if row.email and view.accepted_hash((Kind.GUEST, row.email)):
            guest = (Kind.GUEST, row.email)
            plan.deletes.append(Delete(guest, CustomerIdentity(None, row.email), None))
            self.retired.add(row.email)
        customer_doc = customer_document(row)
        digest = document_hash(customer_doc)
        if not doc.deletes and view.accepted_hash(doc.ref) == digest:
            plan.done.append(doc)
            return
        self._group_for(row, customer_doc).customer = Upsert(doc.ref, customer_doc, digest, doc)

    def _anonymized(self, doc: OwedDoc, anonymizer: Anonymizer) -> None:
        """The customer stays in Rfmcube, with its orders, but nothing identifies it."""
        stored = self.view.get(Kind.CUSTOMER, doc.ref[1])
        if stored is None:
            self.plan.done.append(doc)  # never seen: Rfmcube holds nothing of it
            return
        anonymous = anonymizer.document(stored.row)
        digest = document_hash(anonymous)
        if self.view.accepted_hash(doc.ref) == digest:
            self.plan.done.append(doc)
            return
        self.groups[("id", doc.ref[1])] = CustomerGroup(
            anonymous,
            Upsert(doc.ref, anonymous, digest, doc),
            customer_id=doc.ref[1],
            customer_email=anonymous["email"],
        )

    def _group_for(
        self, customer: MappedRow, document: dict[str, Any] | None = None
    ) -> CustomerGroup:
        """The customer's group; ``document`` its customer document, when built already."""
        slot = ("id", customer.key)
        group = self.groups.get(slot)
        if group is None:
            group = self.groups[slot] = CustomerGroup(
                customer_document(customer) if document is None else document,
                None,
                customer_id=customer.key,
                customer_email=customer.email,
            )
        return group

    def _guest_group(self, email: str) -> CustomerGroup:
        slot = ("email", email)
        group = self.groups.get(slot)
        if group is None:
            orders = [stored.row.fields for stored in self.view.guest_orders(email)]
            created = min((str(f["createdAt"]) for f in orders if f.get("createdAt")), default=None)
            updated = max((str(f["updatedAt"]) for f in orders if f.get("updatedAt")), default=None)
            group = self.groups[slot] = CustomerGroup(
                {"email": email, "createdAt": created, "updatedAt": updated},
                None,
                customer_email=email,
                guest=True,
            )
        return group

    # -- orders -------------------------------------------------------------------

    def _order(self, doc: OwedDoc) -> None:
        view, plan = self.view, self.plan
        stored = view.get(Kind.ORDER, doc.ref[1])
        if stored is None:
            plan.done.append(doc)  # items of an order never seen: nothing to send
            return
        order = stored.row
        if stored.deleted:
            if self.planner._mark_deleted is None:
                plan.done.append(doc)
                return
            order = self.planner._mark_deleted(order)

        owner: MappedRow | None = None  # the registered customer the order goes under
        if order.parent is not None:
            customer = view.get(Kind.CUSTOMER, order.parent)
            if customer is not None and customer.deleted:
                # Gone with its customer, once Rfmcube deleted that customer: until
                # then its records wait (a delete may be held back by an import).
                if order.parent in self.deleting or not self.delete_owed(order.parent):
                    plan.done.append(doc)
                else:
                    plan.deferred.append(doc)
                return
            if customer is None:
                if self.now - doc.since < self.planner._orphan_wait:
                    plan.deferred.append(doc)
                else:
                    plan.parked.append(doc)  # its customer's arrival sends it
                return
            owner = customer.row
        elif not order.email:
            plan.rejected.append((doc, f"order {order.key}: neither customer id nor email"))
            return
        else:
            owner = view.customer_by_email(order.email)

        if owner is not None and (
            owner.key in self.blocked
            or (owner.key not in self.deleting and self.delete_owed(owner.key))
        ):
            # Its customer is deleted first (later in this flush, or once an import
            # it waits for completed): sent now, the order would be deleted with it.
            plan.deferred.append(doc)
            return
        document = order_document(order, view.items_of(order.key))
        if owner is not None:
            identity = {"customerId": owner.key, "customerEmail": owner.email}
            forced = owner.key in self.forced or (
                order.parent is None and order.email in self.retired
            )
        else:
            identity = {"customerId": None, "customerEmail": order.email}
            forced = False
        digest = document_hash({**document, "__identity": identity})
        if not forced and view.accepted_hash(doc.ref) == digest:
            plan.done.append(doc)
            return
        group = (
            self._group_for(owner) if owner is not None else self._guest_group(order.email or "")
        )
        group.orders.append(Upsert(doc.ref, document, digest, doc))
