"""A validated :class:`MappingFile` compiled into plain per-table rules for the hot path.

Checks that need the whole file happen here and raise :class:`ConfigError`
with the key path: Rfmcube's required fields mapped, no field fed twice or
nested under another field, reserved document keys left alone, ``id`` fed by
a key column, distinct topics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from consumer.changes.mapping.model import (
    ColumnSpec,
    CustomersEntity,
    ItemsEntity,
    MappingFile,
    OrdersEntity,
    _Entity,
)
from consumer.changes.mapping.values import (
    Converter,
    to_decimal,
    to_email,
    to_json_value,
    to_text,
    to_timestamp,
)
from consumer.errors import ConfigError
from schemas.entities import Kind

REQUIRED_FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.CUSTOMER: ("email", "createdAt", "updatedAt"),
    Kind.ORDER: ("id", "createdAt", "updatedAt", "amount"),
    Kind.ITEM: (),
}
# Keys the documents themselves put there: no column may feed them.
RESERVED_FIELDS: dict[Kind, frozenset[str]] = {
    Kind.CUSTOMER: frozenset({"orders"}),
    Kind.ORDER: frozenset({"items", "customerEmail", "customerId"}),
    Kind.ITEM: frozenset(),
}
_TIMESTAMP_HINTS = frozenset({"epoch_millis", "epoch_micros", "epoch_nanos", "zoned_timestamp"})


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One column → one (possibly nested) Rfmcube field."""

    column: str
    path: tuple[str, ...]
    convert: Converter
    mandatory: bool = False
    omit_if_null: bool = False  # optional Rfmcube fields (status): absent rather than null
    hint: str | None = None

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class TableRules:
    kind: Kind
    topic: str
    key: tuple[str, ...]
    fields: tuple[FieldRule, ...]
    email_column: str | None  # customer: its email; order: the guest email column
    parent_column: str | None  # order: customer id; item: order id
    parent_required: bool

    @property
    def hints(self) -> dict[str, str]:
        return {rule.column: rule.hint for rule in self.fields if rule.hint is not None}


@dataclass(frozen=True, slots=True)
class OrderDeletePolicy:
    policy: Literal["mark", "ignore"]
    status: str
    status_label: str | None


def compile_rules(
    spec: MappingFile, source: str | None
) -> tuple[dict[str, TableRules], OrderDeletePolicy]:
    entities = spec.entities
    tables: list[TableRules] = [
        _table(Kind.CUSTOMER, "entities.customers", entities.customers, source),
        _table(Kind.ORDER, "entities.orders", entities.orders, source),
    ]
    if entities.items is not None:
        tables.append(_table(Kind.ITEM, "entities.items", entities.items, source))
    by_topic: dict[str, TableRules] = {}
    for table in tables:
        other = by_topic.get(table.topic)
        if other is not None:
            raise ConfigError(
                f"entities.{_ENTITY_NAMES[table.kind]}.topic",
                f"topic {table.topic!r} is already the {_ENTITY_NAMES[other.kind]} topic",
                source=source,
            )
        by_topic[table.topic] = table
    descriptors = {field.field for field in entities.customers.descriptors.values()}
    for index, name in enumerate(spec.customer_delete.keep):
        if name not in descriptors:
            raise ConfigError(
                f"customer_delete.keep.{index}",
                f"{name!r} is not a descriptor of customers (one of {sorted(descriptors)})",
                source=source,
            )
    delete = spec.order_delete
    return by_topic, OrderDeletePolicy(delete.policy, delete.status, delete.status_label)


_ENTITY_NAMES = {Kind.CUSTOMER: "customers", Kind.ORDER: "orders", Kind.ITEM: "items"}


def _table(kind: Kind, where: str, entity: _Entity, source: str | None) -> TableRules:
    def refuse(path: str, problem: str) -> ConfigError:
        return ConfigError(path, problem, source=source)

    # (column, spec, key path of its declaration), in document order
    declared: list[tuple[str, ColumnSpec, str]] = []
    if isinstance(entity, CustomersEntity):
        declared.append((entity.email, ColumnSpec(field="email"), f"{where}.email"))
    if isinstance(entity, OrdersEntity):
        if entity.customer_id is None and entity.customer_email is None:
            raise refuse(
                f"{where}.customer_id",
                "an order needs customer_id or customer_email to name its customer",
            )
        if entity.status is not None:
            declared.append((entity.status, ColumnSpec(field="status"), f"{where}.status"))
        if entity.status_label is not None:
            declared.append(
                (entity.status_label, ColumnSpec(field="statusLabel"), f"{where}.status_label")
            )
    for group, table in (("columns", entity.columns), ("descriptors", entity.descriptors)):
        for column, column_spec in table.items():
            declared.append((column, column_spec, f"{where}.{group}.{column}"))

    rules: list[FieldRule] = []
    column_at: dict[str, tuple[str, str]] = {}  # column → (field, declared at)
    field_at: dict[tuple[str, ...], str] = {}  # field path → declared at
    for column, column_spec, at in declared:
        path = tuple(column_spec.field.split("."))
        previous = column_at.get(column)
        if previous is not None:
            if previous[0] == column_spec.field:
                # "email: email" under columns as well as the role: the same thing, said twice.
                if column_spec.hint is not None:
                    index = next(i for i, r in enumerate(rules) if r.column == column)
                    rules[index] = _rule(kind, column, path, column_spec.hint)
                continue
            raise refuse(at, f"column {column!r} is already mapped at {previous[1]}")
        if path[0] in RESERVED_FIELDS[kind]:
            raise refuse(at, f"field {path[0]!r} is reserved: the document itself fills it in")
        for other_path, other_at in field_at.items():
            shorter = min(len(path), len(other_path))
            if path[:shorter] == other_path[:shorter]:
                raise refuse(
                    at,
                    f"field {column_spec.field!r} is already fed at {other_at}"
                    if path == other_path
                    else f"field {column_spec.field!r} overlaps the field"
                    f" {'.'.join(other_path)!r} fed at {other_at}",
                )
        if column_spec.field == "id" and kind is not Kind.ITEM and column not in entity.key:
            raise refuse(at, f"field 'id' must be fed by a key column (key: {list(entity.key)})")
        column_at[column] = (column_spec.field, at)
        field_at[path] = at
        rules.append(_rule(kind, column, path, column_spec.hint))

    fed = {rule.dotted for rule in rules}
    missing = [name for name in REQUIRED_FIELDS[kind] if name not in fed]
    if missing:
        needs = ", ".join(REQUIRED_FIELDS[kind])
        raise refuse(
            f"{where}.columns",
            f"no column feeds the required field {missing[0]!r} (a {kind.value} needs {needs})",
        )

    email: str | None = None
    parent_column: str | None = None
    if isinstance(entity, CustomersEntity):
        email = entity.email
    elif isinstance(entity, OrdersEntity):
        email, parent_column = entity.customer_email, entity.customer_id
    elif isinstance(entity, ItemsEntity):
        parent_column = entity.order_id
    return TableRules(
        kind=kind,
        topic=entity.topic,
        key=entity.key,
        fields=tuple(rules),
        email_column=email,
        parent_column=parent_column,
        parent_required=kind is Kind.ITEM,
    )


def _rule(kind: Kind, column: str, path: tuple[str, ...], hint: str | None) -> FieldRule:
    field = ".".join(path)
    convert: Converter = to_json_value
    mandatory = field in REQUIRED_FIELDS[kind]
    omit_if_null = False
    if field == "email" and kind is Kind.CUSTOMER:
        convert = to_email
    elif field == "id" and kind is not Kind.ITEM:
        convert, mandatory = to_text, True
    elif field in ("createdAt", "updatedAt") and kind is not Kind.ITEM:
        convert = to_timestamp
    elif field == "amount" and kind is Kind.ORDER:
        convert = to_decimal
    elif field in ("status", "statusLabel") and kind is Kind.ORDER:
        convert, omit_if_null = to_text, True
    elif hint is not None and hint.startswith("decimal"):
        convert = to_decimal  # money and quantities stay exact, even from a float
    elif hint in _TIMESTAMP_HINTS:
        convert = to_timestamp
    return FieldRule(column, path, convert, mandatory, omit_if_null, hint)
