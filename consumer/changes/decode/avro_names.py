"""An Avro schema's named types, and the shapes no reader survives.

Avro refers to a record, an enum or a fixed by name once it is defined
(Debezium's ``after`` is ``["null", "Value"]``, the ``Value`` of ``before``),
in the namespace of the type around it: :class:`Names` resolves such names.
It also refuses arrays whose items take no bytes: a hostile body declaring
2^62 of them would keep a reader looping without ever reaching its end.
"""

from __future__ import annotations

from typing import Any

from .logical import ValueDecodeError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})


def fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


class Names:
    """The schema's named types by full name, and each named type's namespace."""

    def __init__(self, root: Any) -> None:
        self.types: dict[str, dict[str, Any]] = {}
        self.namespace: dict[int, str] = {}
        self._collect(root, "")
        self._widths: dict[int, int] = {}
        self._check_arrays(root, "", set())

    def _collect(self, schema: Any, namespace: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)
            return
        if not isinstance(schema, dict):
            return
        kind = schema.get("type")
        if isinstance(kind, dict | list):
            self._collect(kind, namespace)
            return
        if kind in NAMED:
            name = schema.get("name")
            if not isinstance(name, str) or not name:
                raise ValueDecodeError(f"an Avro {kind} without a name")
            own = schema.get("namespace")
            if "." in name:
                namespace = name.rsplit(".", 1)[0]
            elif isinstance(own, str):
                namespace = own
            self.types[fullname(name, namespace)] = schema
            self.namespace[id(schema)] = namespace
            for field in schema.get("fields") or ():
                if isinstance(field, dict):
                    self._collect(field.get("type"), namespace)
        elif kind == "array":
            self._collect(schema.get("items"), namespace)
        elif kind == "map":
            self._collect(schema.get("values"), namespace)

    def resolve(self, name: str, namespace: str) -> tuple[Any, str]:
        """A named type referred to by ``name`` from within ``namespace``."""
        found = self.types.get(fullname(name, namespace)) or self.types.get(name)
        if found is None:
            raise ValueDecodeError(f"the Avro type {name!r} is never defined")
        return found, self.namespace[id(found)]

    def width(self, schema: Any, namespace: str, visiting: set[int]) -> int:
        """The fewest bytes a value of ``schema`` takes."""
        if isinstance(schema, list):
            return 1  # the branch's index
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return {"null": 0, "float": 4, "double": 8}.get(schema, 1)
            schema, namespace = self.resolve(schema, namespace)
        if not isinstance(schema, dict):
            return 1
        kind = schema.get("type")
        if isinstance(kind, dict | list):
            return self.width(kind, namespace, visiting)
        if kind == "fixed":
            size = schema.get("size")
            return size if isinstance(size, int) else 1
        if kind in ("record", "error"):
            key = id(schema)
            if key in visiting:
                return 1  # a record inside itself: only through a union, 1 byte at least
            if key not in self._widths:
                visiting.add(key)
                own = self.namespace.get(key, namespace)
                self._widths[key] = sum(
                    self.width(f.get("type"), own, visiting)
                    for f in schema.get("fields") or ()
                    if isinstance(f, dict)
                )
                visiting.discard(key)
            return self._widths[key]
        if isinstance(kind, str) and kind in PRIMITIVES:
            return self.width(kind, namespace, visiting)
        return 1  # array, map (a block count), enum (an index)

    def _check_arrays(self, schema: Any, namespace: str, seen: set[int]) -> None:
        """Refuse arrays of items that take no bytes: a count of 2^62 in a hostile body
        would loop forever without ever reaching the body's end."""
        if isinstance(schema, list):
            for branch in schema:
                self._check_arrays(branch, namespace, seen)
            return
        if not isinstance(schema, dict) or id(schema) in seen:
            return
        seen.add(id(schema))
        kind = schema.get("type")
        if isinstance(kind, dict | list):
            self._check_arrays(kind, namespace, seen)
        elif kind == "array":
            items = schema.get("items")
            if self.width(items, namespace, set()) == 0:
                raise ValueDecodeError("an Avro array of items that take no bytes")
            self._check_arrays(items, namespace, seen)
        elif kind == "map":
            self._check_arrays(schema.get("values"), namespace, seen)
        elif kind in ("record", "error"):
            own = self.namespace.get(id(schema), namespace)
            for field in schema.get("fields") or ():
                if isinstance(field, dict):
                    self._check_arrays(field.get("type"), own, seen)
