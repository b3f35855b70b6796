"""The state store: the shop's current rows, what Rfmcube holds, and what is owed to it.

Embedded SQLite in WAL mode, one file, readable by its owner only. Tables:

- ``rows``: the current row of every customer, order and item (deleted
  customers and orders stay as flagged rows: a delete needs the email of a
  customer that is gone, the ``mark`` policy re-sends a deleted order, and
  the orders of a deleted customer must not be sent again);
- ``accepted``: the hash of every document Rfmcube accepted, so that an
  unchanged document sends nothing;
- ``offsets``: per partition, the next offset the store has not applied;
- ``sends``: when this store's requests went out (the key's budget at a restart);
- ``meta``: the schema version, the mapping's fingerprint, and counters kept
  across restarts (requests sent, bytes of accepted imports: what a resync
  reports).

The obligations' tables (what is owed to the API) belong to
:mod:`consumer.state.obligations`, their one owner. Rows, offsets and the
obligations they create are written in one transaction
(:func:`consumer.state.batch.open_batch`), so a crash never leaves the store
ahead of what it owes. ``synchronous=NORMAL``: a power loss may drop the last
transactions, and with them their offsets, so the store is then behind Kafka
and replays the gap; it is never ahead of what it owes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from schemas.entities import DocRef, Kind, MappedRow
from schemas.rfmcube import ItemFields

__all__ = ["StateStore", "StoredRow"]

SCHEMA_VERSION = 2
CHUNK = 400  # keys per IN (...) query: well below SQLite's parameter limit
# The service's page cache: settling a 200 MB import and owing a resync touch most
# pages of the accepted and owed tables; SQLite's 2 MiB default re-read them from
# the file for every page of work (bench/README.md, "Resync at scale").
CACHE_KIB = 65_536
# A checkpoint every 10,000 WAL pages (40 MB) instead of 1,000: a resync writes
# the same pages of the owed and accepted tables page after page of work, and each
# checkpoint copies (and syncs) them into the database file again.
WAL_AUTOCHECKPOINT = 10_000
# Counters in meta (see :meth:`StateStore.counter`): requests sent, and the bytes of
# the imports accepted (:mod:`consumer.state.settling` adds to it).
REQUESTS_SENT = "requests_sent"
IMPORT_BYTES = "import_bytes_accepted"
# Reads by parent or email name their index (INDEXED BY): without statistics SQLite
# takes ``kind = ?``, the primary key's first column, for selective, and would read
# every item (or order, or customer) of the store for each chunk of keys.

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    kind TEXT NOT NULL, key TEXT NOT NULL, parent TEXT, email TEXT,
    fields BLOB NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, changed_ms INTEGER,
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
CREATE TABLE IF NOT EXISTS sends (at REAL NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class StoredRow:
    row: MappedRow
    deleted: bool


# Built once: ``json.loads(blob, parse_float=Decimal)`` builds a decoder per call,
# which cost a third of reading a row.
_EXACT = json.JSONDecoder(parse_float=Decimal)
# Numbers kept as the text they were written with, for bytes out and hashes only
# (a worker building documents): orjson writes a Fragment as it is, without the
# Python call a Decimal costs it, and the bytes are the same.
_VERBATIM = json.JSONDecoder(parse_float=orjson.Fragment)


def loads_fields(blob: bytes | str) -> dict[str, Any]:
    """A row's fields; money comes back exact, never through float."""
    value: dict[str, Any] = _EXACT.raw_decode(blob if isinstance(blob, str) else blob.decode())[0]
    return value


def loads_fields_verbatim(blob: bytes | str) -> dict[str, Any]:
    """A row's fields with decimal numbers as :class:`orjson.Fragment` of their exact
    text: for documents that are only serialized and hashed, never computed with."""
    text = blob if isinstance(blob, str) else blob.decode()
    value: dict[str, Any] = _VERBATIM.raw_decode(text)[0]
    return value


def _create_private(path: Path) -> None:
    """The file readable and writable by its owner only (it holds shop data): created
    so, or tightened (a store created before that rule, or copied with a wider mode)."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            file.chmod(0o600)


class StateStore:
    """SQLite-backed rows, accepted hashes, applied offsets, meta and sends."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            _create_private(Path(path))
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
        self.db.executescript(_SCHEMA)
        self._migrate()
        self._in_transaction = False
        self.read_only = False
        self.path = None if str(path) == ":memory:" else Path(path)
        self._loads = loads_fields

    @property
    def instance_id(self) -> str:
        """Who this store belongs to: written into commits, so that a member taking
        over knows whether the last sender was itself."""
        found = self.meta("instance_id")
        if found is None:
            found = uuid.uuid4().hex
            self.set_meta("instance_id", found)
        return found

    def record_send(self, at: float, window: float) -> None:
        """A request slot taken at ``at`` (wall clock); older than ``window`` is dropped.
        Counted too, for good (what a resync reports survives a restart)."""
        with self.transaction():
            self.db.execute("DELETE FROM sends WHERE at < ?", (at - window,))
            self.db.execute("INSERT INTO sends (at) VALUES (?)", (at,))
            self.add_to_counter(REQUESTS_SENT, 1)

    def sends_since(self, since: float) -> list[float]:
        return [
            float(at) for (at,) in self.db.execute("SELECT at FROM sends WHERE at >= ?", (since,))
        ]

    @classmethod
    def open_read_only(
        cls, path: str | Path, *, verbatim_numbers: bool = False, cache_kib: int = 8192
    ) -> StateStore:
        """The store of a running service, to read beside it (WAL lets readers in).
        With ``verbatim_numbers``, rows' decimal numbers are read as the exact text
        they were written with (:func:`loads_fields_verbatim`): for a process that
        only builds documents from them."""
        if not Path(path).exists():
            raise FileNotFoundError(f"no store at {path}")
        store = cls.__new__(cls)
        store.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        store.db.execute(f"PRAGMA cache_size=-{cache_kib}")
        store._in_transaction = False
        store.read_only = True
        store.path = Path(path)
        store._loads = loads_fields_verbatim if verbatim_numbers else loads_fields
        return store

    def _migrate(self) -> None:
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(rows)")}
        if "changed_ms" not in columns:  # a store of version 1
            self.db.execute("ALTER TABLE rows ADD COLUMN changed_ms INTEGER")
        self.set_meta("schema_version", str(SCHEMA_VERSION))

    def close(self) -> None:
        self.db.close()

    # -- transactions ----------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction (nested calls join the outer one)."""
        if self._in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN")
        self._in_transaction = True
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._in_transaction = False

    # -- meta ----------------------------------------------------------------------

    def meta(self, name: str) -> str | None:
        found = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if found is None else str(found[0])

    def set_meta(self, name: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def counter(self, name: str) -> int:
        """A count kept in meta across restarts (0 before the first)."""
        found = self.meta(name)
        return 0 if found is None else int(found)

    def add_to_counter(self, name: str, amount: int) -> None:
        """Adds to a counter, in the caller's transaction (so it counts what committed)."""
        self.db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name)"
            " DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + ? AS TEXT)",
            (name, str(amount), amount),
        )

    # -- offsets -----------------------------------------------------------------

    def applied_offsets(self) -> dict[tuple[str, int], int]:
        """Per partition, the next offset the store has not applied yet."""
        cur = self.db.execute("SELECT topic, partition, next_offset FROM offsets")
        return {(t, p): o for t, p, o in cur}

    # -- reading rows --------------------------------------------------------------

    def chunked(self, sql: str, head: tuple[Any, ...], keys: list[str]) -> list[Any]:
        """``sql`` with ``{marks}`` for an IN list, run over ``keys`` in chunks."""
        found: list[Any] = []
        for start in range(0, len(keys), CHUNK):
            part = keys[start : start + CHUNK]
            marks = ",".join("?" * len(part))
            found.extend(self.db.execute(sql.format(marks=marks), (*head, *part)).fetchall())
        return found

    def get(self, kind: Kind, key: str) -> StoredRow | None:
        return self.get_many([(kind, key)]).get((kind, key))

    def live(self, kind: Kind, key: str) -> MappedRow | None:
        stored = self.get(kind, key)
        return None if stored is None or stored.deleted else stored.row

    def changed_ms(self, kind: Kind, key: str) -> tuple[bool, int | None]:
        """Whether a row is stored (deleted or not), and the source time of its last
        change (a replayed dead letter must not undo a later change)."""
        found = self.db.execute(
            "SELECT changed_ms FROM rows WHERE kind = ? AND key = ?", (kind.value, key)
        ).fetchone()
        return (False, None) if found is None else (True, found[0])

    # Bulk reads: a few queries per batch instead of a few per row. Every
    # sqlite3 call releases the GIL; while kafka-python's I/O thread is busy
    # decoding fetches, each re-acquisition waits for it.

    def get_many(self, keys: Iterable[tuple[Kind, str]]) -> dict[tuple[Kind, str], StoredRow]:
        by_kind: dict[Kind, set[str]] = {}
        for kind, key in keys:
            by_kind.setdefault(kind, set()).add(key)
        rows: dict[tuple[Kind, str], StoredRow] = {}
        for kind, wanted in by_kind.items():
            found = self.chunked(
                "SELECT key, parent, email, fields, deleted FROM rows"
                " WHERE kind = ? AND key IN ({marks})",
                (kind.value,),
                sorted(wanted),
            )
            for key, parent, email, blob, deleted in found:
                rows[(kind, key)] = StoredRow(
                    MappedRow(kind, key, self._loads(blob), parent, email), bool(deleted)
                )
        return rows

    def items_of_many(self, order_keys: Iterable[str]) -> dict[str, list[ItemFields]]:
        """Each order's live items, their fields as the JSON stored (never parsed:
        they are only written out and hashed, :data:`schemas.rfmcube.ItemFields`)."""
        items: dict[str, list[ItemFields]] = {key: [] for key in order_keys}
        found = self.chunked(
            "SELECT key, parent, fields FROM rows INDEXED BY rows_by_parent"
            " WHERE kind = 'item' AND deleted = 0 AND parent IN ({marks})",
            (),
            sorted(items),
        )
        fragment = orjson.Fragment
        for key, parent, blob in found:
            items[parent].append((key, fragment(blob)))
        return items

    def customers_by_email_many(self, emails: Iterable[str]) -> dict[str, MappedRow]:
        """The live registered customer of each email (the lowest key when several)."""
        found = self.chunked(
            "SELECT key, parent, email, fields FROM rows INDEXED BY rows_by_email"
            " WHERE kind = 'customer' AND deleted = 0 AND email IN ({marks}) ORDER BY key DESC",
            (),
            sorted(set(emails)),
        )
        # Descending, so the lowest key wins.
        loads = self._loads
        return {e: MappedRow(Kind.CUSTOMER, k, loads(f), p, e) for k, p, e, f in found}

    def guest_orders_many(self, emails: Iterable[str]) -> dict[str, list[StoredRow]]:
        """Orders that name the email and no customer id, deleted ones included."""
        orders: dict[str, list[StoredRow]] = {email: [] for email in emails}
        found = self.chunked(
            "SELECT key, email, fields, deleted FROM rows INDEXED BY rows_by_email"
            " WHERE kind = 'order' AND parent IS NULL AND email IN ({marks})",
            (),
            sorted(orders),
        )
        for key, email, blob, deleted in found:
            row = MappedRow(Kind.ORDER, key, self._loads(blob), None, email)
            orders[email].append(StoredRow(row, bool(deleted)))
        return orders

    def order_keys_of_customers(self, customer_keys: Iterable[str]) -> list[str]:
        """Keys of the orders (deleted ones included) of these registered customers."""
        found = self.chunked(
            "SELECT key FROM rows WHERE kind = 'order' AND parent IN ({marks})",
            (),
            sorted(set(customer_keys)),
        )
        return [key for (key,) in found]

    def guest_order_keys(self, emails: Iterable[str]) -> list[str]:
        """Keys of the guest orders (no customer id) of these emails, deleted ones included."""
        found = self.chunked(
            "SELECT key FROM rows INDEXED BY rows_by_email"
            " WHERE kind = 'order' AND parent IS NULL AND email IN ({marks})",
            (),
            sorted(set(emails)),
        )
        return [key for (key,) in found]

    def counts(self) -> dict[str, int]:
        cur = self.db.execute("SELECT kind, COUNT(*) FROM rows WHERE deleted = 0 GROUP BY kind")
        return {kind: n for kind, n in cur}

    # -- what Rfmcube holds ----------------------------------------------------------

    def accepted_hashes(self, docs: Iterable[DocRef]) -> dict[DocRef, str]:
        by_kind: dict[Kind, list[str]] = {}
        for kind, key in docs:
            by_kind.setdefault(kind, []).append(key)
        hashes: dict[DocRef, str] = {}
        for kind, keys in by_kind.items():
            found = self.chunked(
                "SELECT key, hash FROM accepted WHERE kind = ? AND key IN ({marks})",
                (kind.value,),
                keys,
            )
            hashes.update({(kind, key): str(digest) for key, digest in found})
        return hashes

    def accepted_hash(self, doc: DocRef) -> str | None:
        return self.accepted_hashes([doc]).get(doc)

    def set_accepted(self, hashes: Mapping[DocRef, str]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO accepted (kind, key, hash) VALUES (?, ?, ?)"
                " ON CONFLICT (kind, key) DO UPDATE SET hash = excluded.hash",
                [(kind.value, key, h) for (kind, key), h in hashes.items()],
            )

    def forget_accepted(self, docs: Iterable[DocRef]) -> None:
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM accepted WHERE kind = ? AND key = ?",
                [(kind.value, key) for kind, key in docs],
            )
