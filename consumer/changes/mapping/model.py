"""The shape of a mapping file, validated with pydantic (strict: unknown keys refused).

Only the *shape* is checked here; what needs the whole file at once (required
Rfmcube fields mapped, no field fed twice, distinct topics) is checked when
the file is compiled into rules (:mod:`consumer.changes.mapping.rules`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from consumer.changes.mapping.values import check_hint

_FIELD_PATH = re.compile(r"[^.\s]+(\.[^.\s]+)*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    """Where a column goes: ``amount: amount`` or ``amount: {field: amount, type: decimal(2)}``."""

    field: str
    hint: str | None = Field(default=None, alias="type")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"field": data}
        if not isinstance(data, dict):
            raise ValueError(f"expected a field name or {{field: ..., type: ...}}, got {data!r}")
        return data

    @field_validator("field")
    @classmethod
    def _dotted_path(cls, value: str) -> str:
        if not _FIELD_PATH.fullmatch(value):
            raise ValueError(
                f"invalid field name {value!r}: use a name or a dotted path (delivery.province)"
            )
        return value

    @field_validator("hint")
    @classmethod
    def _known_hint(cls, value: str | None) -> str | None:
        return None if value is None else check_hint(value)


def _descriptor_table(data: Any) -> Any:
    """``[first_name, {last_name: lastName}, phone]`` (or a mapping) → ``{column: spec}``."""
    if data is None:
        return {}
    if isinstance(data, dict):
        return {column: column if spec is None else spec for column, spec in data.items()}
    if not isinstance(data, list):
        raise ValueError(f"expected a list of column names, got {data!r}")
    table: dict[str, Any] = {}
    for entry in data:
        if isinstance(entry, str):
            pairs: list[tuple[Any, Any]] = [(entry, entry)]
        elif isinstance(entry, dict) and len(entry) == 1:
            pairs = [(column, column if spec is None else spec) for column, spec in entry.items()]
        else:
            raise ValueError(f"expected a column name or {{column: field}}, got {entry!r}")
        for column, spec in pairs:
            if column in table:
                raise ValueError(f"column {column!r} is listed twice")
            table[column] = spec
    return table


class _Entity(_Strict):
    topic: str = Field(min_length=1)
    key: tuple[str, ...] = ("id",)
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)
    descriptors: dict[str, ColumnSpec] = Field(default_factory=dict)

    @field_validator("key", mode="before")
    @classmethod
    def _key_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("key")
    @classmethod
    def _key_columns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("a key needs at least one column")
        if len(set(value)) != len(value):
            raise ValueError(f"a key column is listed twice in {list(value)}")
        return value

    @field_validator("descriptors", mode="before")
    @classmethod
    def _descriptor_list(cls, value: Any) -> Any:
        return _descriptor_table(value)


class CustomersEntity(_Entity):
    email: str = "email"


class OrdersEntity(_Entity):
    customer_id: str | None = "customer_id"
    customer_email: str | None = None
    status: str | None = None
    status_label: str | None = None


class ItemsEntity(_Entity):
    order_id: str = "order_id"


class Entities(_Strict):
    customers: CustomersEntity
    orders: OrdersEntity
    items: ItemsEntity | None = None


class OrderDelete(_Strict):
    """``{policy: mark, status: deleted}``: re-send a deleted order with that status;
    ``{policy: ignore}``: leave it in Rfmcube as it was (the API cannot delete an order)."""

    policy: Literal["mark", "ignore"] = "mark"
    status: str = Field(default="deleted", min_length=1)
    status_label: str | None = None


class CustomerDelete(_Strict):
    """``{policy: delete}`` (the default): ``delete_customer`` (Rfmcube deletes the
    customer and its orders); ``{policy: anonymize, email_domain: ..., keep: [...]}``:
    the customer stays with its orders, under a keyed hash of its email at
    ``email_domain``, without its names and every descriptor not in ``keep``
    (Rfmcube field names). The hash's key is never in this file: it comes from
    ``$RFMCUBE_ANONYMIZE_KEY`` or ``privacy.anonymize_key_file``."""

    policy: Literal["delete", "anonymize"] = "delete"
    email_domain: str = Field(default="anonymized.invalid", pattern=r"^[A-Za-z0-9.-]+\.[A-Za-z]+$")
    keep: tuple[str, ...] = ()


class MappingFile(_Strict):
    entities: Entities
    order_delete: OrderDelete = Field(default_factory=OrderDelete)
    customer_delete: CustomerDelete = Field(default_factory=CustomerDelete)
