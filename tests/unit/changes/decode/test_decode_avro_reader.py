"""The compiled Avro reader against fastavro: the same values for any schema and datum
fastavro writes, and nothing but its own errors for any body, however hostile."""

from __future__ import annotations

import contextlib
import io
import math
import struct
import time
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from consumer.changes.decode.avro_names import Names
from consumer.changes.decode.avro_reader import BodyError, CutShort, Invalid, compile_reader
from consumer.changes.decode.logical import ValueDecodeError

Drawn = tuple[Any, st.SearchStrategy[Any]]  # an Avro schema, a strategy of its values

names_drawn = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
counter = iter(range(10**9))


def primitive() -> st.SearchStrategy[Drawn]:
    return st.sampled_from(
        [
            ("null", st.none()),
            ("boolean", st.booleans()),
            ("int", st.integers(-(2**31), 2**31 - 1)),
            ("long", st.integers(-(2**63), 2**63 - 1)),
            ("float", st.floats(width=32, allow_nan=False)),
            ("double", st.floats(allow_nan=False)),
            ("bytes", st.binary(max_size=20)),
            ("string", st.text(max_size=12)),
        ]
    )


@st.composite
def enum(draw: st.DrawFn) -> Drawn:
    symbols = draw(st.lists(names_drawn, min_size=1, max_size=5, unique=True))
    schema = {"type": "enum", "name": f"E{next(counter)}", "symbols": symbols}
    return schema, st.sampled_from(symbols)


@st.composite
def fixed(draw: st.DrawFn) -> Drawn:
    size = draw(st.integers(0, 8))
    return {"type": "fixed", "name": f"X{next(counter)}", "size": size}, st.binary(
        min_size=size, max_size=size
    )


def compound(inner: st.SearchStrategy[Drawn]) -> st.SearchStrategy[Drawn]:
    return st.one_of(
        inner.filter(lambda d: d[0] != "null").map(
            lambda d: ({"type": "array", "items": d[0]}, st.lists(d[1], max_size=4))
        ),
        inner.map(
            lambda d: (
                {"type": "map", "values": d[0]},
                st.dictionaries(st.text(max_size=5), d[1], max_size=3),
            )
        ),
        inner.filter(lambda d: d[0] != "null" and not isinstance(d[0], list)).map(
            lambda d: (["null", d[0]], st.none() | d[1])
        ),
        st.lists(inner, min_size=1, max_size=5).map(record),
    )


def record(fields: list[Drawn]) -> Drawn:
    schema = {
        "type": "record",
        "name": f"R{next(counter)}",
        "fields": [{"name": f"f{i}", "type": s} for i, (s, _) in enumerate(fields)],
    }
    values = st.fixed_dictionaries({f"f{i}": v for i, (_, v) in enumerate(fields)})
    return schema, values


schemas = st.recursive(primitive() | enum() | fixed(), compound, max_leaves=12)


@st.composite
def written(draw: st.DrawFn) -> tuple[Any, bytes]:
    schema, values = draw(schemas)
    datum = draw(values)
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(schema), datum)
    return schema, buffer.getvalue()


def compiled(schema: Any) -> Any:
    """The reader, for the schemas the decoder takes (arrays of items that take no
    bytes are refused: tested in test_decode_avro_errors.py)."""
    try:
        names = Names(schema)
    except ValueDecodeError:
        assume(False)
    return compile_reader(schema, names)


def fastavro_read(schema: Any, body: bytes) -> Any:
    return schemaless_reader(io.BytesIO(body), parse_schema(schema), None)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(written())
def test_every_value_fastavro_writes_reads_back_as_fastavro_reads_it(
    case: tuple[Any, bytes],
) -> None:
    schema, body = case
    reader = compiled(schema)
    value, end = reader(body, 0, len(body))
    assert end == len(body)
    assert same(value, fastavro_read(schema, body))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(written(), st.data())
def test_a_damaged_body_raises_only_the_readers_errors_and_never_hangs(
    case: tuple[Any, bytes], data: st.DataObject
) -> None:
    schema, body = case
    damaged = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "grow", "huge"]))
        if action == "flip" and damaged:
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
        elif action == "cut" and damaged:
            del damaged[data.draw(st.integers(0, len(damaged) - 1)) :]
        elif action == "grow":
            damaged += data.draw(st.binary(min_size=1, max_size=4))
        elif action == "huge":  # a varint of 2^62 somewhere
            at = data.draw(st.integers(0, len(damaged)))
            damaged[at:at] = b"\x80\x80\x80\x80\x80\x80\x80\x80\x40"
    reader = compiled(schema)
    started = time.process_time()
    with contextlib.suppress(BodyError, IndexError, struct.error, UnicodeDecodeError):
        reader(bytes(damaged), 0, len(damaged))
    assert time.process_time() - started < 1.0


ROW = {
    "type": "record",
    "name": "Row",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "note", "type": ["null", "string"]},
    ],
}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\x02\x00\x00", Invalid),  # a boolean of 2
        (b"\x00\x00\x01", Invalid),  # a union index of -1
        (b"\x00\x00\x06", Invalid),  # a union index of 3 in two branches
        (b"\x00" + b"\xff" * 11, Invalid),  # a varint of 11 bytes
        (b"\x00\x80\x80\x80\x80\x80\x80\x80\x80\x40", CutShort),  # 2^61 items, none there
        (b"\x00\x01\x04\x02ab\x00", CutShort),  # a negative count: its block size, then items
        (b"\x00\x02\x09ab\x00\x00", CutShort),  # a string of -5 bytes
        (b"\x00\x02\x10ab\x00\x00", CutShort),  # a string of 8 bytes, 2 there
    ],
)
def test_what_no_writer_writes_is_refused(body: bytes, error: type[Exception]) -> None:
    reader = compile_reader(ROW, Names(ROW))
    with pytest.raises(error):
        reader(body, 0, len(body))


def test_the_generated_code_holds_no_text_of_the_schema() -> None:
    """Names and symbols reach the code as values: a name that is Python does nothing."""
    evil = "x'); import os; os.system('false'); ('"
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": evil, "type": {"type": "enum", "name": "E", "symbols": [evil]}}],
    }
    reader = compile_reader(schema, Names(schema))
    assert reader(b"\x00", 0, 1) == ({evil: evil}, 1)
