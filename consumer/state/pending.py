"""The imports pending and their checks (part of
:class:`consumer.state.obligations.Obligations`).

An import is pending from its acceptance (:mod:`consumer.state.settling`) until
its process is known to have completed or failed. Here: how many are pending,
which are due a check and when the next is, a check that found one running
(checked again later) or a delete that waits for one (checked as soon as a slot
allows), which pending imports carry a document, a failed one's documents owed
again all at once, and the imports another instance accepted and did not see
completed, adopted from the group's commits (:meth:`PendingImports.adopt_imports`).
An import of 200 MB carries half a million documents, so its end goes in pages:

- **completed** (:meth:`PendingImports.completed`): the import stops being
  pending at once; its documents are dropped afterwards in pages
  (``imports_done``, :meth:`PendingImports.purge_page`), ignored meanwhile,
  since only pending imports carry anything;
- **failed** (:meth:`PendingImports.fail_page`): its documents are owed again a
  page at a time; it stays pending, holding deletes back, until the last.

Their tables (``imports``, ``import_docs``, ``import_marks``) are created in
:mod:`consumer.state.obligations`: settling and the commit floors use them too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from consumer.state.store import StateStore
from schemas.debezium import PartitionId
from schemas.entities import DocRef, Kind

__all__ = ["PendingImport", "PendingImports"]

_KIND = {kind.value: kind for kind in Kind}  # Kind(value) costs a few µs


@dataclass(frozen=True, slots=True)
class PendingImport:
    process_id: str
    accepted_at: float
    checks: int


class PendingImports:
    """Mixed into :class:`~consumer.state.obligations.Obligations`, which owns the tables."""

    store: StateStore
    db: sqlite3.Connection
    _clock: Callable[[], float]

    def owe(self, refs: Iterable[DocRef]) -> int:  # pragma: no cover - defined by Obligations
        raise NotImplementedError

    def pending_imports(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM imports").fetchone()[0])

    def pending_import_ids(self, limit: int) -> list[str]:
        """Up to ``limit`` pending imports' process ids, the oldest first."""
        rows = self.db.execute(
            "SELECT process_id FROM imports ORDER BY accepted_at, process_id LIMIT ?", (limit,)
        )
        return [str(pid) for (pid,) in rows]

    def adopt_imports(
        self,
        process_ids: Iterable[str],
        floors: Mapping[PartitionId, int],
        committed: Mapping[PartitionId, int],
    ) -> tuple[list[str], int]:
        """Imports another instance accepted and did not see completed (named by the
        group's commits, whose floors their records lowered): checked like ours.
        What the records between a partition's floor and its committed offset made
        owed is what they may have carried: it becomes theirs (sent again if one
        fails; deletes of those customers wait for them), and no longer owed
        unless a later record changed it too. Returns the imports not known here
        and the documents adopted."""
        now = self._clock()
        known = set(self.pending_import_ids(1_000_000))
        new = [pid for pid in dict.fromkeys(process_ids) if pid not in known]
        if not new:
            return [], 0
        ranges = [
            (topic, partition, floors.get((topic, partition), end), end)
            for (topic, partition), end in committed.items()
            if floors.get((topic, partition), end) < end
        ]
        with self.store.transaction() as db:
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS adopt_ranges (topic TEXT, partition INTEGER,"
                " floor INTEGER, committed INTEGER, PRIMARY KEY (topic, partition))"
            )
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS adopted (kind TEXT, key TEXT, settled INTEGER,"
                " PRIMARY KEY (kind, key)) WITHOUT ROWID"
            )
            db.execute("DELETE FROM adopt_ranges")
            db.execute("DELETE FROM adopted")
            db.executemany("INSERT INTO adopt_ranges VALUES (?, ?, ?, ?)", ranges)
            # A record waiting on the document lies in a range: they may carry it;
            # settled when every one does (no later change to send).
            db.execute(
                "INSERT INTO adopted SELECT m.kind, m.key,"
                " sum(coalesce(m.first_offset >= r.floor AND m.last_offset < r.committed, 0))"
                " = count(*)"
                " FROM owed_marks m"
                " LEFT JOIN adopt_ranges r ON r.topic = m.topic AND r.partition = m.partition"
                " GROUP BY m.kind, m.key HAVING"
                " sum(coalesce(m.first_offset < r.committed AND m.last_offset >= r.floor, 0)) > 0"
            )
            adopted = int(db.execute("SELECT count(*) FROM adopted").fetchone()[0])
            db.executemany(
                "INSERT OR IGNORE INTO imports"
                " (process_id, accepted_at, next_check, checks, unknown_docs)"
                " VALUES (?, ?, ?, 0, ?)",
                [(pid, now, now, int(adopted == 0)) for pid in new],
            )
            for pid in new:
                db.execute(
                    "INSERT OR IGNORE INTO import_docs (process_id, kind, key, hash)"
                    " SELECT ?, kind, key, NULL FROM adopted",
                    (pid,),
                )
            # They keep the floor this instance's commits report where it was, so
            # that whoever comes next still knows those records' documents are unsure.
            db.executemany(
                "INSERT OR IGNORE INTO import_marks"
                " (process_id, topic, partition, first_offset, holds) VALUES (?, ?, ?, ?, 0)",
                [
                    (pid, topic, partition, floor)
                    for pid in new
                    for topic, partition, floor, _ in ranges
                ],
            )
            for table in ("owed", "owed_marks", "owed_deletes"):
                db.execute(
                    f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM adopted a"
                    f" WHERE a.settled AND a.kind = {table}.kind AND a.key = {table}.key)"
                )
            db.execute("DELETE FROM adopted")
        return new, adopted

    def due_imports(self, now: float, limit: int) -> list[PendingImport]:
        rows = self.db.execute(
            "SELECT process_id, accepted_at, checks FROM imports"
            " WHERE next_check <= ? ORDER BY next_check, accepted_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [PendingImport(pid, at, checks) for pid, at, checks in rows]

    def next_check_at(self) -> float | None:
        found = self.db.execute("SELECT min(next_check) FROM imports").fetchone()[0]
        return None if found is None else float(found)

    def imports_carrying(self, refs: Iterable[DocRef]) -> dict[DocRef, set[str]]:
        """The pending imports that carry each of these documents (one whose documents
        are unknown: every one)."""
        refs = list(refs)
        foreign = {
            str(pid)
            for (pid,) in self.db.execute("SELECT process_id FROM imports WHERE unknown_docs = 1")
        }
        by_kind: dict[Kind, list[str]] = {}
        for kind, key in refs:
            by_kind.setdefault(kind, []).append(key)
        carrying: dict[DocRef, set[str]] = {ref: set(foreign) for ref in refs} if foreign else {}
        for kind, keys in by_kind.items():
            # Only pending imports: a completed one's documents may not be dropped yet.
            for key, pid in self.store.chunked(
                "SELECT key, process_id FROM import_docs WHERE kind = ? AND key IN ({marks})"
                " AND process_id IN (SELECT process_id FROM imports)",
                (kind.value,),
                keys,
            ):
                carrying.setdefault((kind, key), set()).add(pid)
        return carrying

    def hurry(self, process_ids: Iterable[str]) -> None:
        """Check these imports as soon as a slot allows (a delete waits for them)."""
        with self.store.transaction() as db:
            db.executemany(
                "UPDATE imports SET next_check = min(next_check, ?) WHERE process_id = ?",
                [(self._clock(), pid) for pid in process_ids],
            )

    def still_running(self, process_id: str, next_in: float) -> None:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE imports SET next_check = ?, checks = checks + 1 WHERE process_id = ?",
                (self._clock() + next_in, process_id),
            )

    def failed(self, process_id: str) -> list[DocRef]:
        """The process failed (or is unknown): everything it carried owed again at once
        (the service does it in pages: :meth:`fail_page`). Returns the documents."""
        refs: list[DocRef] = []
        while True:
            page, gone = self.fail_page(process_id, 5000)
            refs += page
            if gone:
                return refs

    # -- completed, failed --------------------------------------------------------------

    def completed(self, process_id: str) -> None:
        """The process completed: no longer pending, at once. Its documents are dropped
        in pages afterwards (:meth:`purge_page`)."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM imports WHERE process_id = ?", (process_id,))
            db.execute("DELETE FROM import_marks WHERE process_id = ?", (process_id,))
            db.execute("INSERT OR IGNORE INTO imports_done VALUES (?)", (process_id,))

    def purge_page(self, limit: int, sources: list[int] | None = None) -> int:
        """Drop up to ``limit`` documents of completed imports; returns how many, and
        adds to ``sources`` the source times they carried (``completed`` acceptance's
        freshness)."""
        found = self.db.execute("SELECT process_id FROM imports_done LIMIT 1").fetchone()
        if found is None:
            return 0
        (pid,) = found
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM imports WHERE process_id = ?", (pid,)).fetchone():
                # Pending again (an API that reuses ids): its documents are its own now.
                db.execute("DELETE FROM imports_done WHERE process_id = ?", (pid,))
                return 0
            dropped = db.execute(
                "DELETE FROM import_docs WHERE (kind, key, process_id) IN (SELECT kind, key,"
                " process_id FROM import_docs INDEXED BY import_docs_by_process"
                " WHERE process_id = ? LIMIT ?) RETURNING source_ms",
                (pid, limit),
            ).fetchall()
            gone = len(dropped)
            if sources is not None:
                sources.extend(ms for (ms,) in dropped if ms is not None)
            if gone < limit:
                db.execute("DELETE FROM imports_done WHERE process_id = ?", (pid,))
        return max(gone, 1)

    def fail_page(self, process_id: str, limit: int) -> tuple[list[DocRef], bool]:
        """The process failed (or is unknown): up to ``limit`` of its documents owed
        again, the records it held back waiting for them. Returns those documents,
        and whether the import is now gone (its last page)."""
        with self.store.transaction() as db:
            carried = db.execute(
                "SELECT kind, key, hash, source_ms FROM import_docs"
                " INDEXED BY import_docs_by_process WHERE process_id = ? LIMIT ?",
                (process_id, limit),
            ).fetchall()
            # A guest's container is not owed on its own: its orders rebuild it.
            refs = [(_KIND[k], key) for k, key, _, _ in carried if k != Kind.GUEST.value]
            # Rfmcube does not hold what the failed import carried, unless a later
            # send replaced it (its hash differs then, and stays).
            db.executemany(
                "DELETE FROM accepted WHERE kind = ? AND key = ? AND hash = ?",
                [(kind, key, h) for kind, key, h, _ in carried if h is not None],
            )
            self.owe(refs)
            # Owed again with the changes it carried: their delay runs on.
            db.executemany(
                "UPDATE owed SET source_ms = coalesce(min(source_ms, ?), ?)"
                " WHERE kind = ? AND key = ?",
                [(ms, ms, kind, key) for kind, key, _, ms in carried if ms is not None],
            )
            db.executemany(
                "INSERT INTO owed_marks (kind, key, topic, partition, first_offset, last_offset)"
                " SELECT ?, ?, topic, partition, first_offset, first_offset FROM import_marks"
                " WHERE process_id = ? ON CONFLICT (kind, key, topic, partition) DO UPDATE SET"
                " first_offset = min(first_offset, excluded.first_offset)",
                [(kind.value, key, process_id) for kind, key in refs],
            )
            db.executemany(
                "DELETE FROM import_docs WHERE process_id = ? AND kind = ? AND key = ?",
                [(process_id, kind, key) for kind, key, _, _ in carried],
            )
            gone = len(carried) < limit
            if gone:
                self._drop_import(process_id)
        return refs, gone

    def _drop_import(self, process_id: str) -> None:
        for table in ("imports", "import_docs", "import_marks"):
            self.db.execute(f"DELETE FROM {table} WHERE process_id = ?", (process_id,))
