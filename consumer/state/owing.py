"""Owing a resync's scope in pages (part of :class:`consumer.state.obligations.Obligations`).

A resync owes every customer and order of the shop (or those changed since a
time). In one transaction that held the event loop for seconds (5 to 7 s for
600,000 documents) and, killed, started again from nothing. Here it goes in
pages, each one short transaction that also moves a cursor kept in the store
(table ``owing``), so a SIGKILL between two pages resumes at the next one:

1. :meth:`OwingPages.begin_owing` reserves the sequence numbers of the whole
   scope first (an upper bound: every customer and order). Live changes get
   numbers after the range, so a flush still takes the resync's documents
   first, and the scope's documents, owed or not yet, stay recognizable.
2. With ``forget`` and no ``since``, what Rfmcube was thought to hold is
   forgotten first, every accepted hash, in pages of keys (sequential, cheap).
3. :meth:`OwingPages.owe_page` owes the next page of documents, customers with
   their orders (the order of the scope: a customer, then its orders), then
   guest checkouts. With ``since``, only what changed; with ``forget`` and a
   ``since``, the page's own accepted hashes go with it.

Owing more than needed, or forgetting an accepted hash, only costs a re-send;
so a page is safe at any moment. One rule keeps a flush in flight safe: a
document a live change numbered after the reservation may have been taken by
that flush with its newer number (and planned before its hash was forgotten),
so the page gives it a new number after everything, never one from the range
(which would let that flush's settlement drop it unsent).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from consumer.state.store import StateStore

__all__ = ["OwingPages", "OwingScope"]

OWING_SCHEMA = """
CREATE TABLE IF NOT EXISTS owing (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    since_ms INTEGER, forget INTEGER NOT NULL, stamp REAL NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, next_seq INTEGER NOT NULL,
    phase TEXT NOT NULL, cursor_owner TEXT, cursor_kind TEXT, cursor_key TEXT,
    owed INTEGER NOT NULL DEFAULT 0
);
"""

# Phases, in order.
FORGET, REGISTERED, GUESTS, DONE = "forget", "registered", "guests", "done"
# An order changed since a time, or one of its items did (parameter ``since``).
_ORDER_CHANGED = (
    "(o.changed_ms >= :since OR EXISTS (SELECT 1 FROM rows i INDEXED BY rows_by_parent"
    " WHERE i.kind = 'item' AND i.parent = o.key AND i.changed_ms >= :since))"
)


@dataclass(frozen=True, slots=True)
class _Page:
    """A page of the scope: ``sql`` selects its (owner, kind, key, email) with
    ``params``; ``cursor`` is where the next page starts (None with ``done``)."""

    sql: str
    params: dict[str, object]
    cursor: tuple[str, str, str] | None
    done: bool


@dataclass(frozen=True, slots=True)
class OwingScope:
    """The scope being owed (or owed): its reserved numbers and how far it went."""

    since_ms: int | None
    forget: bool
    stamp: float  # ``since`` of every document it owes: the flush's order
    first_seq: int
    last_seq: int
    phase: str
    owed: int  # documents owed so far

    @property
    def finished(self) -> bool:
        return self.phase == DONE


class OwingPages:
    """Mixed into :class:`~consumer.state.obligations.Obligations`, which owns the table."""

    store: StateStore
    db: sqlite3.Connection
    _seq: int
    _clock: Callable[[], float]

    def next_seq(self) -> int:  # pragma: no cover - defined by Obligations
        raise NotImplementedError

    def reserved_seq(self) -> int:
        """The end of a reserved range (a live change must be numbered after it)."""
        found = self.db.execute("SELECT max(last_seq) FROM owing").fetchone()
        return int(found[0] or 0)

    def begin_owing(self, *, since_ms: int | None, forget: bool) -> OwingScope:
        """Reserve the numbers of a new scope and make it the one being owed (one
        short transaction: an upper bound of the scope is counted on indexes)."""
        db = self.db
        with self.store.transaction():
            customers = db.execute(
                "SELECT count(*) FROM rows INDEXED BY rows_by_email WHERE kind = 'customer'"
            ).fetchone()[0]
            orders = db.execute(
                "SELECT count(*) FROM rows INDEXED BY rows_by_parent WHERE kind = 'order'"
            ).fetchone()[0]
            first = self._seq + 1
            last = first + int(customers) + int(orders)  # one spare: never an empty range
            self._seq = last
            phase = FORGET if forget and since_ms is None else REGISTERED
            db.execute(
                "INSERT OR REPLACE INTO owing (id, since_ms, forget, stamp, first_seq, last_seq,"
                " next_seq, phase, cursor_owner, cursor_kind, cursor_key, owed)"
                " VALUES (1, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, 0)",
                (since_ms, int(forget), self._clock(), first, last, first, phase),
            )
        found = self.owing_scope()
        assert found is not None
        return found

    def owing_scope(self) -> OwingScope | None:
        """The last scope owed, finished or not."""
        row = self.db.execute(
            "SELECT since_ms, forget, stamp, first_seq, last_seq, phase, owed FROM owing"
        ).fetchone()
        if row is None:
            return None
        since_ms, forget, stamp, first, last, phase, owed = row
        return OwingScope(since_ms, bool(forget), stamp, first, last, phase, owed)

    def owe_page(self, limit: int) -> OwingScope | None:
        """One page of the scope being owed (``limit`` keys looked at, at most), in
        one transaction with its cursor. Returns the scope, or None when none is
        being owed."""
        row = self.db.execute(
            "SELECT since_ms, forget, stamp, first_seq, last_seq, next_seq, phase,"
            " cursor_owner, cursor_kind, cursor_key, owed FROM owing WHERE phase != ?",
            (DONE,),
        ).fetchone()
        if row is None:
            return None
        since_ms, forget, stamp, first, last, next_seq, phase, owner, kind, key, owed = row
        cursor = None if owner is None else (owner, kind, key)
        counted = 0
        with self.store.transaction():
            if phase == FORGET:
                cursor, done = self._forget_page(cursor, limit)
            else:
                find = self._registered_page if phase == REGISTERED else self._guests_page
                page = find(cursor, limit, since_ms)
                counted, next_seq = self._owe_page_rows(page, next_seq, last, stamp)
                if forget and since_ms is not None:
                    self._forget_page_rows(page)
                cursor, done = page.cursor, page.done
            if done:
                phase, cursor = {FORGET: REGISTERED, REGISTERED: GUESTS, GUESTS: DONE}[phase], None
            self.db.execute(
                "UPDATE owing SET next_seq = ?, phase = ?, cursor_owner = ?, cursor_kind = ?,"
                " cursor_key = ?, owed = owed + ?",
                (next_seq, phase, *(cursor or (None, None, None)), counted),
            )
        return OwingScope(since_ms, bool(forget), stamp, first, last, phase, owed + counted)

    # -- the pages ------------------------------------------------------------------

    def _forget_page(
        self, cursor: tuple[str, str, str] | None, limit: int
    ) -> tuple[tuple[str, str, str] | None, bool]:
        """Every accepted hash (customers, guests, orders), ``limit`` at a time in key
        order (Rfmcube lost the shop: none of them holds)."""
        after = ("", "") if cursor is None else (cursor[1], cursor[2])
        end = self.db.execute(
            "SELECT kind, key FROM accepted WHERE (kind, key) > (?, ?)"
            " ORDER BY kind, key LIMIT 1 OFFSET ?",
            (*after, limit - 1),
        ).fetchone()
        if end is None:
            self.db.execute("DELETE FROM accepted WHERE (kind, key) > (?, ?)", after)
            return None, True
        self.db.execute(
            "DELETE FROM accepted WHERE (kind, key) > (?, ?) AND (kind, key) <= (?, ?)",
            (*after, *end),
        )
        return ("", end[0], end[1]), False

    def _registered_page(
        self, cursor: tuple[str, str, str] | None, limit: int, since_ms: int | None
    ) -> _Page:
        """The next ``limit`` of: each customer (by key), then its orders (any order
        naming a customer, deleted ones too, as a resync always sent them). Found
        as a range of (owner, kind, key): the page ends at its ``limit``-th entry."""
        owner, kind, key = cursor or ("", "", "")
        params: dict[str, object] = {
            "owner": owner,
            "order_key": key if kind == "order" else "",
            "since": since_ms,
        }
        customers = ["kind = 'customer'", "key > :owner" if cursor else "key >= :owner"]
        orders = [
            "o.kind = 'order' AND o.parent IS NOT NULL",
            "(o.parent, o.key) > (:owner, :order_key)",
        ]
        end = self.db.execute(
            f"{_registered(customers, orders)} ORDER BY 1, 2, 3 LIMIT 1 OFFSET :skip",
            {**params, "skip": limit - 1},
        ).fetchone()
        customers.append("NOT deleted")
        if end is not None:
            params.update(end_owner=end[0], end_order_key=end[2] if end[1] == "order" else "")
            customers.append("key <= :end_owner")
            orders.append("(o.parent, o.key) <= (:end_owner, :end_order_key)")
        if since_ms is not None:
            customers.append("coalesce(changed_ms, 0) >= :since")
            orders.append(_ORDER_CHANGED)
        cursor = None if end is None else (end[0], end[1], end[2])
        return _Page(_registered(customers, orders), params, cursor, end is None)

    def _guests_page(
        self, cursor: tuple[str, str, str] | None, limit: int, since_ms: int | None
    ) -> _Page:
        """The next ``limit`` guest checkouts (orders naming no customer), by key."""
        params: dict[str, object] = {
            "after": "" if cursor is None else cursor[2],
            "since": since_ms,
        }
        where = ["o.kind = 'order' AND o.parent IS NULL AND o.key > :after"]
        end = self.db.execute(
            f"{_guests(where)} ORDER BY o.key LIMIT 1 OFFSET :skip", {**params, "skip": limit - 1}
        ).fetchone()
        if end is not None:
            params["end"] = end[2]
            where.append("o.key <= :end")
        if since_ms is not None:
            where.append(_ORDER_CHANGED)
        return _Page(
            _guests(where), params, None if end is None else ("", "order", end[2]), end is None
        )

    # -- writing a page ----------------------------------------------------------------

    def _owe_page_rows(
        self, page: _Page, next_seq: int, last: int, stamp: float
    ) -> tuple[int, int]:
        """Owe the page's documents, numbered from ``next_seq`` in the scope's order
        (one statement: no row crosses into Python); returns how many were owed and
        the next number. One a live change numbered after the range gets a new
        number instead (see the module's docstring)."""
        db = self.db
        params = {**page.params, "next": next_seq, "stamp": stamp, "last": last}
        live_may_exist = self._seq > last  # something was numbered after the reservation
        not_live = (
            " AND NOT EXISTS (SELECT 1 FROM owed l WHERE l.kind = page.kind"
            " AND l.key = page.key AND l.seq > :last)"
            if live_may_exist
            else ""
        )
        owed = db.execute(
            "INSERT INTO owed (kind, key, seq, since)"
            " SELECT kind, key, :next - 1 + row_number() OVER (ORDER BY owner, kind, key), :stamp"
            f" FROM ({page.sql}) AS page WHERE true{not_live}"
            " ON CONFLICT (kind, key) DO UPDATE SET seq = excluded.seq",
            params,
        ).rowcount
        next_seq += owed
        if live_may_exist:
            live = db.execute(
                f"SELECT page.kind, page.key FROM ({page.sql}) AS page JOIN owed l"
                " ON l.kind = page.kind AND l.key = page.key WHERE l.seq > :last"
                " ORDER BY page.owner, page.kind, page.key",
                params,
            ).fetchall()
            db.executemany(
                "UPDATE owed SET seq = ? WHERE kind = ? AND key = ?",
                [(self.next_seq(), kind, key) for kind, key in live],
            )
            owed += len(live)
        return owed, next_seq

    def _forget_page_rows(self, page: _Page) -> None:
        """A resync ``since`` a time, forgetting: the page's documents, and the guest
        customers of its guest orders (Rfmcube may hold none any more)."""
        for kind in ("customer", "order"):
            self.db.execute(
                f"DELETE FROM accepted WHERE kind = :kind AND key IN"
                f" (SELECT key FROM ({page.sql}) WHERE kind = :kind)",
                {**page.params, "kind": kind},
            )
        self.db.execute(
            "DELETE FROM accepted WHERE kind = 'guest' AND key IN"
            f" (SELECT email FROM ({page.sql}) WHERE email IS NOT NULL)",
            page.params,
        )


def _registered(customers: list[str], orders: list[str]) -> str:
    """Customers and the orders naming one, as (owner, kind, key, email), where each
    meets its conditions (``o`` is an order)."""
    return (
        "SELECT key AS owner, 'customer' AS kind, key, NULL AS email FROM rows"
        f" WHERE {' AND '.join(customers)}"
        " UNION ALL SELECT o.parent, 'order', o.key, NULL FROM rows o INDEXED BY rows_by_parent"
        f" WHERE {' AND '.join(orders)}"
    )


def _guests(where: list[str]) -> str:
    """Guest checkouts as (owner, kind, key, email), where each meets ``where``."""
    return (
        "SELECT '' AS owner, 'order' AS kind, o.key, o.email FROM rows o"
        f" INDEXED BY rows_by_parent WHERE {' AND '.join(where)}"
    )
