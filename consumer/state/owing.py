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
# An order changed since a time, or one of its items did (two parameters: the time).
_ORDER_CHANGED = (
    "(o.changed_ms >= ? OR EXISTS (SELECT 1 FROM rows i INDEXED BY rows_by_parent"
    " WHERE i.kind = 'item' AND i.parent = o.key AND i.changed_ms >= ?))"
)


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
        with self.store.transaction():
            if phase == FORGET:
                cursor, done = self._forget_page(cursor, limit)
                entries: list[tuple[str, str, str | None]] = []
            elif phase == REGISTERED:
                cursor, done, entries = self._registered_page(cursor, limit, since_ms)
            else:
                cursor, done, entries = self._guests_page(cursor, limit, since_ms)
            next_seq = self._owe_entries(entries, next_seq, last, stamp)
            if forget and since_ms is not None:
                self._forget_entries(entries)
            if done:
                phase, cursor = {FORGET: REGISTERED, REGISTERED: GUESTS, GUESTS: DONE}[phase], None
            self.db.execute(
                "UPDATE owing SET next_seq = ?, phase = ?, cursor_owner = ?, cursor_kind = ?,"
                " cursor_key = ?, owed = owed + ?",
                (next_seq, phase, *(cursor or (None, None, None)), len(entries)),
            )
        return OwingScope(since_ms, bool(forget), stamp, first, last, phase, owed + len(entries))

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
    ) -> tuple[tuple[str, str, str] | None, bool, list[tuple[str, str, str | None]]]:
        """The next ``limit`` of: each customer (by key), then its orders (any order
        naming a customer, deleted ones too, as a resync always sent them)."""
        db = self.db
        owner, kind, key = cursor or ("", "", "")
        customers = db.execute(
            "SELECT key, deleted, changed_ms FROM rows WHERE kind = 'customer'"
            f" AND key {'>' if cursor else '>='} ? ORDER BY key LIMIT ?",
            (owner, limit),
        ).fetchall()
        orders = db.execute(
            "SELECT parent, key FROM rows INDEXED BY rows_by_parent WHERE kind = 'order'"
            " AND parent IS NOT NULL AND (parent, key) > (?, ?) ORDER BY parent, key LIMIT ?",
            (owner, key if kind == "order" else "", limit),
        ).fetchall()
        merged = sorted(
            [(k, "customer", k, bool(d), c) for k, d, c in customers]
            + [(p, "order", k, False, None) for p, k in orders]
        )[:limit]
        if not merged:
            return cursor, True, []
        changed = self._orders_changed([k for _, t, k, _, _ in merged if t == "order"], since_ms)
        entries: list[tuple[str, str, str | None]] = []
        for _, entry_kind, entry_key, deleted, changed_ms in merged:
            if entry_kind == "customer":
                if not deleted and (since_ms is None or (changed_ms or 0) >= since_ms):
                    entries.append(("customer", entry_key, None))
            elif entry_key in changed:
                entries.append(("order", entry_key, None))
        last = merged[-1]
        return (last[0], last[1], last[2]), len(merged) < limit, entries

    def _guests_page(
        self, cursor: tuple[str, str, str] | None, limit: int, since_ms: int | None
    ) -> tuple[tuple[str, str, str] | None, bool, list[tuple[str, str, str | None]]]:
        """The next ``limit`` guest checkouts (orders naming no customer), by key."""
        found = self.db.execute(
            "SELECT key, email FROM rows INDEXED BY rows_by_parent WHERE kind = 'order'"
            " AND parent IS NULL AND key > ? ORDER BY key LIMIT ?",
            ("" if cursor is None else cursor[2], limit),
        ).fetchall()
        if not found:
            return cursor, True, []
        changed = self._orders_changed([key for key, _ in found], since_ms)
        entries = [("order", key, email) for key, email in found if key in changed]
        return ("", "order", found[-1][0]), len(found) < limit, entries

    def _orders_changed(self, keys: list[str], since_ms: int | None) -> set[str]:
        """Which of these orders (or their items) changed since ``since_ms`` (all
        without one)."""
        if since_ms is None:
            return set(keys)
        found = self.store.chunked(
            f"SELECT o.key FROM rows o WHERE o.kind = 'order' AND {_ORDER_CHANGED}"
            " AND o.key IN ({marks})",
            (since_ms, since_ms),
            keys,
        )
        return {key for (key,) in found}

    # -- writing a page ----------------------------------------------------------------

    def _owe_entries(
        self, entries: list[tuple[str, str, str | None]], next_seq: int, last: int, stamp: float
    ) -> int:
        """Owe the page's documents, numbered from ``next_seq`` in the scope's order;
        returns the next number. One a live change numbered after the range gets a
        new number instead (see the module's docstring)."""
        if not entries:
            return next_seq
        db = self.db
        live: set[tuple[str, str]] = set()
        if self._seq > last:  # something was numbered after the reservation
            by_kind: dict[str, list[str]] = {}
            for kind, key, _ in entries:
                by_kind.setdefault(kind, []).append(key)
            for kind, keys in by_kind.items():
                found = self.store.chunked(
                    "SELECT key FROM owed WHERE kind = ? AND seq > ? AND key IN ({marks})",
                    (kind, last),
                    keys,
                )
                live.update((kind, key) for (key,) in found)
        rows = []
        for kind, key, _ in entries:
            if (kind, key) in live:
                rows.append((kind, key, self.next_seq(), stamp))
            else:
                rows.append((kind, key, next_seq, stamp))
                next_seq += 1
        rows.sort()  # key order: the owed table's pages are written together
        db.executemany(
            "INSERT INTO owed (kind, key, seq, since) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kind, key) DO UPDATE SET seq = excluded.seq",
            rows,
        )
        return next_seq

    def _forget_entries(self, entries: list[tuple[str, str, str | None]]) -> None:
        """A resync ``since`` a time, forgetting: the page's documents, and the guest
        customers of its guest orders (Rfmcube may hold none any more)."""
        docs = sorted({(kind, key) for kind, key, _ in entries})
        guests = sorted({("guest", email) for _, _, email in entries if email})
        self.db.executemany("DELETE FROM accepted WHERE kind = ? AND key = ?", docs + guests)
