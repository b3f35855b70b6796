"""The write side of the store: a batch of changes, applied in one transaction.

Each change updates the rows and says which documents it touches; the batch
then writes, in the same transaction, the obligations those touches create
(which document is owed, which records wait on it, which customer deletes
must go out and in what order) and the partitions' applied offsets.

Some documents change without a record of their own:
- a customer that appears (or comes back) takes its orders that waited for it;
- a customer that takes an email takes the guest orders of that email, and the
  email it leaves (by a change or a delete) gets its guest orders back as a
  guest's; Rfmcube files them where their email now belongs.
Those orders are touched by the customer's record, so it is committed only
once they went out too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from consumer.changes.mapping import fill_unavailable
from consumer.errors import BadRecord
from consumer.state.obligations import BatchObligation, Obligations
from consumer.state.store import StoredRow
from schemas.debezium import PartitionId, Position
from schemas.entities import CustomerIdentity, DocRef, EntityChange, Kind, MappedRow, Touch
from schemas.rfmcube import dumps

__all__ = ["StoreBatch", "open_batch"]


class _Unstorable(Exception):
    """A row whose fields cannot be written (caught per record: a bad record)."""


@contextmanager
def open_batch(
    obligations: Obligations,
    *,
    owe: bool = True,
    forget_accepted: bool = False,
    guests_follow_deletes: bool = True,
) -> Iterator[StoreBatch]:
    """One transaction: the rows of a batch of changes, its offsets and, with
    ``owe``, the obligations it creates (a restore replays rows only)."""
    with obligations.store.transaction():
        batch = StoreBatch(
            obligations,
            owe=owe,
            forget_accepted=forget_accepted,
            guests_follow_deletes=guests_follow_deletes,
        )
        yield batch
        batch.finish()


class StoreBatch:
    """Used inside :func:`open_batch`; rows are cached and written at the end."""

    def __init__(
        self,
        obligations: Obligations,
        *,
        owe: bool = True,
        forget_accepted: bool = False,
        guests_follow_deletes: bool = True,
    ) -> None:
        self._obligations = obligations
        self._store = store = obligations.store
        self._db = store.db
        self._owe = owe
        self._forget_accepted = forget_accepted
        # False when deleted customers are anonymized: their guest orders stay with them.
        self._guests_follow_deletes = guests_follow_deletes
        self._rows: dict[tuple[Kind, str], StoredRow | None] = {}
        # Written rows, with their serialized fields and change time; None: removed.
        self._written: dict[tuple[Kind, str], tuple[StoredRow, bytes, int | None] | None] = {}
        self._offsets: dict[PartitionId, int] = {}
        self._owed: dict[DocRef, BatchObligation] = {}
        self._forget: set[DocRef] = set()  # accepted hashes no longer known to be true
        self._arrived: dict[str, Position] = {}  # customer key → the record it came with
        self._emails: dict[str, Position] = {}  # emails whose guest orders move
        self.now = 0.0  # wall clock of the batch: how old an obligation is

    # -- reading ------------------------------------------------------------------

    def prefetch(self, keys: Iterable[tuple[Kind, str]]) -> None:
        """Load the rows a batch will touch in a few queries."""
        missing = {k for k in keys if k not in self._rows}
        found = self._store.get_many(missing)
        for key in missing:
            self._rows[key] = found.get(key)

    def _get(self, kind: Kind, key: str) -> StoredRow | None:
        slot = (kind, key)
        if slot not in self._rows:
            self._rows[slot] = self._store.get(kind, key)
        return self._rows[slot]

    # -- applying -----------------------------------------------------------------

    def set_offsets(self, next_offsets: Mapping[PartitionId, int]) -> None:
        for partition, offset in next_offsets.items():
            self._offsets[partition] = max(offset, self._offsets.get(partition, 0))

    def apply(self, change: EntityChange) -> list[Touch]:
        """Apply one change; return the documents it touches directly.

        Raises BadRecord (changing nothing) when the row cannot be stored."""
        try:
            touches = self._upsert(change) if change.row is not None else self._delete(change)
        except _Unstorable as exc:
            raise BadRecord(change.position, str(exc)) from None
        if self._owe or self._forget_accepted:
            for touch in touches:
                self._touch(touch, change.position, change.ts_ms)
        return touches

    def _touch(self, touch: Touch, position: Position, source_ms: int | None = None) -> None:
        if self._forget_accepted:
            self._forget.add(touch.doc)
        if not self._owe:
            return
        owed = self._owed.get(touch.doc)
        seq = self._obligations.next_seq()
        if owed is None:
            owed = self._owed[touch.doc] = BatchObligation(seq)
        if touch.deleted is not None:
            owed.deletes.append((seq, touch.deleted))
            seq = self._obligations.next_seq()  # an upsert after it sorts after it
        owed.seq = seq
        owed.mark(position, source_ms)

    def _write(self, row: MappedRow, deleted: bool, changed_ms: int | None) -> None:
        try:
            blob = dumps(row.fields)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise _Unstorable(f"the row cannot be stored: {type(exc).__name__}") from None
        slot = (row.kind, row.key)
        stored = StoredRow(row, deleted)
        self._rows[slot] = stored
        self._written[slot] = (stored, blob, changed_ms)

    def _remove(self, kind: Kind, key: str) -> None:
        self._rows[(kind, key)] = self._written[(kind, key)] = None

    def _upsert(self, change: EntityChange) -> list[Touch]:
        row = change.row
        assert row is not None
        previous = self._get(row.kind, row.key)
        # Unchanged TOASTed columns: the stored value stands.
        row = fill_unavailable(row, previous.row if previous is not None else None)
        self._write(row, deleted=False, changed_ms=change.ts_ms)
        if row.kind is Kind.ITEM:
            touches = [Touch((Kind.ORDER, row.parent))] if row.parent is not None else []
            old_parent = previous.row.parent if previous is not None else None
            if old_parent is not None and old_parent != row.parent:
                touches.append(Touch((Kind.ORDER, old_parent)))
            return touches
        if row.kind is Kind.CUSTOMER:
            self._customer_moves(previous, row, change.position)
        return [Touch((row.kind, row.key))]

    def _customer_moves(
        self, previous: StoredRow | None, row: MappedRow, position: Position
    ) -> None:
        """Orders that change owner with this customer (see the module's docstring)."""
        if previous is None or previous.deleted:
            self._arrived.setdefault(row.key, position)
            if row.email:
                self._emails.setdefault(row.email, position)
        elif previous.row.email != row.email:
            for email in (previous.row.email, row.email):
                if email:
                    self._emails.setdefault(email, position)

    def _delete(self, change: EntityChange) -> list[Touch]:
        previous = self._get(change.kind, change.key)
        if previous is not None and previous.deleted:
            return []  # the tombstone after a delete
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
        self._write(known, deleted=True, changed_ms=change.ts_ms)
        if change.kind is Kind.CUSTOMER:
            if known.email and self._guests_follow_deletes:
                self._emails.setdefault(known.email, change.position)
            return [Touch((Kind.CUSTOMER, change.key), CustomerIdentity(known.key, known.email))]
        return [Touch((Kind.ORDER, change.key))]

    # -- writing ------------------------------------------------------------------

    def finish(self) -> None:
        """Write rows, the obligations they create and the offsets (inside the transaction)."""
        self._write_rows()
        if self._owe or self._forget_accepted:
            self._touch_moved_orders()
        if self._owe:
            self._write_obligations()
        if self._forget:
            self._store.forget_accepted(self._forget)
            self._forget.clear()
        self._db.executemany(
            "INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?)"
            " ON CONFLICT (topic, partition) DO UPDATE SET next_offset ="
            " max(next_offset, excluded.next_offset)",
            [(t, p, o) for (t, p), o in self._offsets.items()],
        )

    def _write_rows(self) -> None:
        upserts = [
            (kind.value, key, s.row.parent, s.row.email, blob, int(s.deleted), changed)
            for (kind, key), entry in self._written.items()
            if entry is not None
            for s, blob, changed in (entry,)
        ]
        removed = [(kind.value, key) for (kind, key), e in self._written.items() if e is None]
        self._db.executemany(
            "INSERT INTO rows (kind, key, parent, email, fields, deleted, changed_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET"
            " parent = excluded.parent, email = excluded.email, fields = excluded.fields,"
            " deleted = excluded.deleted,"
            " changed_ms = coalesce(excluded.changed_ms, rows.changed_ms)",
            upserts,
        )
        self._db.executemany("DELETE FROM rows WHERE kind = ? AND key = ?", removed)
        self._written.clear()

    def _touch_moved_orders(self) -> None:
        # After the rows are written: the orders written in this batch count too.
        if self._arrived:
            by_parent = self._store.chunked(
                "SELECT key, parent FROM rows WHERE kind = 'order' AND parent IN ({marks})",
                (),
                sorted(self._arrived),
            )
            for key, parent in by_parent:
                self._touch(Touch((Kind.ORDER, key)), self._arrived[parent])
        if self._emails:
            by_email = self._store.chunked(
                "SELECT key, email FROM rows INDEXED BY rows_by_email"
                " WHERE kind = 'order' AND parent IS NULL AND email IN ({marks})",
                (),
                sorted(self._emails),
            )
            for key, email in by_email:
                self._touch(Touch((Kind.ORDER, key)), self._emails[email])

    def _write_obligations(self) -> None:
        self._obligations.write_batch(self._owed, self.now)
        self._owed.clear()
