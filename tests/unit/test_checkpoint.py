"""Commits: what may be committed, what each commit says, dead letters first."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from consumer.checkpoint import CommitMark, Committer
from consumer.errors import RevokeInProgress, SourceError
from consumer.state.obligations import BatchObligation, Obligations
from consumer.state.store import StateStore
from schemas.debezium import PartitionId, Position
from schemas.entities import Kind
from testkit.accepted import accept_import

T = ("shop.public.orders", 0)


class Target:
    """The source as the committer sees it; records what it was asked to commit."""

    def __init__(self, refuse: BaseException | None = None, revoking: bool = False) -> None:
        self.commits: list[dict[PartitionId, int | tuple[int, str]]] = []
        self._refuse = refuse
        self._revoking = revoking

    def assignment(self) -> set[PartitionId]:
        return {T}

    async def commit(self, offsets: Mapping[PartitionId, int | tuple[int, str]]) -> None:
        if self._refuse is not None:
            raise self._refuse
        self.commits.append(dict(offsets))

    def revoking(self) -> bool:
        return self._revoking


class Letters:
    def __init__(self) -> None:
        self.count = 0
        self.acknowledged = 0
        self.flushed_upto: list[int | None] = []

    def flush(self, timeout: float = 10.0, *, upto: int | None = None) -> None:
        self.flushed_upto.append(upto)
        self.acknowledged = upto or self.count


def _setup(letters: Letters | None = None) -> tuple[Obligations, Committer]:
    obligations = Obligations(StateStore(":memory:"))
    committer = Committer(obligations, instance="me", dead_letters=lambda: letters)
    return obligations, committer


def _apply_up_to(obligations: Obligations, next_offset: int) -> None:
    obligations.store.db.execute(
        "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET next_offset = ?",
        (*T, next_offset, next_offset),
    )


def _owe(obligations: Obligations, key: str, offset: int) -> None:
    owed = BatchObligation(obligations.next_seq())
    owed.mark(Position(*T, offset))
    with obligations.store.transaction():
        obligations.write_batch({(Kind.ORDER, key): owed}, now=1.0)


def test_a_commit_stops_at_the_first_record_something_is_owed_for() -> None:
    obligations, committer = _setup()
    _apply_up_to(obligations, 10)
    _owe(obligations, "o", 6)
    target = Target()
    assert asyncio.run(committer.commit(target)) == {T: 6}
    offset, mark = target.commits[0][T]  # type: ignore[misc]
    assert offset == 6 and CommitMark.decode(mark) == CommitMark("me", 6, ())


def test_a_commit_says_which_imports_are_pending_and_the_floor_they_hold() -> None:
    obligations, committer = _setup()
    _apply_up_to(obligations, 10)
    _owe(obligations, "o", 4)
    accept_import(obligations, "p-1", [(doc, "h") for doc in obligations.take(10)])
    target = Target()
    asyncio.run(committer.commit(target))
    offset, mark = target.commits[0][T]  # type: ignore[misc]
    assert offset == 10  # process_id acceptance: committed once accepted
    assert CommitMark.decode(mark) == CommitMark("me", 4, ("p-1",))
    obligations.completed("p-1")
    asyncio.run(committer.commit(target))  # same offset, a new mark: committed again
    assert CommitMark.decode(target.commits[1][T][1]) == CommitMark("me", 10, ())  # type: ignore[index]
    asyncio.run(committer.commit(target))
    assert len(target.commits) == 2  # nothing changed: nothing committed


def test_dead_letters_of_the_records_below_are_acknowledged_first() -> None:
    letters = Letters()
    obligations, committer = _setup(letters)
    _apply_up_to(obligations, 3)
    letters.count = 2
    asyncio.run(committer.commit(Target()))
    assert letters.flushed_upto == [2]


def test_a_commit_refused_during_a_revocation_is_left_to_it() -> None:
    obligations, committer = _setup()
    _apply_up_to(obligations, 3)
    asyncio.run(committer.commit_or_wait(Target(refuse=RevokeInProgress("revoking"))))
    with pytest.raises(SourceError):
        asyncio.run(committer.commit_or_wait(Target(refuse=SourceError("gone"))))


@pytest.mark.parametrize(
    ("metadata", "mark"),
    [
        ("abc123", CommitMark("abc123")),  # what versions before wrote: the instance id
        ('{"instance":"x","floor":5,"imports":["p"]}', CommitMark("x", 5, ("p",))),
        ('{"instance":"x","floor":true}', CommitMark("?")),  # not ours: unknown
        ("{not json", CommitMark("?")),
    ],
)
def test_any_metadata_reads_as_a_mark(metadata: str, mark: CommitMark) -> None:
    assert CommitMark.decode(metadata) == mark


def test_a_mark_reads_back_as_written() -> None:
    mark = CommitMark("a1", 17, ("p-1", "p-2"))
    assert CommitMark.decode(mark.encode()) == mark


def test_a_mark_floor_is_never_above_its_offset() -> None:
    assert CommitMark("x", 50).floor_at(40) == 40
    assert CommitMark("x").floor_at(40) == 40
    assert CommitMark("x", 30).floor_at(40) == 30
