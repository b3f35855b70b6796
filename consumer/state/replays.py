"""What this store took from the dead-letter topic's replay markers.

The one owner of two tables: ``replayed``, the letters this store applied
(one row per letter, whatever the number of its markers: a letter is applied
once), and ``replay_reads``, per partition of the dead-letter topic, the next
offset to read markers from. Both are written in the transaction that applies
the markers (:mod:`consumer.recovery.replays`), so a crash applies a marker
wholly or not at all, and never twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from consumer.state.store import StateStore

__all__ = ["Replays"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replayed (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    applied_at REAL NOT NULL, PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replay_reads (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
"""


class Replays:
    def __init__(self, store: StateStore, topic: str) -> None:
        self.store = store
        self.topic = topic  # the dead-letter topic
        if not store.read_only:
            store.db.executescript(_SCHEMA)

    def next_offsets(self) -> dict[int, int]:
        """Per partition of the dead-letter topic, where to read markers from."""
        rows = self.store.db.execute(
            "SELECT partition, next_offset FROM replay_reads WHERE topic = ?", (self.topic,)
        )
        return {int(p): int(o) for p, o in rows}

    def applied(self, letters: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
        """Which of these letters (partition, offset) this store applied already."""
        found = set()
        for partition, offset in letters:
            row = self.store.db.execute(
                "SELECT 1 FROM replayed WHERE topic = ? AND partition = ? AND offset = ?",
                (self.topic, partition, offset),
            ).fetchone()
            if row is not None:
                found.add((partition, offset))
        return found

    def record(
        self, letters: Iterable[tuple[int, int]], read_to: Mapping[int, int], now: float
    ) -> None:
        """Inside the applying transaction: these letters were applied, and markers
        were read up to these offsets."""
        db = self.store.db
        db.executemany(
            "INSERT OR IGNORE INTO replayed (topic, partition, offset, applied_at)"
            " VALUES (?, ?, ?, ?)",
            [(self.topic, p, o, now) for p, o in letters],
        )
        db.executemany(
            "INSERT INTO replay_reads (topic, partition, next_offset) VALUES (?, ?, ?)"
            " ON CONFLICT (topic, partition) DO UPDATE SET"
            " next_offset = max(next_offset, excluded.next_offset)",
            [(self.topic, p, o) for p, o in read_to.items()],
        )
