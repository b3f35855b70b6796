"""Settling an accepted import whose rows were sorted while it was on the wire
(consumer/state/settling.py, ``presort_page``): the same outcome as without, and
never the rows of another range."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from schemas.entities import Kind

# Keys in an order unlike their staging order: sorting has something to do.
KEYS = [f"o{(i * 7919) % 1000:03d}" for i in range(40)]


@pytest.fixture
def obligations(tmp_path: Path) -> Obligations:
    found = Obligations(StateStore(tmp_path / "state.db"))
    found.owe([(Kind.ORDER, key) for key in KEYS])
    return found


def stage(obligations: Obligations, keys: list[str]) -> tuple[int, int]:
    seqs = {key: seq for _, key, seq, *_ in obligations.take_rows(1000)}
    (staged,) = obligations.stage_many(
        [[(Kind.ORDER.value, key, f"h-{key}", seqs[key], 0, None) for key in keys]]
    )
    return staged


def settle_all(obligations: Obligations) -> None:
    while obligations.settle_page(7):
        pass


def owed_keys(obligations: Obligations) -> set[str]:
    return {key for _, key, *_ in obligations.take_rows(1000)}


def test_an_import_presorted_on_the_wire_settles_as_one_that_was_not(
    obligations: Obligations,
) -> None:
    staged = stage(obligations, KEYS)
    pages = 0
    while obligations.presort_page(staged, 7):
        pages += 1
    assert pages == 6  # 40 rows, 7 a page
    obligations.accept_import("1", staged, hold_commits=False, nbytes=1)
    settle_all(obligations)
    assert owed_keys(obligations) == set()
    assert all(obligations.store.accepted_hash((Kind.ORDER, k)) == f"h-{k}" for k in KEYS)
    assert obligations.settling() == 0


def test_a_presort_cut_short_by_the_answer_is_finished_by_settling(
    obligations: Obligations,
) -> None:
    staged = stage(obligations, KEYS)
    obligations.presort_page(staged, 7)
    obligations.accept_import("1", staged, hold_commits=False, nbytes=1)
    assert obligations.presort_page(staged, 7) == 0, "settling owns the scratch now"
    settle_all(obligations)
    assert owed_keys(obligations) == set()


def test_rows_presorted_for_a_refused_import_never_settle_with_a_half_of_it(
    obligations: Obligations,
) -> None:
    """A 416 or 400 splits the import on the wire in halves: the first half accepted
    has another range, and only its rows are settled; the others stay owed."""
    staged = stage(obligations, KEYS)
    while obligations.presort_page(staged, 100):
        pass
    half = (staged[0], staged[0] + 19)
    obligations.accept_import("2", half, hold_commits=False, nbytes=1)
    settle_all(obligations)
    assert owed_keys(obligations) == set(KEYS[20:])
    assert obligations.store.accepted_hash((Kind.ORDER, KEYS[30])) is None
