"""Packing a plan into request bodies: pure, no I/O.

Requests are the scarce resource (60 a minute), so everything a flush holds
goes out in as few requests as the byte limit allows: customer deletes one by
one (the API has no bulk delete), then either one merge (a single registered
customer's document) or imports packed below ``max_request_bytes``
(:class:`consumer.delivery.sender.Dispatch`). Each customer is serialized once
into a :class:`Draft`: its bytes and what it carries (the rows settling needs,
staged in the store as it is packed, :mod:`consumer.state.settling`). An import
body is a concatenation of drafts' bytes, so a 416 split re-packs bytes instead
of serializing again. A plan is packed where it is planned: in the service, or
in a worker process (:mod:`consumer.delivery.workers`), which hands back the
bytes and the rows, never the documents.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from consumer.delivery.planner import CustomerGroup, Delete, Plan
from consumer.state.obligations import OwedDoc, StagedRow
from schemas.entities import CustomerIdentity, DocRef, Kind
from schemas.rfmcube import (
    delete_customer_body,
    document_hash,
    dumps,
    import_body_bytes,
    import_customer,
    merge_customer_body,
    merge_order_body,
)

__all__ = [
    "Draft",
    "PackedPlan",
    "delete_body",
    "draft_of",
    "import_envelope",
    "merge_body",
    "owed_of",
    "pack",
    "single_merge",
    "with_orders",
]


@dataclass(frozen=True, slots=True)
class Draft:
    """One customer of an import, serialized once, and what it carries as the store
    stages it (:data:`~consumer.state.settling.StagedRow`): its container (the
    customer document Rfmcube holds for it) first, then its upserts."""

    body: bytes
    carried: tuple[StagedRow, ...]
    documents: int  # the owed documents it carries (its container apart)


@dataclass(slots=True)
class PackedPlan:
    """A plan as the sender needs it: deletes, drafts, and what needs no request."""

    deletes: list[Delete] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)
    merge: CustomerGroup | None = None  # a single mergeable document (planned in-process)
    done: list[OwedDoc] = field(default_factory=list)
    parked: list[OwedDoc] = field(default_factory=list)
    deferred: list[OwedDoc] = field(default_factory=list)
    rejected: list[tuple[OwedDoc, str]] = field(default_factory=list)
    hurry: set[str] = field(default_factory=set)

    @property
    def upserted(self) -> set[DocRef]:
        """The owed documents its drafts carry."""
        return {
            (_KIND[kind], key)
            for draft in self.drafts
            for kind, key, _, seq, _, _ in draft.carried
            if seq is not None
        }

    @property
    def sends(self) -> bool:
        return bool(self.deletes or self.drafts)


def pack(plan: Plan) -> PackedPlan:
    return PackedPlan(
        deletes=plan.deletes,
        drafts=[draft_of(group) for group in plan.groups],
        merge=single_merge(plan),
        done=plan.done,
        parked=plan.parked,
        deferred=plan.deferred,
        rejected=plan.rejected,
        hurry=plan.hurry,
    )


def draft_of(group: CustomerGroup) -> Draft:
    """A packed import holds its parts until it is answered: up to max_request_bytes
    of them. So a draft keeps bytes, not documents (several times their size as
    Python objects), and bytes of their exact size: orjson's output keeps its
    buffer's spare room (2 to 13 times the length here), a copy does not."""
    serialized = dumps(import_customer(group.customer_doc, [o.doc for o in group.orders]))
    kind, key = group.container_ref
    container_hash = document_hash(group.customer_doc) if group.guest else None
    carried: tuple[StagedRow, ...] = (
        (kind.value, key, container_hash, None, 0, None),
        *(
            (u.ref[0].value, u.ref[1], u.hash, u.owed.seq, u.owed.delete_seq, u.owed.source_ms)
            for u in group.upserts
        ),
    )
    return Draft(bytes(memoryview(serialized)), carried, len(group.upserts))


def is_order(row: StagedRow) -> bool:
    """An order the draft carries as owed (not a container)."""
    return row[0] == Kind.ORDER.value and row[3] is not None


def with_orders(draft: Draft, orders: Sequence[StagedRow]) -> Draft:
    """The draft with only these of its orders (the customer as it was): to find which
    document of a customer the API refuses. Read back from its bytes, numbers exact."""
    customer = json.loads(draft.body, parse_float=Decimal)
    carried = [c for c in draft.carried if is_order(c)]
    keep = {c[1] for c in orders}
    kept = [doc for doc, c in zip(customer.pop("orders"), carried, strict=True) if c[1] in keep]
    others = tuple(c for c in draft.carried if not is_order(c))
    rows = others + tuple(c for c in carried if c[1] in keep)
    return Draft(
        dumps(import_customer(customer, kept)), rows, sum(1 for c in rows if c[3] is not None)
    )


_NOBODY = CustomerIdentity(None, None)
_KIND = {kind.value: kind for kind in Kind}


def owed_of(row: StagedRow) -> OwedDoc:
    """The obligation a staged document met (for settling it without an import: a
    dead letter); its deletes only by their last number, which is all settling reads."""
    kind, key, _, seq, delete_seq, source_ms = row
    assert seq is not None
    deletes = [(delete_seq, _NOBODY)] if delete_seq else []
    return OwedDoc((_KIND[kind], key), seq, 0.0, deletes, source_ms)


def import_envelope(*, trigger_integrations: bool) -> tuple[bytes, bytes]:
    """An ``/import`` body's bytes before its first customer and after its last."""
    empty = import_body_bytes([], trigger_integrations=trigger_integrations)
    return empty[: -len(b"]}")], b"]}"


def delete_body(delete: Delete) -> bytes:
    return dumps(delete_customer_body(id=delete.identity.id, email=delete.identity.email))


def single_merge(plan: Plan) -> CustomerGroup | None:
    """The group to send as a merge: a single document of a registered customer.
    A guest's container is rebuilt from all its orders, which only an import writes."""
    if plan.upsert_count() == 1 and not plan.groups[0].guest:
        return plan.groups[0]
    return None


def merge_body(group: CustomerGroup, *, trigger_integrations: bool) -> tuple[str, bytes]:
    """``(call, body)`` of the merge that sends the group's single document."""
    (upsert,) = group.upserts
    if group.customer is not None:
        body = merge_customer_body(upsert.doc, trigger_integrations=trigger_integrations)
        return "merge_customer", dumps(body)
    order = merge_order_body(
        upsert.doc,
        customer_email=group.customer_email,
        customer_id=group.customer_id,
        trigger_integrations=trigger_integrations,
    )
    return "merge_order", dumps(order)
