"""The mapper: a :class:`ChangeEvent` of a mapped topic → an :class:`EntityChange`.

Plain code on the hot path: the mapping file is validated once
(:mod:`.loading`), compiled into per-table rules (:mod:`.rules`), and each
event is then mapped with dictionary lookups and small conversion functions.

Only columns the mapping names reach ``fields``: a ``password_hash`` column in
the row is never read. A column holding :data:`UNAVAILABLE` (unchanged TOAST)
is listed in ``MappedRow.unavailable`` by its field path, never put in
``fields``; :func:`fill_unavailable` completes such a row from the stored one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from consumer.changes.mapping.loading import parse, read_text
from consumer.changes.mapping.model import CustomerDelete, MappingFile
from consumer.changes.mapping.rules import OrderDeletePolicy, TableRules, compile_rules
from consumer.changes.mapping.values import Reject, key_text, to_email, to_text
from consumer.errors import BadRecord
from schemas.debezium import UNAVAILABLE, ChangeEvent, Position, Row
from schemas.entities import EntityChange, Kind, MappedRow

KEY_SEPARATOR = "|"
# Field paths of MappedRow.email when it could not be read (the email is not a field
# of an order document, so it gets the name merge_order gives it).
UNAVAILABLE_EMAIL = {Kind.CUSTOMER: "email", Kind.ORDER: "customerEmail"}


class Mapping:
    """A loaded mapping file: which topic is which entity, which column feeds which field."""

    __slots__ = ("_tables", "customer_delete", "model", "order_delete", "source")

    def __init__(
        self,
        tables: dict[str, TableRules],
        order_delete: OrderDeletePolicy,
        source: str,
        model: MappingFile | None = None,
    ) -> None:
        self._tables = tables
        self.order_delete = order_delete
        self.source = source
        self.model = model
        self.customer_delete = model.customer_delete if model is not None else CustomerDelete()

    @classmethod
    def load(cls, path: str | Path | None = None) -> Mapping:
        """Reads and validates a mapping file (None: the shipped default); raises ConfigError."""
        text, source = read_text(path)
        return cls.from_text(text, source=source)

    @classmethod
    def from_text(cls, text: str, *, source: str = "<mapping>") -> Mapping:
        model = parse(text, source)
        tables, order_delete = compile_rules(model, source)
        return cls(tables, order_delete, source, model)

    def describe(self) -> dict[str, Any]:
        """What the mapping does, as plain data (consumer/changes/mapping/fingerprint.py)."""
        from consumer.changes.mapping.fingerprint import describe

        assert self.model is not None
        return describe(self.model)

    def __repr__(self) -> str:
        return f"Mapping({self.source!r}, topics={self.topics()!r})"

    # -- what the pipeline asks before reading ------------------------------------------

    def topics(self) -> list[str]:
        return list(self._tables)

    def kind_of(self, topic: str) -> Kind | None:
        table = self._tables.get(topic)
        return None if table is None else table.kind

    def topic_of(self, kind: Kind) -> str | None:
        return next((t.topic for t in self._tables.values() if t.kind is kind), None)

    def column_of(self, topic: str, path: Sequence[str]) -> str | None:
        """The column that feeds a field path, or a path inside that field's value
        (``("delivery", "province")`` → ``delivery_province``); None if none does."""
        table = self._tables.get(topic)
        if table is None:
            return None
        for rule in table.fields:
            if tuple(path[: len(rule.path)]) == rule.path:
                return rule.column
        return None

    def hints_for(self, topic: str) -> dict[str, str]:
        """Column → type hint (``decimal(2)``, ``zoned_timestamp``) for schemaless records."""
        table = self._tables.get(topic)
        return {} if table is None else table.hints

    # -- per record ---------------------------------------------------------------------

    def map_event(self, event: ChangeEvent) -> EntityChange | None:
        """The mapped change, or None when the topic is not mapped; raises BadRecord."""
        table = self._tables.get(event.position.topic)
        if table is None:
            return None
        ts_ms = event.source_ts_ms if event.source_ts_ms is not None else event.ts_ms
        position = event.position
        if event.is_delete or event.tombstone:
            return _map_delete(table, event, ts_ms)
        if event.after is None:
            raise BadRecord(position, f"op {event.op.value!r} without an after image")
        row = map_row(table, event.after, position)
        return EntityChange(table.kind, row.key, position, row, None, ts_ms)

    def mark_deleted(self, order: MappedRow) -> MappedRow:
        """The order as sent when it was deleted in the shop (policy ``mark``)."""
        fields = dict(order.fields)
        fields["status"] = self.order_delete.status
        if self.order_delete.status_label is not None:
            fields["statusLabel"] = self.order_delete.status_label
        unavailable = order.unavailable - {"status", "statusLabel"}
        return replace(order, fields=fields, unavailable=unavailable)


def _a(kind: Kind) -> str:
    return f"an {kind.value}" if kind.value[0] in "aeiou" else f"a {kind.value}"


def key_of(table: TableRules, values: Row | None) -> str | None:
    """The primary key as text (``42``, ``7|3``), or None if a key column is absent."""
    if not values:
        return None
    parts: list[str] = []
    for column in table.key:
        value = values.get(column)
        if value is None or value is UNAVAILABLE:
            return None
        parts.append(key_text(value))
    return KEY_SEPARATOR.join(parts)


def map_row(table: TableRules, values: Row, position: Position) -> MappedRow:
    """One row image → MappedRow; raises BadRecord naming the column at fault."""
    kind = table.kind
    try:
        key = key_of(table, values)
    except Reject as exc:
        raise BadRecord(position, f"key {list(table.key)}: {exc}") from None
    if key is None:
        raise BadRecord(position, f"key column missing or null (key: {list(table.key)})")

    fields: dict[str, Any] = {}
    unavailable: list[str] = []
    for rule in table.fields:
        column = rule.column
        if column not in values:
            if rule.mandatory:
                raise BadRecord(position, f"column {column}: mandatory for {_a(kind)} but absent")
            continue
        value = values[column]
        if value is UNAVAILABLE:
            unavailable.append(rule.dotted)
            continue
        if value is None:
            if rule.mandatory:
                raise BadRecord(position, f"column {column}: mandatory for {_a(kind)} but null")
            if rule.omit_if_null:
                continue
        else:
            try:
                value = rule.convert(value)
            except Reject as exc:
                raise BadRecord(position, f"column {column}: {exc}") from None
            except Exception as exc:  # not meant to happen: the class only, never the value
                raise BadRecord(
                    position, f"column {column}: cannot be mapped ({type(exc).__name__})"
                ) from None
        path = rule.path
        if len(path) == 1:
            fields[path[0]] = value
        else:
            _put_nested(fields, path, value)

    email = _email(table, values, fields, unavailable, position)
    parent = _parent(table, values, position)
    guest_email_unknown = UNAVAILABLE_EMAIL[Kind.ORDER] in unavailable
    if kind is Kind.ORDER and parent is None and email is None and not guest_email_unknown:
        columns = " and ".join(c for c in (table.parent_column, table.email_column) if c)
        raise BadRecord(position, f"order without customer: {columns} null")
    return MappedRow(kind, key, fields, parent, email, frozenset(unavailable))


def _put_nested(fields: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = fields
    for name in path[:-1]:
        node = node.setdefault(name, {})
    node[path[-1]] = value


def _email(
    table: TableRules,
    values: Row,
    fields: dict[str, Any],
    unavailable: list[str],
    position: Position,
) -> str | None:
    if table.kind is Kind.CUSTOMER:
        email = fields.get("email")
        return email if isinstance(email, str) else None
    if table.email_column is None:
        return None
    value = values.get(table.email_column)
    if value is UNAVAILABLE:
        unavailable.append(UNAVAILABLE_EMAIL[table.kind])
        return None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # a registered customer's order: no guest email
    try:
        return to_email(value)
    except Reject as exc:
        raise BadRecord(position, f"column {table.email_column}: {exc}") from None


def _parent(table: TableRules, values: Row, position: Position) -> str | None:
    column = table.parent_column
    if column is None:
        return None
    value = values.get(column)
    if value is None or value is UNAVAILABLE:
        if table.parent_required:
            raise BadRecord(position, f"column {column}: {_a(table.kind)} needs it but null")
        return None
    try:
        return to_text(value)
    except Reject as exc:
        raise BadRecord(position, f"column {column}: {exc}") from None


def _map_delete(table: TableRules, event: ChangeEvent, ts_ms: int | None) -> EntityChange:
    position = event.position
    try:
        key = key_of(table, event.key) or key_of(table, event.before)
    except Reject as exc:
        raise BadRecord(position, f"key {list(table.key)}: {exc}") from None
    if key is None:
        raise BadRecord(
            position,
            f"delete without a key: neither the record key nor the before image"
            f" holds {list(table.key)}",
        )
    before: MappedRow | None = None
    if event.before is not None and _has_payload(table, event.before):
        try:
            before = map_row(table, event.before, position)
        except BadRecord:
            before = None  # an incomplete before image: the store knows the row
    return EntityChange(table.kind, key, position, None, before, ts_ms)


def _has_payload(table: TableRules, values: Row) -> bool:
    """False for a key-only before image (REPLICA IDENTITY DEFAULT: other columns null)."""
    return any(
        value is not None and value is not UNAVAILABLE
        for column, value in values.items()
        if column not in table.key
    )


def fill_unavailable(row: MappedRow, stored: MappedRow | None) -> MappedRow:
    """``row`` with its unavailable fields taken from ``stored`` (the last known row).

    Paths the stored row does not have either stay in ``unavailable``.
    """
    if not row.unavailable or stored is None:
        return row
    fields = dict(row.fields)
    email = row.email
    still: set[str] = set()
    for dotted in row.unavailable:
        if dotted == UNAVAILABLE_EMAIL.get(row.kind):
            email = stored.email if email is None else email
            if row.kind is Kind.ORDER:
                continue
        path = tuple(dotted.split("."))
        found, value = _get_nested(stored.fields, path)
        if not found:
            still.add(dotted)
            continue
        node = fields
        for name in path[:-1]:
            child = node.get(name)
            node[name] = dict(child) if isinstance(child, dict) else {}
            node = node[name]
        node[path[-1]] = value
    return replace(row, fields=fields, email=email, unavailable=frozenset(still))


def _get_nested(fields: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = fields
    for name in path:
        if not isinstance(node, dict) or name not in node:
            return False, None
        node = node[name]
    return True, node
