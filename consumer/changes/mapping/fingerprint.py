"""What a mapping does, as plain data: to notice, and say, that it changed.

The store keeps the description of the mapping its rows were built with. At
start-up the service compares it with the mapping it runs: when the rows
would be mapped differently (a descriptor added, removed or renamed, a type,
a key, a topic), the rows are rebuilt from the topics, since the store keeps
mapped fields, not the shop's columns; when only a policy changed, the rows
stand. Either way every document is compared with what Rfmcube holds and
exactly those whose content changed are sent again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from consumer.changes.mapping.model import MappingFile

__all__ = ["changes", "describe", "fingerprint", "rows_differ"]

_ENTITIES = ("customers", "orders", "items")


def describe(model: MappingFile) -> dict[str, Any]:
    """``{"rows": {entity: ...}, "policies": {...}}``, JSON-ready and canonical."""
    rows: dict[str, Any] = {}
    for name in _ENTITIES:
        entity = getattr(model.entities, name)
        if entity is None:
            continue
        dumped = entity.model_dump(mode="json", by_alias=True)
        specs = {**dumped.pop("columns"), **dumped.pop("descriptors")}
        fields = {column: spec["field"] for column, spec in specs.items()}
        hints = {column: spec["type"] for column, spec in specs.items() if spec.get("type")}
        rows[name] = {**dumped, "fields": fields, "hints": hints}
    policies = {
        "order_delete": model.order_delete.model_dump(mode="json"),
        "customer_delete": model.customer_delete.model_dump(mode="json"),
    }
    return {"rows": rows, "policies": policies}


def fingerprint(description: dict[str, Any]) -> str:
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def rows_differ(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether rows would be mapped differently: the store must be rebuilt."""
    return bool(old.get("rows") != new.get("rows"))


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed, for a person: ``customers: column notes added as notes``."""
    lines: list[str] = []
    old_rows, new_rows = old.get("rows", {}), new.get("rows", {})
    for entity in _ENTITIES:
        before, after = old_rows.get(entity), new_rows.get(entity)
        if before == after:
            continue
        if before is None or after is None:
            lines.append(f"{entity}: {'added' if before is None else 'removed'}")
            continue
        fields_before, fields_after = before["fields"], after["fields"]
        for column in sorted(fields_after.keys() - fields_before.keys()):
            lines.append(f"{entity}: column {column} added as {fields_after[column]}")
        for column in sorted(fields_before.keys() - fields_after.keys()):
            lines.append(f"{entity}: column {column} ({fields_before[column]}) removed")
        for column in sorted(fields_before.keys() & fields_after.keys()):
            if fields_before[column] != fields_after[column]:
                lines.append(
                    f"{entity}: column {column} renamed"
                    f" {fields_before[column]} -> {fields_after[column]}"
                )
        for key in sorted((before.keys() | after.keys()) - {"fields"}):
            if before.get(key) != after.get(key):
                lines.append(f"{entity}: {key} changed")
    for policy, value in sorted(new.get("policies", {}).items()):
        if old.get("policies", {}).get(policy) != value:
            lines.append(f"{policy} changed to {value}")
    return lines
