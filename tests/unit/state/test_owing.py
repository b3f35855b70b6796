"""Owing a resync's scope in pages (consumer/state/owing.py): the same documents as
at once, in the same order, whatever page a SIGKILL falls between.

A store on a file: a kill between two pages is the Python objects dropped
without closing anything (every page committed its transaction), and the
store opened again, as a restarted service would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from schemas.entities import Kind
from testkit.storeshop import build_store_shop as build_shop


def owed_in_order(store: StateStore) -> list[tuple[str, str]]:
    return [
        (k, key) for k, key in store.db.execute("SELECT kind, key FROM owed ORDER BY since, seq")
    ]


# The scope as one statement owed it before it went in pages: the oracle.
ONE_STATEMENT = """
    SELECT kind, key FROM (
        SELECT 'customer' AS kind, key, key AS owner FROM rows
         WHERE kind = 'customer' AND deleted = 0
        UNION ALL
        SELECT 'order', key, coalesce(parent, '@' || email) FROM rows WHERE kind = 'order'
    ) ORDER BY owner, kind, key
"""


@pytest.fixture
def at_once() -> list[tuple[str, str]]:
    store = build_shop(":memory:")
    return [(kind, key) for kind, key in store.db.execute(ONE_STATEMENT)]


def test_a_scope_is_every_live_customer_each_followed_by_its_orders(
    tmp_path: Path, at_once: list[tuple[str, str]]
) -> None:
    store = build_shop(tmp_path / "scope.db")
    Obligations(store).owe_everything(since_ms=None, forget=True)
    assert owed_in_order(store) == at_once
    owners = {
        key: parent or f"@{email}"
        for key, parent, email in store.db.execute(
            "SELECT key, parent, email FROM rows WHERE kind = 'order'"
        )
    }
    assert ("customer", "3") not in at_once  # deleted
    assert len(at_once) == 22 + 3 * 23 + 5
    # Grouped: a customer, then its orders (so that pages carry whole customers).
    seen: list[str] = []
    for kind, key in at_once:
        owner = key if kind == "customer" else owners[key]
        if not seen or seen[-1] != owner:
            assert owner not in seen, f"{kind} {key} apart from its customer's documents"
            seen.append(owner)


@pytest.mark.parametrize("kill_after", [0, 1, 2, 3, 5, 8, 13])
def test_owing_killed_between_any_two_pages_ends_as_owing_at_once(
    tmp_path: Path, at_once: list[tuple[str, str]], kill_after: int
) -> None:
    path = tmp_path / "paged.db"
    obligations = Obligations(build_shop(path))
    scope = obligations.begin_owing(since_ms=None, forget=True)
    for _ in range(kill_after):
        obligations.owe_page(7)
    del obligations  # SIGKILL: every page committed, the next one never began

    store = StateStore(path)
    obligations = Obligations(store)
    assert obligations.next_seq() > scope.last_seq  # a live change comes after the range
    while (page := obligations.owe_page(7)) is not None and not page.finished:
        pass
    assert owed_in_order(store) == at_once
    # Forgotten: what Rfmcube was thought to hold.
    assert store.db.execute("SELECT count(*) FROM accepted").fetchone()[0] == 0
    seqs = [s for (s,) in store.db.execute("SELECT seq FROM owed")]
    assert len(set(seqs)) == len(seqs)
    assert all(scope.first_seq <= s <= scope.last_seq for s in seqs)


def test_a_document_changed_after_the_reservation_keeps_a_number_after_the_range(
    tmp_path: Path,
) -> None:
    store = build_shop(tmp_path / "live.db")
    obligations = Obligations(store)
    scope = obligations.begin_owing(since_ms=None, forget=True)
    # A live change of customer 20 (its page comes later): numbered after the range,
    # and maybe taken by a flush already. Its page must not give it an older number,
    # which that flush's settlement would drop.
    live = obligations.next_seq()
    store.db.execute(
        "INSERT INTO owed (kind, key, seq, since) VALUES ('customer', '20', ?, 1.0)", (live,)
    )
    while (page := obligations.owe_page(5)) is not None and not page.finished:
        pass
    (seq,) = store.db.execute("SELECT seq FROM owed WHERE kind = 'customer' AND key = '20'")
    assert seq[0] > live > scope.last_seq


def test_a_resync_since_a_time_owes_what_changed_and_forgets_only_that(tmp_path: Path) -> None:
    store = build_shop(tmp_path / "since.db")
    store.db.execute("UPDATE rows SET changed_ms = 5000 WHERE kind = 'customer' AND key = '4'")
    store.db.execute("UPDATE rows SET changed_ms = 5000 WHERE kind = 'item' AND key = '7'")
    (order_of_item,) = store.db.execute("SELECT parent FROM rows WHERE kind = 'item' AND key = '7'")
    obligations = Obligations(store)
    documents, _, _ = obligations.owe_everything(since_ms=4000, forget=True)
    owed = set(owed_in_order(store))
    assert owed == {("customer", "4"), ("order", order_of_item[0])}
    assert documents == 2
    held = {(Kind(k), key) for k, key in store.db.execute("SELECT kind, key FROM accepted")}
    assert (Kind.CUSTOMER, "4") not in held and (Kind.CUSTOMER, "5") in held


def test_a_resync_since_a_time_forgets_the_guest_of_a_changed_guest_checkout(
    tmp_path: Path,
) -> None:
    store = build_shop(tmp_path / "guests.db")
    store.db.execute("UPDATE rows SET changed_ms = 5000 WHERE kind = 'order' AND key = '2001'")
    obligations = Obligations(store)
    documents, _, _ = obligations.owe_everything(since_ms=4000, forget=True)
    assert set(owed_in_order(store)) == {("order", "2001")} and documents == 1
    guests = {key for (key,) in store.db.execute("SELECT key FROM accepted WHERE kind = 'guest'")}
    assert guests == {"g0@x.it", "g2@x.it", "g3@x.it", "g4@x.it"}  # g1's checkout changed
