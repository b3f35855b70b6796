"""Packing a plan into request bodies: pure, no I/O.

Requests are the scarce resource (60 a minute), so everything a flush holds
goes out in as few requests as the byte limit allows: customer deletes one by
one (the API has no bulk delete), then either one merge (a single registered
customer's document) or imports packed below ``max_request_bytes``
(:class:`consumer.delivery.sender.Dispatch`). Each customer is serialized once into a
:class:`Part`; an import body is a concatenation of parts, so a 416 split
re-packs bytes instead of serializing again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from consumer.delivery.planner import CustomerGroup, Delete, Plan
from consumer.state.obligations import OwedDoc
from schemas.entities import DocRef, Kind
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
    "Carried",
    "Part",
    "delete_body",
    "import_body",
    "merge_body",
    "part_of",
    "single_merge",
    "with_orders",
]


@dataclass(frozen=True, slots=True)
class Carried:
    """A document an import carries, without the document: what settling it needs."""

    ref: DocRef
    hash: str
    owed: OwedDoc


@dataclass(frozen=True, slots=True)
class Part:
    """One customer of an import, serialized once, and what it carries."""

    body: bytes
    upserts: tuple[Carried, ...]
    container: DocRef  # the customer document Rfmcube holds for it
    container_hash: str | None  # a guest's container: its hash; else None


def part_of(group: CustomerGroup) -> Part:
    """A packed import holds its parts until it is answered: up to max_request_bytes
    of them. So a part keeps its bytes, not its documents (several times their size
    as Python objects), and bytes of their exact size: orjson's output keeps its
    buffer's spare room (2 to 13 times the length here), a copy does not."""
    serialized = dumps(import_customer(group.customer_doc, [o.doc for o in group.orders]))
    container_hash = document_hash(group.customer_doc) if group.guest else None
    carried = tuple(Carried(u.ref, u.hash, u.owed) for u in group.upserts)
    return Part(bytes(memoryview(serialized)), carried, group.container_ref, container_hash)


def with_orders(part: Part, orders: Sequence[Carried]) -> Part:
    """The part with only these of its orders (the customer as it was): to find which
    document of a customer the API refuses. Read back from its bytes, numbers exact."""
    customer = json.loads(part.body, parse_float=Decimal)
    carried = [c for c in part.upserts if c.ref[0] is Kind.ORDER]
    keep = {c.ref for c in orders}
    kept = [doc for doc, c in zip(customer.pop("orders"), carried, strict=True) if c.ref in keep]
    others = tuple(c for c in part.upserts if c.ref[0] is not Kind.ORDER)
    return replace(
        part,
        body=dumps(import_customer(customer, kept)),
        upserts=others + tuple(c for c in carried if c.ref in keep),
    )


def import_body(parts: Sequence[Part], *, trigger_integrations: bool) -> bytes:
    return import_body_bytes([p.body for p in parts], trigger_integrations=trigger_integrations)


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
