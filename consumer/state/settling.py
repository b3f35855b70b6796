"""Imports recorded and settled in pages (part of
:class:`consumer.state.obligations.Obligations`).

An import of 200 MB carries half a million documents. Settling it in one
transaction (accepted hashes, the import's documents, the owed rows) held the
event loop for 11 to 15 s. Here:

- **staged while packed** (:meth:`ImportPages.stage_many`): what each part of an
  import carries (document, hash, the number it was owed under, its deletes')
  is written to ``import_staged`` as the part is packed, so that neither
  memory nor the moment of acceptance grows with the import;
- **accepted in one short transaction** (:meth:`ImportPages.accept_import`):
  the import becomes pending (``imports``) with the range of staged rows it
  carries (``import_settling``). From then on a crash cannot send again what
  it carried: whatever comes next resumes from the store;
- **settled in pages** (:meth:`ImportPages.settle_page`): each page moves a
  slice of the staged rows into the accepted hashes and the import's documents
  (``import_docs``, ``import_marks``), and meets the owed rows they carried. The
  slices go in key order, not in the order they were packed (a customer, then
  its orders, whose keys are anywhere): a commit writes every page of the
  tables it touched, so pages of scattered keys rewrote most of those tables at
  each commit (11.5 s for 450,000 documents; 4.9 s in key order). The rows are
  sorted in a scratch file beside the store (attached, no journal: rebuilt
  after a crash from the staged rows and the key the settling reached), as
  far as they can be while the import is still on the wire and no other is
  being settled (:meth:`ImportPages.presort_page`: the service mostly waits
  for a large import's answer; the sorted rows serve only an import accepted
  with exactly their range). The flush that sent it finishes settling before
  another flush plans. Its process may be checked meanwhile: completed, the
  pages left skip what only a pending import needs (its documents and marks);
  failed, the failure waits for the last page
  (:meth:`ImportPages.settling_import`), so that all it carried is owed again
  (its end: :mod:`consumer.state.pending`).

Staged rows no settling range holds (an import refused, or never answered
before a crash) are dropped at the end of each flush (:meth:`drop_staged`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence

from consumer.state.store import IMPORT_BYTES, StateStore

__all__ = ["ImportPages", "StagedRow"]

_UNCHECKED = "\x00unchecked:"  # an import accepted without a processId, while it settles

SETTLING_SCHEMA = """
CREATE TABLE IF NOT EXISTS import_staged (
    n INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, hash TEXT,
    seq INTEGER, delete_seq INTEGER NOT NULL DEFAULT 0, source_ms INTEGER
);
CREATE TABLE IF NOT EXISTS import_settling (
    process_id TEXT PRIMARY KEY, first_n INTEGER NOT NULL, last_n INTEGER NOT NULL,
    holds INTEGER NOT NULL, done_kind TEXT NOT NULL DEFAULT '',
    done_key TEXT NOT NULL DEFAULT '', done_n INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imports_done (process_id TEXT PRIMARY KEY) WITHOUT ROWID;
"""


StagedRow = tuple[str, str, str | None, int | None, int, int | None]
"""What an import carries of one document, as it is staged: its kind (the value)
and key, its hash (None: a registered customer's container, written again but
not remembered) and, for a document that was owed, the number it was owed under
(None: not owed, a container), that of its last delete (0: none) and the source
time of the oldest change it carries (ms; None: unknown, for freshness). Plain
tuples: half a million of them cross from the workers for a 200 MB import."""


_SORT = "settle_sort"  # the scratch database's name on the connection
_NOTHING_SETTLED = ("", "", 0)  # the key an import's settling reached before its first page
_DELETE_PAGE = 100_000  # staged rows dropped at a time once settled (in their order: cheap)
_SORT_CACHE_KIB = 32_768  # the scratch's own page cache: sorting inserts anywhere in it


class ImportPages:
    """Mixed into :class:`~consumer.state.obligations.Obligations`, which owns the tables."""

    store: StateStore
    db: sqlite3.Connection
    _clock: Callable[[], float]
    _first_check: float
    _staged_n: int
    _sorted: tuple[str, int] | None = None  # (import, staged rows sorted up to n) in scratch
    # (staged range, sorted up to n): an import's rows sorted while it was on the wire.
    _presorted: tuple[tuple[int, int], int] | None = None
    _sort_attached = False

    def _last_staged(self) -> int:
        return int(self.db.execute("SELECT max(n) FROM import_staged").fetchone()[0] or 0)

    # -- staged while packed --------------------------------------------------------

    def stage_many(self, parts: Sequence[Sequence[StagedRow]]) -> list[tuple[int, int]]:
        """Write what each of several parts carries, in one transaction; returns the
        range of each part's rows (first, last)."""
        ranges = []
        rows: list[tuple[int, str, str, str | None, int | None, int, int | None]] = []
        n = self._staged_n
        for carried in parts:
            ranges.append((n + 1, n + len(carried)))
            rows.extend((n + i, *row) for i, row in enumerate(carried, 1))
            n += len(carried)
        with self.store.transaction() as db:
            db.executemany(
                "INSERT INTO import_staged (n, kind, key, hash, seq, delete_seq, source_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        self._staged_n = n
        return ranges

    def staged(self, first: int, last: int) -> list[StagedRow]:
        """The rows of a range, in the order they were staged."""
        rows = self.db.execute(
            "SELECT kind, key, hash, seq, delete_seq, source_ms FROM import_staged"
            " WHERE n BETWEEN ? AND ? ORDER BY n",
            (first, last),
        )
        return [(k, key, h, seq, dseq, ms) for k, key, h, seq, dseq, ms in rows]

    def drop_staged(self) -> None:
        """Rows no accepted import holds: a refused import's, or those of an import
        whose answer a crash never let arrive (its documents are still owed)."""
        with self.store.transaction() as db:
            held = db.execute("SELECT min(first_n) FROM import_settling").fetchone()[0]
            if held is None:
                db.execute("DELETE FROM import_staged")
                return
            db.execute(
                "DELETE FROM import_staged WHERE NOT EXISTS (SELECT 1 FROM import_settling s"
                " WHERE import_staged.n BETWEEN s.first_n AND s.last_n)"
            )

    # -- accepted and settled ---------------------------------------------------------

    def accept_import(
        self, process_id: str | None, staged: tuple[int, int], *, hold_commits: bool, nbytes: int
    ) -> None:
        """The API accepted an import carrying these staged rows: pending from now on
        (short: its rows are settled by :meth:`settle_page`). Without a process id
        there is nothing to check: its rows are settled all the same."""
        now = self._clock()
        with self.store.transaction() as db:
            if process_id is None:
                process_id = f"{_UNCHECKED}{staged[0]}"
            else:
                db.execute(
                    "INSERT OR REPLACE INTO imports (process_id, accepted_at, next_check, checks)"
                    " VALUES (?, ?, ?, 0)",
                    (process_id, now, now + self._first_check),
                )
                db.execute("DELETE FROM imports_done WHERE process_id = ?", (process_id,))
            db.execute(
                "INSERT OR REPLACE INTO import_settling (process_id, first_n, last_n, holds)"
                " VALUES (?, ?, ?, ?)",
                (process_id, staged[0], staged[1], int(hold_commits)),
            )
            self.store.add_to_counter(IMPORT_BYTES, nbytes)

    def settling(self) -> int:
        """Accepted imports whose staged rows are not all settled yet."""
        return int(self.db.execute("SELECT count(*) FROM import_settling").fetchone()[0])

    def settling_import(self, process_id: str) -> bool:
        """Whether this import's staged rows are not all settled yet."""
        found = self.db.execute(
            "SELECT 1 FROM import_settling WHERE process_id = ?", (process_id,)
        ).fetchone()
        return found is not None

    def settle_page(self, limit: int, sources: list[int] | None = None) -> int:
        """One step of settling an accepted import: sorting up to ``limit`` of its staged
        rows, settling up to ``limit`` of them in key order (one transaction with the
        key reached), or dropping them once all are settled. Returns how many rows the
        step handled (0: nothing left to settle); adds to ``sources`` the source times
        of the owed documents it delivered (freshness)."""
        found = self.db.execute(
            "SELECT process_id, first_n, last_n, holds, done_kind, done_key, done_n"
            " FROM import_settling LIMIT 1"
        ).fetchone()
        if found is None:
            return 0
        pid, first, last, holds, *done = found
        self._attach_sort()
        db = self.db
        if self._sorted is None or self._sorted[0] != pid:
            presorted, self._presorted = self._presorted, None
            fresh = tuple(done) == _NOTHING_SETTLED
            if presorted is not None and presorted[0] == (first, last) and fresh:
                self._sorted = (pid, presorted[1])  # sorted while it was on the wire
            else:
                db.execute(f"DELETE FROM {_SORT}.rows")
                self._sorted = (pid, first - 1)
        sorted_to = self._sorted[1]
        if sorted_to < last:
            upto = self._sort_staged(sorted_to, last, limit, done)
            self._sorted = (pid, upto)
            return int(upto - sorted_to)
        page = db.execute(
            f"SELECT kind, key, n FROM {_SORT}.rows WHERE (kind, key, n) > (?, ?, ?)"
            " ORDER BY kind, key, n LIMIT 1 OFFSET ?",
            (*done, limit - 1),
        ).fetchone()
        if page is None:  # fewer than a page left: the last one
            page = db.execute(
                f"SELECT kind, key, n FROM {_SORT}.rows ORDER BY kind DESC, key DESC, n DESC"
                " LIMIT 1"
            ).fetchone()
            if page is None or tuple(page) <= tuple(done):
                return self._drop_settled(pid, first, last)
        span = (*done, *page)
        with self.store.transaction():
            settled = self._settle_span(pid, holds, span, sources)
            db.execute(
                "UPDATE import_settling SET done_kind = ?, done_key = ?, done_n = ?"
                " WHERE process_id = ?",
                (*page, pid),
            )
        return settled

    def presort_page(self, staged: tuple[int, int], limit: int) -> int:
        """Sort up to ``limit`` of the staged rows of an import still on the wire, for
        the settling that follows its acceptance (the first step of :meth:`settle_page`,
        done while the service waits for the answer). Only while no accepted import
        uses the scratch; the sorted rows serve only an import accepted with exactly
        this range (a refused import's halves have others). Returns how many rows it
        sorted (0: all are, or the scratch is busy)."""
        if self._sorted is not None or self.settling():
            return 0
        self._attach_sort()
        first, last = staged
        if self._presorted is None or self._presorted[0] != staged:
            self.db.execute(f"DELETE FROM {_SORT}.rows")
            self._presorted = (staged, first - 1)
        sorted_to = self._presorted[1]
        if sorted_to >= last:
            return 0
        upto = self._sort_staged(sorted_to, last, limit, _NOTHING_SETTLED)
        self._presorted = (staged, upto)
        return upto - sorted_to

    def _sort_staged(self, sorted_to: int, last: int, limit: int, after: Sequence[object]) -> int:
        """Copy the next ``limit`` staged rows past ``sorted_to`` (up to ``last``) into the
        scratch: read in the order staged (sequential), sorted as inserted; only those
        past the key settling reached (``after``: kind, key, n). Returns the last n."""
        upto = min(last, sorted_to + limit)
        self.db.execute(
            f"INSERT INTO {_SORT}.rows SELECT kind, key, n, hash, seq, delete_seq, source_ms"
            " FROM import_staged WHERE n BETWEEN ? AND ? AND (kind, key, n) > (?, ?, ?)",
            (sorted_to + 1, upto, *after),
        )
        return upto

    def _settle_span(
        self, pid: str, holds: int, span: tuple[object, ...], sources: list[int] | None
    ) -> int:
        """The sorted rows after the key reached and up to a key (``span``: both, as
        kind, key, n), in one transaction with the caller's: set-based, in key order."""
        db = self.db
        rows = (
            f"FROM {_SORT}.rows r WHERE (r.kind, r.key, r.n) > (?, ?, ?)"
            " AND (r.kind, r.key, r.n) <= (?, ?, ?)"
        )
        pending = db.execute("SELECT 1 FROM imports WHERE process_id = ?", (pid,)).fetchone()
        if pending:
            # Still pending (not seen completed yet): what it carries, and the records
            # its documents wait on (before the owed marks go).
            db.execute(
                "INSERT INTO import_marks (process_id, topic, partition, first_offset, holds)"
                " SELECT ?, m.topic, m.partition, min(m.first_offset), ? FROM owed_marks m"
                f" WHERE (m.kind, m.key) IN (SELECT r.kind, r.key {rows})"
                " GROUP BY m.topic, m.partition ON CONFLICT (process_id, topic, partition)"
                " DO UPDATE SET first_offset = min(first_offset, excluded.first_offset)",
                (pid, holds, *span),
            )
            # A container (hash NULL) never hides the hash of the same customer's upsert.
            db.execute(
                f"INSERT INTO import_docs (process_id, kind, key, hash, source_ms) SELECT ?,"
                f" r.kind, r.key, r.hash, r.source_ms {rows} ON CONFLICT (kind, key, process_id)"
                " DO UPDATE SET hash = coalesce(excluded.hash, import_docs.hash),"
                " source_ms = coalesce(excluded.source_ms, import_docs.source_ms)",
                (pid, *span),
            )
        db.execute(
            f"INSERT INTO accepted (kind, key, hash) SELECT r.kind, r.key, r.hash {rows}"
            " AND r.hash IS NOT NULL ON CONFLICT (kind, key) DO UPDATE SET hash = excluded.hash",
            span,
        )
        # Met unless it changed since it was taken (a newer number): the next send.
        met = db.execute(
            f"SELECT r.kind, r.key, r.seq, r.delete_seq, r.source_ms {rows} AND r.seq IS NOT NULL",
            span,
        ).fetchall()
        db.executemany(
            "DELETE FROM owed WHERE kind = ? AND key = ? AND seq <= ?",
            [(kind, key, seq) for kind, key, seq, _, _ in met],
        )
        # Changed again while it was sent: what still waits is the last batch's.
        db.executemany(
            "UPDATE owed SET source_ms = latest_ms WHERE kind = ? AND key = ?",
            [(kind, key) for kind, key, _, _, ms in met if ms is not None],
        )
        db.executemany(
            "DELETE FROM owed_deletes WHERE kind = ? AND key = ? AND seq <= ?",
            [(kind, key, dseq) for kind, key, _, dseq, _ in met if dseq],
        )
        db.execute(
            "DELETE FROM owed_marks WHERE (kind, key) IN"
            f" (SELECT r.kind, r.key {rows} AND r.seq IS NOT NULL) AND NOT EXISTS"
            " (SELECT 1 FROM owed WHERE owed.kind = owed_marks.kind AND owed.key = owed_marks.key)",
            span,
        )
        # Delivered now, unless they wait for their process (``completed`` acceptance:
        # observed when it completed, from import_docs, :meth:`purge_page`).
        if sources is not None and not (pending and holds):
            sources.extend(ms for *_, ms in met if ms is not None)
        return len(met) or 1

    def _drop_settled(self, pid: str, first: int, last: int) -> int:
        """All of the import settled: its staged rows go, a page at a time (in their
        order: cheap), then its settling."""
        upto = min(last, first + _DELETE_PAGE - 1)
        with self.store.transaction() as db:
            db.execute("DELETE FROM import_staged WHERE n BETWEEN ? AND ?", (first, upto))
            if upto >= last:
                db.execute("DELETE FROM import_settling WHERE process_id = ?", (pid,))
            else:
                db.execute(
                    "UPDATE import_settling SET first_n = ? WHERE process_id = ?", (upto + 1, pid)
                )
        if upto >= last:
            self.db.execute(f"DELETE FROM {_SORT}.rows")
            self._sorted = None
        return upto - first + 1

    def _attach_sort(self) -> None:
        """The scratch database where an import's rows are sorted: a file beside the
        store, readable by its owner only, without a journal (its content is rebuilt
        after a crash); memory for a store in memory."""
        if self._sort_attached:
            return
        path = self.store.path
        if path is None:
            where = ":memory:"
        else:
            where = str(path.with_name(path.name + "-sort"))
            os.close(os.open(where, os.O_CREAT | os.O_WRONLY, 0o600))
        self.db.execute(f"ATTACH DATABASE ? AS {_SORT}", (where,))
        # The file gives its pages back once an import's rows are dropped.
        self.db.execute(f"PRAGMA {_SORT}.auto_vacuum=FULL")
        self.db.execute(f"PRAGMA {_SORT}.journal_mode=OFF")
        self.db.execute(f"PRAGMA {_SORT}.synchronous=OFF")
        self.db.execute(f"PRAGMA {_SORT}.cache_size=-{_SORT_CACHE_KIB}")
        self.db.execute(f"DROP TABLE IF EXISTS {_SORT}.rows")
        self.db.execute(
            f"CREATE TABLE {_SORT}.rows (kind TEXT, key TEXT, n INTEGER, hash TEXT,"
            " seq INTEGER, delete_seq INTEGER, source_ms INTEGER,"
            " PRIMARY KEY (kind, key, n)) WITHOUT ROWID"
        )
        self._sort_attached = True
