"""Avro's binary encoding, read by Python code compiled once for each schema.

fastavro's ``schemaless_reader`` walks the schema for every value and asks its
file object for one byte at a time: about 20 µs for a Debezium envelope on
the development VM, more than the JsonConverter path spends on the whole
record (bench/README.md). Here each record, array and map type of a schema
becomes one function, generated once, that reads its fields in line from the
record's own bytes: varints of one byte (nearly all of them) on a fast path,
strings and bytes by slicing, no file object, no copy of the body.

What a hostile body cannot do: every length is checked against the end of
the body before anything is sliced (a declared length past it, negative or
2^62, is :class:`CutShort`); a count of array or map items can never exceed
the bytes left (an item takes a byte at least: :mod:`.avro_names` refuses
schemas whose items take none), so no count makes it loop or allocate past
the body's size; a union branch, an enum symbol or a boolean outside its
range is :class:`Invalid`; a varint longer than 10 bytes too.

Safety of the generated code: it is built from fixed templates only. Every
name and symbol of the schema reaches it as a value of the namespace it runs
in (``k3``), never as source text; the only numbers written into it are
fixed sizes and branch indexes, which are checked ints. No schema can inject
code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from .avro_names import NAMED, PRIMITIVES, Names
from .logical import ValueDecodeError

__all__ = ["BodyError", "CutShort", "Invalid", "compile_reader"]

Reader = Callable[[bytes, int, int], tuple[Any, int]]

_FLOAT = struct.Struct("<f").unpack_from
_DOUBLE = struct.Struct("<d").unpack_from


class BodyError(Exception):
    """A body that does not fit its schema."""


class CutShort(BodyError):
    """The body ends before what its schema and its lengths say it holds."""


class Invalid(BodyError):
    """A byte no writer of this schema writes: a union branch, an enum symbol or a boolean
    out of range, a varint longer than 64 bits."""


class _Generator:
    def __init__(self, names: Names) -> None:
        self._names = names
        self.namespace: dict[str, Any] = {
            "F": _FLOAT,
            "D": _DOUBLE,
            "C": CutShort,
            "I": Invalid,
        }
        self.sources: list[str] = []
        self._functions: dict[tuple[int, str], str] = {}
        self._count = 0

    def _fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"

    def _constant(self, value: Any) -> str:
        name = self._fresh("k")
        self.namespace[name] = value
        return name

    def _resolve(self, schema: Any, namespace: str) -> tuple[Any, str]:
        """A reference by name resolved; a ``{"type": {...}}`` wrapper unwrapped."""
        if isinstance(schema, str) and schema not in PRIMITIVES:
            schema, namespace = self._names.resolve(schema, namespace)
        while isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
            schema = schema["type"]
        if isinstance(schema, dict) and schema.get("type") in NAMED:
            namespace = self._names.namespace.get(id(schema), namespace)
        return schema, namespace

    # -- statements that read one value into ``target`` and move ``p`` ---------------

    def read(self, target: str, schema: Any, namespace: str, pad: str) -> list[str]:
        schema, namespace = self._resolve(schema, namespace)
        if isinstance(schema, list):
            return self._union(target, schema, namespace, pad)
        kind = schema if isinstance(schema, str) else schema.get("type")
        if kind in ("int", "long"):
            return self._varint(target, pad)
        if kind == "string":
            return self._sized(target, pad, decode=True)
        if kind == "bytes":
            return self._sized(target, pad, decode=False)
        if kind == "null":
            return [f"{pad}{target} = None"]
        if kind == "boolean":
            b = self._fresh("b")
            return [
                f"{pad}{b} = d[p]",
                f"{pad}if {b} > 1:",
                f"{pad}    raise I('a boolean that is neither 0 nor 1')",
                f"{pad}{target} = {b} == 1",
                f"{pad}p += 1",
            ]
        if kind == "float":
            return [f"{pad}{target} = F(d, p)[0]", f"{pad}p += 4"]
        if kind == "double":
            return [f"{pad}{target} = D(d, p)[0]", f"{pad}p += 8"]
        if kind == "fixed":
            size = schema.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueDecodeError("an Avro fixed without a size")
            x = self._fresh("x")
            return [
                f"{pad}{x} = p + {int(size)}",
                f"{pad}if {x} > e:",
                f"{pad}    raise C",
                f"{pad}{target} = d[p:{x}]",
                f"{pad}p = {x}",
            ]
        if kind == "enum":
            symbols = schema.get("symbols")
            if not isinstance(symbols, list) or not symbols:
                raise ValueDecodeError("an Avro enum without symbols")
            index, table = self._fresh("i"), self._constant(tuple(str(s) for s in symbols))
            return [
                *self._varint(index, pad),
                f"{pad}if not 0 <= {index} < {len(symbols)}:",
                f"{pad}    raise I('an enum symbol out of range')",
                f"{pad}{target} = {table}[{index}]",
            ]
        if kind in ("record", "error", "array", "map"):
            function = self._function(schema, namespace, kind)
            return [f"{pad}{target}, p = {function}(d, p, e)"]
        raise ValueDecodeError(f"unknown Avro type {str(kind)[:40]!r}")

    def _varint(self, target: str, pad: str) -> list[str]:
        """A zig-zag varint, in line: a call per timestamp would cost a fifth of the read."""
        b, n, s = self._fresh("b"), self._fresh("n"), self._fresh("s")
        return [
            f"{pad}{b} = d[p]",
            f"{pad}p += 1",
            f"{pad}if {b} < 128:",
            f"{pad}    {target} = ({b} >> 1) ^ -({b} & 1)",
            f"{pad}else:",
            f"{pad}    {n} = {b} & 127",
            f"{pad}    {s} = 7",
            f"{pad}    while True:",
            f"{pad}        {b} = d[p]",
            f"{pad}        p += 1",
            f"{pad}        {n} |= ({b} & 127) << {s}",
            f"{pad}        if {b} < 128:",
            f"{pad}            break",
            f"{pad}        {s} += 7",
            f"{pad}        if {s} > 63:",
            f"{pad}            raise I('a varint longer than 10 bytes')",
            f"{pad}    {target} = ({n} >> 1) ^ -({n} & 1)",
        ]

    def _sized(self, target: str, pad: str, *, decode: bool) -> list[str]:
        n, x = self._fresh("n"), self._fresh("x")
        return [
            *self._varint(n, pad),
            f"{pad}{x} = p + {n}",
            f"{pad}if {n} < 0 or {x} > e:",
            f"{pad}    raise C",
            f"{pad}{target} = d[p:{x}]" + (".decode()" if decode else ""),
            f"{pad}p = {x}",
        ]

    def _union(self, target: str, branches: list[Any], namespace: str, pad: str) -> list[str]:
        if not branches:
            raise ValueDecodeError("an Avro union without branches")
        if len(branches) > 63:  # one varint byte holds the index: writers never need more
            raise ValueDecodeError("an Avro union of more than 63 branches")
        b = self._fresh("u")
        lines = [f"{pad}{b} = d[p]", f"{pad}p += 1"]
        for index, branch in enumerate(branches):
            keyword = "if" if index == 0 else "elif"
            lines.append(f"{pad}{keyword} {b} == {index * 2}:")
            lines += self.read(target, branch, namespace, pad + "    ")
        lines += [f"{pad}else:", f"{pad}    raise I('a union branch that does not exist')"]
        return lines

    # -- one function per record, array and map type -----------------------------------

    def _function(self, schema: dict[str, Any], namespace: str, kind: str) -> str:
        key = (id(schema), namespace)
        done = self._functions.get(key)
        if done is not None:
            return done
        name = self._fresh("r" if kind in ("record", "error") else "a")
        self._functions[key] = name
        if kind in ("record", "error"):
            body = self._record(schema, namespace)
        else:
            body = self._blocks(schema, namespace, kind)
        self.sources.append("\n".join([f"def {name}(d, p, e):", *body]))
        return name

    def _record(self, schema: dict[str, Any], namespace: str) -> list[str]:
        lines: list[str] = []
        pairs: list[str] = []
        for field in schema.get("fields") or ():
            if not isinstance(field, dict) or not isinstance(field.get("name"), str):
                raise ValueDecodeError("an Avro field without a name")
            value = self._fresh("v")
            lines += self.read(value, field.get("type"), namespace, "    ")
            pairs.append(f"{self._constant(field['name'])}: {value}")
        lines.append(f"    return {{{', '.join(pairs)}}}, p")
        return lines

    def _blocks(self, schema: dict[str, Any], namespace: str, kind: str) -> list[str]:
        """Arrays and maps: blocks of a count (and, when negative, a byte size) and items."""
        count, size, item = self._fresh("c"), self._fresh("s"), self._fresh("v")
        lines = ["    out = []" if kind == "array" else "    out = {}", "    while True:"]
        lines += self._varint(count, "        ")
        lines += [
            f"        if {count} == 0:",
            "            return out, p",
            f"        if {count} < 0:",
            f"            {count} = -{count}",
        ]
        lines += self._varint(size, "            ")
        # every item takes a byte at least: a count past the bytes left is a lie
        lines += [f"        if {count} > e - p:", "            raise C"]
        lines.append(f"        for _ in range({count}):")
        if kind == "array":
            lines += self.read(item, schema.get("items"), namespace, "            ")
            lines.append(f"            out.append({item})")
        else:
            key = self._fresh("m")
            lines += self._sized(key, "            ", decode=True)
            lines += self.read(item, schema.get("values"), namespace, "            ")
            lines.append(f"            out[{key}] = {item}")
        return lines


def compile_reader(root: Any, names: Names) -> Reader:
    """The reader of ``root``'s binary encoding: ``reader(data, start, end)`` returns the
    value (records as dicts, unions as their branch's value, enums as their symbol,
    fixed and bytes as bytes) and where it stopped; raises BodyError, IndexError (a
    byte past the end) or struct.error (a float past the end), UnicodeDecodeError."""
    generator = _Generator(names)
    lines = generator.read("v", root, "", "    ")
    generator.sources.append("\n".join(["def root(d, p, e):", *lines, "    return v, p"]))
    source = "\n\n".join(generator.sources)
    scope = generator.namespace
    exec(compile(source, "<avro reader>", "exec"), scope)
    reader: Reader = scope["root"]
    return reader
