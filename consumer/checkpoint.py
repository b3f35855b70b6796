"""Commits: the offsets whose records were applied and whose obligations were met.

A partition's commit floor comes from the store (:meth:`Obligations.commit_floors`):
its applied offset, lowered to the first record any obligation still holds
back. Dead letters are acknowledged by the broker before any offset past them
is committed: the dead letters counted before the floors were read are
flushed first (those written meanwhile wait for the next commit).

Each commit says, in Kafka's commit metadata (:class:`CommitMark`), who
committed, the offset below which Rfmcube holds every record's documents for
sure (imports accepted but not yet completed lower it) and the processes of
those imports. An instance that takes over reads it: what lies between that
floor and the committed offset it sends again, and it checks those imports
(and holds deletes behind them) as if they were its own. Before its first
request it commits the same offsets under its own name (:meth:`Committer.claim`),
so that whoever comes next knows who may have used the key's budget.

Commits follow a settled flush (at most every 0.2 s, at least every 1 s).
When the group takes the partitions away in order (a revocation), what is due
is committed by the revocation itself, from Kafka's thread
(:class:`Revocations`); a commit of the loop that meets a revocation leaves it
to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from consumer.errors import CommitFailed, SourceError
from consumer.state.obligations import Obligations
from consumer.waiting import sleep_or_stop
from schemas.debezium import PartitionId

__all__ = ["CommitMark", "Committer", "Revocations"]

log = logging.getLogger(__name__)

COMMIT_INTERVAL_SECONDS = 1.0
# A flush that met obligations makes a commit due at once (the last records of a
# burst were waiting up to a whole interval); no closer together than this.
COMMIT_SPACING_SECONDS = 0.2
REVOKE_BUDGET_SECONDS = 5.0  # heartbeats wait while a revocation is handled
# Pending imports a commit can name (Kafka keeps 4096 bytes of metadata by default);
# with more, commits wait for checks to catch up (they have priority: it is brief).
MAX_LISTED_IMPORTS = 40


@dataclass(frozen=True, slots=True)
class CommitMark:
    """What a commit says beside its offset (Kafka's commit metadata, per partition)."""

    instance: str  # the store that committed (or claimed)
    floor: int | None = None  # below it, every record's documents are in Rfmcube for sure
    imports: tuple[str, ...] = ()  # processes accepted, not yet seen completed

    def encode(self) -> str:
        data = {"instance": self.instance, "floor": self.floor, "imports": list(self.imports)}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> CommitMark:
        """Any metadata: this format, the bare instance id earlier versions wrote, or
        something else (an unknown instance, no floor)."""
        if not text.startswith("{"):
            return cls(text)
        try:
            data: Any = json.loads(text)
            floor = data.get("floor")
            imports = data.get("imports") or []
            if not isinstance(data.get("instance"), str) or not (
                floor is None or (isinstance(floor, int) and not isinstance(floor, bool))
            ):
                raise ValueError(text)
            return cls(data["instance"], floor, tuple(str(pid) for pid in imports))
        except (ValueError, AttributeError, TypeError):
            return cls("?")

    def floor_at(self, offset: int) -> int:
        """The floor of a commit at ``offset``: never above it."""
        return offset if self.floor is None else min(self.floor, offset)


class CommitTarget(Protocol):
    def assignment(self) -> set[PartitionId]: ...

    async def commit(self, offsets: Mapping[PartitionId, int | tuple[int, str]]) -> None: ...

    def revoking(self) -> bool: ...


class DeadLetterLog(Protocol):
    count: int  # dead letters sent
    acknowledged: int  # those acknowledged by the broker (numbered up to this)

    def flush(self, timeout: float = 10.0, *, upto: int | None = None) -> None: ...


class Committer:
    def __init__(
        self,
        obligations: Obligations,
        *,
        instance: str,
        hold_imports: bool = False,
        dead_letters: Callable[[], DeadLetterLog | None],
    ) -> None:
        self._obligations = obligations
        self._instance = instance
        self._hold_imports = hold_imports  # ``completed`` acceptance
        self._dead_letters = dead_letters
        self.committed: dict[PartitionId, int] = {}
        self._marks: dict[PartitionId, str] = {}  # the metadata of each last commit
        self.commits = 0
        self.last_commit_at: float | None = None
        self._held_for_imports = False

    def due(self, partitions: set[PartitionId]) -> dict[PartitionId, tuple[int, str]]:
        """The floors of these partitions that moved past the last commit, each with
        its mark (see :class:`CommitMark`); and, at the same offset, those whose mark
        changed (an import completed: the next owner need not send its documents)."""
        pending = self._obligations.pending_import_ids(MAX_LISTED_IMPORTS + 1)
        if len(pending) > MAX_LISTED_IMPORTS:
            if not self._held_for_imports:
                log.info(
                    "more than %d imports wait for their check: commits wait for them",
                    MAX_LISTED_IMPORTS,
                )
            self._held_for_imports = True
            return {}
        self._held_for_imports = False
        floors = self._obligations.commit_floors(partitions, through_imports=self._hold_imports)
        kept = {tp: o for tp, o in floors.items() if o >= self.committed.get(tp, -1)}
        return {
            tp: (offset, mark)
            for tp, (offset, mark) in self.marked(kept, pending).items()
            if offset > self.committed.get(tp, -1) or mark != self._marks.get(tp)
        }

    def marked(
        self, offsets: Mapping[PartitionId, int], pending: list[str] | None = None
    ) -> dict[PartitionId, tuple[int, str]]:
        """These offsets, each with this instance's mark."""
        if pending is None:
            pending = self._obligations.pending_import_ids(MAX_LISTED_IMPORTS)
        completed = self._obligations.commit_floors(set(offsets), through_imports=True)
        return {
            tp: (
                offset,
                CommitMark(
                    self._instance, min(completed.get(tp, offset), offset), tuple(pending)
                ).encode(),
            )
            for tp, offset in offsets.items()
        }

    async def flush_dead_letters(self) -> None:
        """Wait until the broker acknowledged every dead letter written so far (for
        the records below the floors just read); those the loop writes meanwhile
        are for the next commit."""
        letters = self._dead_letters()
        if letters is None:
            return
        counted = letters.count
        if letters.acknowledged >= counted:
            return
        await asyncio.to_thread(letters.flush, upto=counted)

    async def commit(self, target: CommitTarget) -> dict[PartitionId, int]:
        """Commit what is due for the partitions the target owns; returns it."""
        offsets = self.due(target.assignment())
        if not offsets:
            return {}
        await self.flush_dead_letters()
        await target.commit(offsets)
        self.mark_committed(offsets)
        return {tp: offset for tp, (offset, _) in offsets.items()}

    async def claim(self, target: CommitTarget, committed: Mapping[PartitionId, int]) -> None:
        """Taking over: the group's offsets committed again under this instance's
        name, before its first request (0 where nothing was committed: the
        beginning, where the group reads from anyway)."""
        offsets = self.marked({tp: committed.get(tp, 0) for tp in target.assignment()})
        if offsets:
            await target.commit(offsets)
            self.mark_committed(offsets)

    def mark_committed(self, offsets: Mapping[PartitionId, int | tuple[int, str]]) -> None:
        for tp, committed in offsets.items():
            offset, mark = committed if isinstance(committed, tuple) else (committed, None)
            self.committed[tp] = max(offset, self.committed.get(tp, -1))
            if mark is not None:
                self._marks[tp] = mark
        self.commits += 1
        self.last_commit_at = time.time()

    def forget(self, partitions: list[PartitionId]) -> None:
        """Partitions gone to another member: their next owner commits them."""
        for tp in partitions:
            self.committed.pop(tp, None)
            self._marks.pop(tp, None)

    async def run(
        self,
        target: CommitTarget,
        settled: asyncio.Event,
        stopping: asyncio.Event,
        *,
        may_commit: Callable[[], bool],
        every_round: Callable[[], None] = lambda: None,
    ) -> None:
        """The commit loop: after each settled flush (spaced), or every interval."""
        while not stopping.is_set():
            await sleep_or_stop(COMMIT_SPACING_SECONDS, stopping)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), COMMIT_INTERVAL_SECONDS)
            settled.clear()
            every_round()  # also while paused: no batch comes to do it
            if may_commit():  # not before the role is taken (it reads the commits)
                await self.commit_or_wait(target)

    async def commit_or_wait(self, target: CommitTarget) -> None:
        """Commit what is due; a refused commit (a rebalance, a lost role) waits for
        the next round or the next owner: nothing is lost."""
        try:
            await self.commit(target)
        except CommitFailed as exc:
            log.warning("%s; committing again later", exc)
        except SourceError:
            if target.revoking():
                return  # a revocation commits for itself
            raise


class Revocations:
    """The rebalance callbacks, run on Kafka's thread, bridged to the event loop."""

    def __init__(self, committer: Committer) -> None:
        self._committer = committer
        self.loop: asyncio.AbstractEventLoop | None = None  # set once the service runs

    def on_revoke(self, partitions: list[PartitionId]) -> Mapping[PartitionId, tuple[int, str]]:
        """What to commit for partitions handed over in order."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return {}
        future = asyncio.run_coroutine_threadsafe(self._revoke(partitions), loop)
        try:
            return future.result(timeout=REVOKE_BUDGET_SECONDS)
        except Exception:
            log.exception("revocation bookkeeping failed; nothing committed for %s", partitions)
            return {}

    async def _revoke(self, partitions: list[PartitionId]) -> dict[PartitionId, tuple[int, str]]:
        await self._committer.flush_dead_letters()
        offsets = self._committer.due(set(partitions))
        self._committer.forget(partitions)
        return offsets

    def on_lost(self, partitions: list[PartitionId]) -> None:
        log.warning("this instance is no longer active: it stops sending and stands by")
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._committer.forget, partitions)
