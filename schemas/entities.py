"""Shop rows after mapping: what the state store keeps and the planner joins.

The mapper (``consumer.changes.mapping``) turns a :class:`~schemas.debezium.ChangeEvent`
into an :class:`EntityChange` of one of three kinds. ``fields`` already holds
the Rfmcube field names (camelCase, nested dicts for ``delivery.province``)
and JSON-ready values: ISO-8601 ``...Z`` strings for timestamps, ``Decimal``
for money (serialized as an exact JSON number, never through float), plain
str/int/bool/dict/list otherwise. Only mapped and allow-listed columns ever
appear in ``fields``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from schemas.debezium import Position


class Kind(StrEnum):
    """What a row or a document is. ``GUEST`` is never a table: it names the
    customer Rfmcube holds for a guest checkout's email (keyed by that email)."""

    CUSTOMER = "customer"
    ORDER = "order"
    ITEM = "item"
    GUEST = "guest"


DocRef = tuple[Kind, str]
"""A document Rfmcube holds: (CUSTOMER, key), (ORDER, key) or (GUEST, email)."""


@dataclass(frozen=True, slots=True)
class CustomerIdentity:
    """Who to delete: ``delete_customer`` looks up by id first, then email."""

    id: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class Touch:
    """A document a change affects; ``deleted`` is set for a customer delete."""

    doc: DocRef
    deleted: CustomerIdentity | None = None


@dataclass(frozen=True, slots=True)
class MappedRow:
    """One current row of the shop, as Rfmcube will see it.

    ``key`` is the row's identity within its kind (the primary key as text;
    for customers and orders it is also the Rfmcube ``id``). ``parent`` is the
    relation: an order's customer id (None for a guest), an item's order id.
    ``email`` is a customer's email, or an order's guest email column.
    ``unavailable`` lists field paths (``"notes"``, ``"delivery.province"``)
    whose column Debezium did not read (unchanged TOAST): the stored value
    stands for them.
    """

    kind: Kind
    key: str
    fields: dict[str, Any]
    parent: str | None = None
    email: str | None = None
    unavailable: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class EntityChange:
    """A mapped change: an upsert (``row`` set) or a delete (``row`` None).

    For a delete, ``before`` holds what the record knew of the row (possibly
    only its key: then ``before`` is None and the store supplies the rest).
    """

    kind: Kind
    key: str
    position: Position
    row: MappedRow | None
    before: MappedRow | None = None
    ts_ms: int | None = None

    @property
    def is_delete(self) -> bool:
        return self.row is None
