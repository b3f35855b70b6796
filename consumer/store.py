"""The state store: the shop's current rows, what Rfmcube accepted, and offsets.

Embedded SQLite in WAL mode. It is a cache of the topics: the rows let an order
be sent whole (all its items, its customer's email) and a customer delete name
its email; the accepted hashes let an unchanged document send nothing; and the
per-partition offsets, written in the same transaction as the rows, say how far
the store has read, so that a lost or empty store is rebuilt from the topics
before anything is sent.

Deleted customers and orders stay as flagged rows: a delete needs the email of
a customer that is gone, the ``mark`` order-delete policy re-sends the last
known order with a deleted status, and the orders of a deleted customer must
not be sent again (that would re-create the customer).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from consumer.mapping import fill_unavailable
from schemas.entities import EntityChange, Kind, MappedRow
from schemas.rfmcube import dumps

DocRef = tuple[Kind, str]
"""A document Rfmcube holds: (Kind.CUSTOMER, key) or (Kind.ORDER, key)."""

_CHUNK = 400  # keys per IN (...) query: well below SQLite's parameter limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    kind TEXT NOT NULL, key TEXT NOT NULL, parent TEXT, email TEXT,
    fields BLOB NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rows_by_parent ON rows (kind, parent);
CREATE INDEX IF NOT EXISTS rows_by_email ON rows (kind, email);
CREATE TABLE IF NOT EXISTS accepted (
    kind TEXT NOT NULL, key TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class CustomerIdentity:
    """Who to delete: ``delete_customer`` looks up by id first, then email."""

    id: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class Touch:
    """A document a change affects; ``deleted`` is set for a customer delete."""

    doc: DocRef
    deleted: CustomerIdentity | None = None


@dataclass(frozen=True, slots=True)
class StoredRow:
    row: MappedRow
    deleted: bool


def _loads(blob: bytes) -> dict[str, Any]:
    # Money must come back exact: never through float.
    value: dict[str, Any] = json.loads(blob, parse_float=Decimal)
    return value


class StateStore:
    """SQLite-backed rows, accepted hashes and applied offsets."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- feeding ---------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[StoreBatch]:
        """One transaction: the rows of a batch of changes and its offsets."""
        self._db.execute("BEGIN")
        try:
            batch = StoreBatch(self)
            yield batch
            batch.flush()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def applied_offsets(self) -> dict[tuple[str, int], int]:
        """Per partition, the next offset the store has not applied yet."""
        cur = self._db.execute("SELECT topic, partition, next_offset FROM offsets")
        return {(t, p): o for t, p, o in cur}

    # -- reading ---------------------------------------------------------

    def get(self, kind: Kind, key: str) -> StoredRow | None:
        found = self._db.execute(
            "SELECT parent, email, fields, deleted FROM rows WHERE kind = ? AND key = ?",
            (kind.value, key),
        ).fetchone()
        if found is None:
            return None
        parent, email, blob, deleted = found
        return StoredRow(MappedRow(kind, key, _loads(blob), parent, email), bool(deleted))

    def live(self, kind: Kind, key: str) -> MappedRow | None:
        stored = self.get(kind, key)
        return None if stored is None or stored.deleted else stored.row

    def customer_by_email(self, email: str) -> MappedRow | None:
        found = self._db.execute(
            "SELECT key FROM rows WHERE kind = 'customer' AND email = ? AND deleted = 0"
            " ORDER BY key LIMIT 1",
            (email,),
        ).fetchone()
        return None if found is None else self.live(Kind.CUSTOMER, found[0])

    def items_of(self, order_key: str) -> list[MappedRow]:
        cur = self._db.execute(
            "SELECT key, parent, email, fields FROM rows"
            " WHERE kind = 'item' AND parent = ? AND deleted = 0",
            (order_key,),
        )
        return [MappedRow(Kind.ITEM, k, _loads(f), p, e) for k, p, e, f in cur]

    def guest_orders(self, email: str) -> list[StoredRow]:
        """Orders that name this email and no customer id, deleted ones included."""
        cur = self._db.execute(
            "SELECT key, email, fields, deleted FROM rows"
            " WHERE kind = 'order' AND parent IS NULL AND email = ?",
            (email,),
        )
        return [
            StoredRow(MappedRow(Kind.ORDER, k, _loads(f), None, e), bool(d)) for k, e, f, d in cur
        ]

    # -- bulk reads: a few queries per batch instead of a few per row ---------
    #
    # Every sqlite3 call releases the GIL; while kafka-python's I/O thread is
    # busy decoding fetches, each re-acquisition waits for it. Thousands of
    # single-row queries per batch cost more in waiting than in SQLite.

    def _chunked(self, sql: str, head: tuple[Any, ...], keys: list[str]) -> list[Any]:
        found: list[Any] = []
        for start in range(0, len(keys), _CHUNK):
            part = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(part))
            found.extend(self._db.execute(sql.format(marks=marks), (*head, *part)).fetchall())
        return found

    def get_many(self, keys: Iterable[tuple[Kind, str]]) -> dict[tuple[Kind, str], StoredRow]:
        by_kind: dict[Kind, set[str]] = {}
        for kind, key in keys:
            by_kind.setdefault(kind, set()).add(key)
        rows: dict[tuple[Kind, str], StoredRow] = {}
        for kind, wanted in by_kind.items():
            found = self._chunked(
                "SELECT key, parent, email, fields, deleted FROM rows"
                " WHERE kind = ? AND key IN ({marks})",
                (kind.value,),
                sorted(wanted),
            )
            for key, parent, email, blob, deleted in found:
                rows[(kind, key)] = StoredRow(
                    MappedRow(kind, key, _loads(blob), parent, email), bool(deleted)
                )
        return rows

    def items_of_many(self, order_keys: Iterable[str]) -> dict[str, list[MappedRow]]:
        items: dict[str, list[MappedRow]] = {key: [] for key in order_keys}
        found = self._chunked(
            "SELECT key, parent, email, fields FROM rows"
            " WHERE kind = 'item' AND deleted = 0 AND parent IN ({marks})",
            (),
            sorted(items),
        )
        for key, parent, email, blob in found:
            items[parent].append(MappedRow(Kind.ITEM, key, _loads(blob), parent, email))
        return items

    def customers_by_email_many(self, emails: Iterable[str]) -> dict[str, MappedRow]:
        found = self._chunked(
            "SELECT key, parent, email, fields FROM rows"
            " WHERE kind = 'customer' AND deleted = 0 AND email IN ({marks}) ORDER BY key DESC",
            (),
            sorted(set(emails)),
        )
        # Descending, so the lowest key wins, as in customer_by_email.
        return {e: MappedRow(Kind.CUSTOMER, k, _loads(f), p, e) for k, p, e, f in found}

    def guest_orders_many(self, emails: Iterable[str]) -> dict[str, list[StoredRow]]:
        orders: dict[str, list[StoredRow]] = {email: [] for email in emails}
        found = self._chunked(
            "SELECT key, email, fields, deleted FROM rows"
            " WHERE kind = 'order' AND parent IS NULL AND email IN ({marks})",
            (),
            sorted(orders),
        )
        for key, email, blob, deleted in found:
            row = MappedRow(Kind.ORDER, key, _loads(blob), None, email)
            orders[email].append(StoredRow(row, bool(deleted)))
        return orders

    def accepted_hashes(self, docs: Iterable[DocRef]) -> dict[DocRef, str]:
        by_kind: dict[Kind, list[str]] = {}
        for kind, key in docs:
            by_kind.setdefault(kind, []).append(key)
        hashes: dict[DocRef, str] = {}
        for kind, keys in by_kind.items():
            found = self._chunked(
                "SELECT key, hash FROM accepted WHERE kind = ? AND key IN ({marks})",
                (kind.value,),
                keys,
            )
            hashes.update({(kind, key): str(digest) for key, digest in found})
        return hashes

    def accepted_hash(self, doc: DocRef) -> str | None:
        found = self._db.execute(
            "SELECT hash FROM accepted WHERE kind = ? AND key = ?", (doc[0].value, doc[1])
        ).fetchone()
        return None if found is None else str(found[0])

    def set_accepted(self, hashes: Mapping[DocRef, str]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO accepted (kind, key, hash) VALUES (?, ?, ?)"
                " ON CONFLICT (kind, key) DO UPDATE SET hash = excluded.hash",
                [(kind.value, key, h) for (kind, key), h in hashes.items()],
            )

    def forget_accepted(self, docs: list[DocRef]) -> None:
        with self._db:
            self._db.executemany(
                "DELETE FROM accepted WHERE kind = ? AND key = ?",
                [(kind.value, key) for kind, key in docs],
            )

    def forget_accepted_orders_of(self, customer_keys: list[str]) -> None:
        """Deleting a customer deletes its orders in Rfmcube: none of them may be
        skipped as unchanged if the shop sends it again."""
        with self._db:
            self._db.executemany(
                "DELETE FROM accepted WHERE kind = 'order' AND key IN"
                " (SELECT key FROM rows WHERE kind = 'order' AND parent = ?)",
                [(key,) for key in customer_keys],
            )

    def counts(self) -> dict[str, int]:
        cur = self._db.execute("SELECT kind, COUNT(*) FROM rows WHERE deleted = 0 GROUP BY kind")
        return {kind: n for kind, n in cur}


class StoreBatch:
    """The write side, used inside :meth:`StateStore.batch`.

    Rows read or written in the batch are kept in memory and written with one
    ``executemany`` at its end; :meth:`prefetch` loads the rows a batch will
    touch in a few queries.
    """

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._db = store._db
        self._rows: dict[tuple[Kind, str], StoredRow | None] = {}
        self._written: dict[tuple[Kind, str], StoredRow | None] = {}  # None: removed
        self._offsets: dict[tuple[str, int], int] = {}

    def prefetch(self, keys: Iterable[tuple[Kind, str]]) -> None:
        missing = {k for k in keys if k not in self._rows}
        found = self._store.get_many(missing)
        for key in missing:
            self._rows[key] = found.get(key)

    def set_offsets(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        for partition, offset in next_offsets.items():
            self._offsets[partition] = max(offset, self._offsets.get(partition, 0))

    def flush(self) -> None:
        upserts = [
            (kind.value, key, s.row.parent, s.row.email, dumps(s.row.fields), int(s.deleted))
            for (kind, key), s in self._written.items()
            if s is not None
        ]
        removed = [(kind.value, key) for (kind, key), s in self._written.items() if s is None]
        self._db.executemany(
            "INSERT INTO rows (kind, key, parent, email, fields, deleted)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET"
            " parent = excluded.parent, email = excluded.email,"
            " fields = excluded.fields, deleted = excluded.deleted",
            upserts,
        )
        self._db.executemany("DELETE FROM rows WHERE kind = ? AND key = ?", removed)
        self._db.executemany(
            "INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?)"
            " ON CONFLICT (topic, partition) DO UPDATE SET next_offset ="
            " max(next_offset, excluded.next_offset)",
            [(t, p, o) for (t, p), o in self._offsets.items()],
        )
        self._written.clear()
        self._offsets.clear()

    def apply(self, change: EntityChange) -> list[Touch]:
        """Apply one change; return the documents whose content it may alter."""
        if change.row is not None:
            return self._upsert(change.row)
        return self._delete(change)

    def _get(self, kind: Kind, key: str) -> StoredRow | None:
        slot = (kind, key)
        if slot not in self._rows:
            self._rows[slot] = self._store.get(kind, key)
        return self._rows[slot]

    def _write(self, row: MappedRow, deleted: bool) -> None:
        slot = (row.kind, row.key)
        self._rows[slot] = self._written[slot] = StoredRow(row, deleted)

    def _remove(self, kind: Kind, key: str) -> None:
        self._rows[(kind, key)] = self._written[(kind, key)] = None

    def _upsert(self, row: MappedRow) -> list[Touch]:
        previous = self._get(row.kind, row.key)
        # Unchanged TOASTed columns: the stored value stands.
        row = fill_unavailable(row, previous.row if previous is not None else None)
        self._write(row, deleted=False)
        if row.kind is Kind.ITEM:
            touches = [Touch((Kind.ORDER, row.parent))] if row.parent is not None else []
            old_parent = previous.row.parent if previous is not None else None
            if old_parent is not None and old_parent != row.parent:
                touches.append(Touch((Kind.ORDER, old_parent)))
            return touches
        return [Touch((row.kind, row.key))]

    def _delete(self, change: EntityChange) -> list[Touch]:
        previous = self._get(change.kind, change.key)
        if previous is not None and previous.deleted:
            return []  # the tombstone after a delete, or a replayed delete
        if change.kind is Kind.ITEM:
            parent = previous.row.parent if previous is not None else None
            if parent is None and change.before is not None:
                parent = change.before.parent
            self._remove(Kind.ITEM, change.key)
            return [Touch((Kind.ORDER, parent))] if parent is not None else []
        known = previous.row if previous is not None else change.before
        if known is None:
            if change.kind is Kind.CUSTOMER and previous is None:
                # Never seen: delete by id so that nothing of it survives.
                return [Touch((Kind.CUSTOMER, change.key), CustomerIdentity(change.key, None))]
            return []
        self._write(known, deleted=True)
        if change.kind is Kind.CUSTOMER:
            identity = CustomerIdentity(known.key, known.email)
            return [Touch((Kind.CUSTOMER, change.key), identity)]
        return [Touch((Kind.ORDER, change.key))]
