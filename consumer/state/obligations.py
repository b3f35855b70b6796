"""What the service owes the API, kept in the store (see :mod:`consumer.state.store`).

This module is the one owner of the obligations' tables: their schema, every
write and every read. An obligation is written in the same transaction as the
rows and offsets of the records that create it (a batch of
:mod:`consumer.state.batch` hands them to :meth:`Obligations.write_batch`),
and leaves the store only when the API accepted it, or when the import that
carried it completed:

- ``owed``: a document to bring up to date (``seq`` grows with every change,
  so a send settles only what it saw), with ``since``, when it became owed;
- ``owed_deletes``: customer deletes, in the order they happened;
- ``owed_marks``: per document and partition, the first and last offsets of
  the records waiting on it. A partition's commit floor is its applied offset
  lowered to the first offset any obligation still holds;
- ``imports``: imports accepted whose process is not known to have completed,
  with the documents and hashes they carried (``import_docs``) and the first
  records they carried per partition (``import_marks``), which hold commits
  back in ``completed`` acceptance (``holds``) and always lower the floor a
  commit reports as completed (:mod:`consumer.checkpoint`). A failed or
  unknown process puts its documents back as owed. A *foreign* import is one
  another instance had accepted and not seen completed when this one took over
  (learned from the group's commits, :meth:`Obligations.adopt_imports`): it is
  taken to carry every document the records between the commits' floor and
  their offset touched; with none known, every document
  (``unknown_docs``).

Freshness (``rfmcube_cdc_freshness_seconds``): an owed document keeps the
source time (Debezium's ts_ms) of the oldest change waiting on it
(``owed.source_ms``), and of the oldest change of the last batch that touched
it (``owed.latest_ms``), which is what still waits once a send settled the
changes it saw. An import keeps it per document (``import_staged``, then ``import_docs``),
for ``completed`` acceptance and for a failed process, whose documents are
owed again with it. What is owed without a change of its own (a resync, a
mapping change, orders that follow their customer) has none, and is not
observed.

Big steps go in pages that each commit, so that none holds the event loop for
long at any shop size and a crash between two pages loses nothing: owing a
resync's scope (:mod:`consumer.state.owing`), recording and settling an
import (:mod:`consumer.state.settling`), and its end, completed or failed
(:mod:`consumer.state.pending`, with the imports pending, their checks and
those adopted from another instance). Those modules hold methods of
:class:`Obligations` (owing and settling also the schemas of their own tables);
this class stays their one owner. The values it is written and read as are
:mod:`consumer.state.owed`'s (and re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from consumer.state.owed import BatchObligation, OwedDoc, OwedRow, Settlement, owed_doc
from consumer.state.owing import OWING_SCHEMA, OwingPages, OwingScope
from consumer.state.pending import PendingImport, PendingImports
from consumer.state.settling import SETTLING_SCHEMA, ImportPages, StagedRow
from consumer.state.store import StateStore
from schemas.debezium import PartitionId, Position
from schemas.entities import CustomerIdentity, DocRef, Kind

__all__ = [
    "BatchObligation",
    "Obligations",
    "OwedDoc",
    "OwedRow",
    "OwingScope",
    "PendingImport",
    "Settlement",
    "StagedRow",
    "owed_doc",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS owed (
    kind TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owed_deletes (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, id TEXT, email TEXT
);
CREATE INDEX IF NOT EXISTS owed_deletes_by_doc ON owed_deletes (kind, key);
CREATE TABLE IF NOT EXISTS owed_marks (
    kind TEXT NOT NULL, key TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    first_offset INTEGER NOT NULL, last_offset INTEGER NOT NULL,
    PRIMARY KEY (kind, key, topic, partition)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owed_marks_by_partition ON owed_marks (topic, partition, first_offset);
CREATE TABLE IF NOT EXISTS imports (
    process_id TEXT PRIMARY KEY, accepted_at REAL NOT NULL, next_check REAL NOT NULL,
    checks INTEGER NOT NULL DEFAULT 0, unknown_docs INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS import_docs (
    process_id TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, hash TEXT,
    PRIMARY KEY (kind, key, process_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS import_docs_by_process ON import_docs (process_id);
CREATE TABLE IF NOT EXISTS import_marks (
    process_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    first_offset INTEGER NOT NULL, holds INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (process_id, topic, partition)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS import_marks_by_partition ON import_marks (topic, partition);
"""


class Obligations(OwingPages, ImportPages, PendingImports):
    """Reads and settles the obligations of one store."""

    def __init__(
        self,
        store: StateStore,
        *,
        first_check: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.db = store.db
        if not store.read_only:
            self.db.executescript(_SCHEMA + OWING_SCHEMA + SETTLING_SCHEMA)
            self._migrate()
            self._add_freshness_columns()
        found = self.db.execute(
            "SELECT max(s) FROM (SELECT max(seq) AS s FROM owed"
            " UNION ALL SELECT max(seq) FROM owed_deletes)"
        ).fetchone()
        self._seq = int(found[0] or 0)
        self._staged_n = 0
        if not store.read_only:  # a reader (a planning worker) numbers and stages nothing
            # A resync's reserved numbers too: what is not owed yet of it will be.
            self._seq = max(self._seq, self.reserved_seq())
            self._staged_n = self._last_staged()
        # An import's first check waits this long: most processes are done by
        # then, and a check that finds one running costs a second request.
        self._first_check = first_check
        self._clock = clock

    def _migrate(self) -> None:
        """Columns a store written by an earlier version lacks (their defaults are
        what those versions meant)."""
        for table, column in (("imports", "unknown_docs"), ("import_marks", "holds")):
            columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                default = 1 if column == "holds" else 0
                self.db.execute(
                    f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT {default}"
                )

    def _add_freshness_columns(self) -> None:
        """The source times of the changes a document carries (see the module's
        docstring); NULL in a store written before them: those are not observed."""
        for table, column in (
            ("owed", "source_ms"),
            ("owed", "latest_ms"),
            ("import_docs", "source_ms"),
        ):
            columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER")
        # The age index (a flush takes the documents owed longest) carries the source
        # time too: taking a page reads the index alone. Without it each document was
        # looked up in the table, 4 µs a document of a resync (the index a store
        # written before had is replaced, once).
        self.db.execute("DROP INDEX IF EXISTS owed_by_age")
        self.db.execute(
            "CREATE INDEX IF NOT EXISTS owed_by_age_and_source ON owed (since, seq, source_ms)"
        )

    # -- numbering -----------------------------------------------------------------

    def last_seq(self) -> int:
        """The newest obligation's number: a flush takes nothing newer (what changes
        while it runs is for the next flush)."""
        return self._seq

    def advance_seq(self, seq: int) -> None:
        """Numbers up to ``seq`` were given out in SQL (a resync's owed documents)."""
        self._seq = max(self._seq, seq)

    def next_seq(self) -> int:
        """A number that orders every obligation ever written (deletes among upserts)."""
        self._seq += 1
        return self._seq

    # -- written with a batch of records ---------------------------------------------

    def write_batch(self, owed: Mapping[DocRef, BatchObligation], now: float) -> None:
        """A batch's obligations, inside its transaction."""
        if not owed:
            return
        db = self.db
        db.executemany(
            "INSERT INTO owed (kind, key, seq, since, source_ms, latest_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, key) DO UPDATE SET seq = excluded.seq,"
            # SQLite's min() of a NULL is NULL: the known time wins.
            " source_ms = coalesce(min(owed.source_ms, excluded.source_ms), owed.source_ms,"
            " excluded.source_ms), latest_ms = excluded.latest_ms",
            [
                (kind.value, key, o.seq, now, o.source_ms, o.source_ms)
                for (kind, key), o in owed.items()
            ],
        )
        db.executemany(
            "INSERT INTO owed_marks (kind, key, topic, partition, first_offset, last_offset)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, key, topic, partition) DO UPDATE SET"
            " first_offset = min(first_offset, excluded.first_offset),"
            " last_offset = max(last_offset, excluded.last_offset)",
            [
                (kind.value, key, topic, partition, first, last)
                for (kind, key), o in owed.items()
                for (topic, partition), (first, last) in o.marks.items()
            ],
        )
        db.executemany(
            "INSERT INTO owed_deletes (seq, kind, key, id, email) VALUES (?, ?, ?, ?, ?)",
            [
                (seq, kind.value, key, who.id, who.email)
                for (kind, key), o in owed.items()
                for seq, who in o.deletes
            ],
        )

    # -- owed documents ----------------------------------------------------------

    def owed_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM owed").fetchone()[0])

    def oldest_since(self) -> float | None:
        found = self.db.execute("SELECT min(since) FROM owed").fetchone()[0]
        return None if found is None else float(found)

    def take(
        self, limit: int, after: tuple[float, int] | None = None, until_seq: int | None = None
    ) -> list[OwedDoc]:
        """Up to ``limit`` owed documents, the longest owed first; ``after`` the
        (since, seq) of the last one taken, for the next page; none newer than
        ``until_seq``."""
        return [owed_doc(row) for row in self.take_rows(limit, after, until_seq)]

    def take_rows(
        self, limit: int, after: tuple[float, int] | None = None, until_seq: int | None = None
    ) -> list[OwedRow]:
        """:meth:`take` as plain tuples (:data:`OwedRow`): what a page for a worker
        process needs, without an object per document."""
        since, seq = after if after is not None else (float("-inf"), -1)
        until = until_seq if until_seq is not None else self._seq
        rows = self.db.execute(
            "SELECT kind, key, seq, since, source_ms FROM owed"
            " WHERE (since, seq) > (?, ?) AND seq <= ? ORDER BY since, seq LIMIT ?",
            (since, seq, until, limit),
        ).fetchall()
        customers = [key for kind, key, _, _, _ in rows if kind in ("customer", "guest")]
        deletes: dict[tuple[str, str], list[tuple[int, str | None, str | None]]] = {}
        if customers:
            found = self.store.chunked(
                "SELECT seq, kind, key, id, email FROM owed_deletes"
                " WHERE key IN ({marks}) ORDER BY seq",
                (),
                customers,
            )
            for dseq, kind, key, who_id, email in found:
                deletes.setdefault((kind, key), []).append((dseq, who_id, email))
        if not deletes:
            return [(kind, key, seq, since, (), ms) for kind, key, seq, since, ms in rows]
        return [
            (kind, key, seq, since, tuple(deletes.get((kind, key), ())), ms)
            for kind, key, seq, since, ms in rows
        ]

    def position_of(self, ref: DocRef) -> Position | None:
        """The latest record waiting on an owed document (for a dead letter's headers)."""
        found = self.db.execute(
            "SELECT topic, partition, last_offset FROM owed_marks WHERE kind = ? AND key = ?"
            " ORDER BY last_offset DESC LIMIT 1",
            (ref[0].value, ref[1]),
        ).fetchone()
        return None if found is None else Position(found[0], int(found[1]), int(found[2]))

    def deletes_owed(self, customer_keys: Iterable[str]) -> set[str]:
        """Which of these customers still have a delete owed to the API."""
        found = self.store.chunked(
            "SELECT DISTINCT key FROM owed_deletes WHERE kind = 'customer' AND key IN ({marks})",
            (),
            sorted(set(customer_keys)),
        )
        return {key for (key,) in found}

    def owe_everything(self, *, since_ms: int | None, forget: bool) -> tuple[int, int, int]:
        """Owe every customer and order (changed since ``since_ms``, when given),
        grouped by customer so that pages carry whole customers, all at once (the
        service owes a resync's scope page by page: :mod:`consumer.state.owing`).
        With ``forget``, Rfmcube is assumed not to hold them: their accepted hashes
        are dropped, so each goes out whatever it held. Returns (documents, first
        seq, last seq)."""
        self.begin_owing(since_ms=since_ms, forget=forget)
        while (scope := self.owe_page(5000)) is not None and not scope.finished:
            pass
        found = self.owing_scope()
        assert found is not None
        return found.owed, found.first_seq, found.last_seq

    def owed_between(self, first: int, last: int, *, since: float | None = None) -> int:
        """Owed documents numbered from ``first`` to ``last`` (a resync's, still owed);
        with ``since`` (when the scope was reserved), counted on the age index: a
        resync's documents and the older backlog only, not the whole table."""
        args: tuple[float, ...]
        if since is None:
            query, args = "SELECT count(*) FROM owed WHERE seq BETWEEN ? AND ?", (first, last)
        else:
            query = "SELECT count(*) FROM owed WHERE since <= ? AND seq BETWEEN ? AND ?"
            args = (since, first, last)
        return int(self.db.execute(query, args).fetchone()[0])

    def owe(self, refs: Iterable[DocRef]) -> int:
        """Owe these documents again (no record waits on them); returns how many."""
        now = self._clock()
        rows = [(kind.value, key, self.next_seq(), now) for kind, key in refs]
        with self.store.transaction() as db:
            db.executemany(
                "INSERT INTO owed (kind, key, seq, since) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (kind, key) DO UPDATE SET seq = excluded.seq",
                rows,
            )
        return len(rows)

    # -- settling a flush ----------------------------------------------------------

    def settle(self, settlement: Settlement) -> None:
        with self.store.transaction() as db:
            if settlement.accepted:
                db.executemany(
                    "INSERT INTO accepted (kind, key, hash) VALUES (?, ?, ?)"
                    " ON CONFLICT (kind, key) DO UPDATE SET hash = excluded.hash",
                    [(kind.value, key, h) for (kind, key), h in settlement.accepted.items()],
                )
            for ref, who in settlement.deleted.items():
                self._forget_deleted(ref, who)
            done = settlement.done
            db.executemany(
                "DELETE FROM owed_deletes WHERE kind = ? AND key = ? AND seq <= ?",
                [(d.ref[0].value, d.ref[1], d.delete_seq) for d in done if d.deletes],
            )
            db.executemany(
                "DELETE FROM owed WHERE kind = ? AND key = ? AND seq <= ?",
                [(d.ref[0].value, d.ref[1], d.seq) for d in done],
            )
            # Changed again while it was sent: what still waits is the last batch's.
            db.executemany(
                "UPDATE owed SET source_ms = latest_ms WHERE kind = ? AND key = ?",
                [(d.ref[0].value, d.ref[1]) for d in done if d.source_ms is not None],
            )
            # A document changed again meanwhile keeps its marks: the next send settles them.
            db.executemany(
                "DELETE FROM owed_marks WHERE kind = ? AND key = ? AND NOT EXISTS"
                " (SELECT 1 FROM owed WHERE owed.kind = ? AND owed.key = ?)",
                [(d.ref[0].value, d.ref[1], d.ref[0].value, d.ref[1]) for d in done],
            )

    def _forget_deleted(self, ref: DocRef, who: CustomerIdentity) -> None:
        """Rfmcube deleted the customer and all its orders: none of them may be skipped
        as unchanged when they are sent again."""
        kind, key = ref
        db = self.db
        db.execute("DELETE FROM accepted WHERE kind = ? AND key = ?", (kind.value, key))
        if kind is Kind.CUSTOMER:
            db.execute(
                "DELETE FROM accepted WHERE kind = 'order' AND key IN"
                " (SELECT key FROM rows WHERE kind = 'order' AND parent = ?)",
                (key,),
            )
        if who.email:
            db.execute(
                "DELETE FROM accepted WHERE kind = 'order' AND key IN (SELECT key FROM rows"
                " INDEXED BY rows_by_email WHERE kind = 'order' AND parent IS NULL AND email = ?)",
                (who.email,),
            )

    def drop_delivered(self, committed: Mapping[PartitionId, int]) -> int:
        """A standby's store: drop the obligations whose records are all below the
        group's committed offsets (the active met them). Returns how many documents."""
        with self.store.transaction() as db:
            below = [(topic, partition, offset) for (topic, partition), offset in committed.items()]
            touched = set()
            for topic, partition, offset in below:
                touched.update(
                    db.execute(
                        "SELECT kind, key FROM owed_marks"
                        " WHERE topic = ? AND partition = ? AND last_offset < ?",
                        (topic, partition, offset),
                    ).fetchall()
                )
            db.executemany(
                "DELETE FROM owed_marks WHERE topic = ? AND partition = ? AND last_offset < ?",
                below,
            )
            dropped = 0
            for kind, key in touched:
                gone = db.execute(
                    "DELETE FROM owed WHERE kind = ? AND key = ? AND NOT EXISTS"
                    " (SELECT 1 FROM owed_marks m WHERE m.kind = ? AND m.key = ?)",
                    (kind, key, kind, key),
                ).rowcount
                if gone:
                    dropped += 1
                    db.execute("DELETE FROM owed_deletes WHERE kind = ? AND key = ?", (kind, key))
        return dropped

    # -- commits -------------------------------------------------------------------

    def commit_floors(
        self, partitions: Iterable[PartitionId], *, through_imports: bool = False
    ) -> dict[PartitionId, int]:
        """Per partition, the offset up to which every record was applied and every
        obligation it created was met: what may be committed. Imports accepted
        but not yet completed hold it back where they must (``completed``
        acceptance) or, with ``through_imports``, always: below that floor
        Rfmcube holds every record's documents for sure."""
        wanted = set(partitions)
        floors = {tp: o for tp, o in self.store.applied_offsets().items() if tp in wanted}
        queries = [
            "SELECT topic, partition, min(first_offset) FROM owed_marks GROUP BY topic, partition",
            "SELECT topic, partition, min(first_offset) FROM import_marks"
            + ("" if through_imports else " WHERE holds = 1")
            + " GROUP BY topic, partition",
        ]
        for query in queries:
            for topic, partition, first in self.db.execute(query):
                tp = (topic, partition)
                if tp in floors:
                    floors[tp] = min(floors[tp], int(first))
        return floors
