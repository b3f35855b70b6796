"""Packing a plan into request bodies: pure, no I/O.

Requests are the scarce resource (60 a minute), so everything a flush holds
goes out in as few requests as the byte limit allows: customer deletes one by
one (the API has no bulk delete), then either one merge (a single registered
customer's document) or imports packed below ``max_request_bytes``. Each
customer is serialized once; an import body is a concatenation of them, so a
416 split re-packs bytes instead of serializing again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consumer.planner import CustomerGroup, Delete, Plan
from schemas.rfmcube import (
    delete_customer_body,
    dumps,
    import_body_bytes,
    import_customer,
    merge_customer_body,
    merge_order_body,
)

__all__ = [
    "ImportParts",
    "delete_body",
    "import_parts",
    "merge_body",
    "pack",
    "single_merge",
]


@dataclass(frozen=True, slots=True)
class ImportParts:
    """The customers of a flush, each serialized once, and how to wrap them."""

    groups: Sequence[CustomerGroup]
    parts: Sequence[bytes]
    trigger_integrations: bool

    def body(self, chunk: Sequence[int]) -> bytes:
        return import_body_bytes(
            [self.parts[i] for i in chunk], trigger_integrations=self.trigger_integrations
        )


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


def import_parts(groups: Sequence[CustomerGroup], *, trigger_integrations: bool) -> ImportParts:
    parts = [dumps(import_customer(g.customer_doc, [o.doc for o in g.orders])) for g in groups]
    return ImportParts(groups, parts, trigger_integrations)


def pack(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Indexes of consecutive parts, each run's bytes (with commas) within ``budget``.
    A part larger than the budget goes alone (the API will say 416 if it must)."""
    chunks: list[list[int]] = []
    chunk: list[int] = []
    size = 0
    for index, part in enumerate(sizes):
        if chunk and size + part + 1 > budget:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(index)
        size += part + 1
    if chunk:
        chunks.append(chunk)
    return chunks
