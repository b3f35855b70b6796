"""Obligations: imports adopted from the instance before, and the floors commits report."""

from __future__ import annotations

from consumer.state.obligations import BatchObligation, Obligations
from consumer.state.store import StateStore
from schemas.debezium import Position
from schemas.entities import Kind
from testkit.accepted import accept_import

T = "shop.public.orders"


def _owe(obligations: Obligations, key: str, *offsets: int) -> None:
    owed = BatchObligation(obligations.next_seq())
    for offset in offsets:
        owed.mark(Position(T, 0, offset))
    with obligations.store.transaction():
        obligations.write_batch({(Kind.ORDER, key): owed}, now=1.0)
    obligations.store.db.execute(
        "INSERT INTO offsets VALUES (?, 0, ?) ON CONFLICT DO UPDATE SET"
        " next_offset = max(next_offset, excluded.next_offset)",
        (T, max(offsets) + 1),
    )


def _owed(obligations: Obligations) -> set[str]:
    return {doc.ref[1] for doc in obligations.take(100)}


def test_adopted_imports_carry_what_their_records_touched_settling_what_did_not_change() -> None:
    obligations = Obligations(StateStore(":memory:"))
    _owe(obligations, "below", 3)  # delivered for sure: below the floor, dropped first
    _owe(obligations, "carried", 12)  # only in [floor, committed): carried by the import
    _owe(obligations, "changed-since", 14, 25)  # carried, and changed after the commit
    _owe(obligations, "later", 27)  # after the commit: owed, not theirs
    floors, committed = {(T, 0): 10}, {(T, 0): 20}
    obligations.drop_delivered(floors)
    adopted, documents = obligations.adopt_imports(["p-9"], floors, committed)
    assert (adopted, documents) == (["p-9"], 2)
    assert _owed(obligations) == {"changed-since", "later"}
    carrying = obligations.imports_carrying(
        [(Kind.ORDER, k) for k in ("carried", "changed-since", "later")]
    )
    assert carrying == {(Kind.ORDER, "carried"): {"p-9"}, (Kind.ORDER, "changed-since"): {"p-9"}}
    # The floor this instance's commits report stays where it was until p-9 is done.
    assert obligations.commit_floors({(T, 0)}, through_imports=True) == {(T, 0): 10}
    assert obligations.commit_floors({(T, 0)}) == {(T, 0): 14}  # what may be committed
    assert obligations.failed("p-9") == [(Kind.ORDER, "carried"), (Kind.ORDER, "changed-since")]
    assert _owed(obligations) == {"carried", "changed-since", "later"}


def test_an_import_known_here_is_not_adopted_again() -> None:
    obligations = Obligations(StateStore(":memory:"))
    _owe(obligations, "mine", 12)
    accept_import(obligations, "p-1", [(doc, "h") for doc in obligations.take(10)])
    assert obligations.adopt_imports(["p-1"], {(T, 0): 10}, {(T, 0): 20}) == ([], 0)


def test_an_import_whose_records_are_unknown_carries_every_document() -> None:
    obligations = Obligations(StateStore(":memory:"))
    _owe(obligations, "any", 30)
    adopted, documents = obligations.adopt_imports(["p-2"], {(T, 0): 20}, {(T, 0): 20})
    assert (adopted, documents) == (["p-2"], 0)
    assert obligations.imports_carrying([(Kind.ORDER, "any")]) == {(Kind.ORDER, "any"): {"p-2"}}
