"""The role: standing by while another instance is active, and taking over.

One member of the group holds every partition (the active); the others stand
by. A standby keeps its store warm with a :class:`Follower`, and is ready
(``/readyz``) once its store holds every record below the active's commits,
as read within the last :data:`READY_WITHIN_SECONDS`.

When the group gives it the partitions, it takes the role (:meth:`Role.take`),
and only then may it read from the group, plan, send or commit:

1. no gap: the store applies every record up to the group's committed
   offsets first, from the topics (a standby behind, a restart, a lost disk);
2. what the commits show delivered leaves the store; what lies between their
   floors and the committed offsets is owed, and goes out first;
3. the imports the instance before left unchecked are learned from the
   commits and checked like its own; deletes wait behind them;
4. the key's budget: its own sends are in its store; if another instance
   committed last, it may have used the whole window, so none is sent for one
   window (and that is written to the store, for a restart meanwhile);
5. it commits the same offsets under its own name (a claim), so that whoever
   comes next knows it may have sent.
"""

from __future__ import annotations

import asyncio
import logging
import time

from consumer.checkpoint import CommitMark, Committer
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.errors import SourceError
from consumer.recovery.follower import Follower
from consumer.recovery.restore import Restorer
from consumer.source.base import Source
from consumer.state.obligations import Obligations
from consumer.state.store import StateStore
from consumer.waiting import first_of, in_daemon_thread, sleep_or_stop

__all__ = ["READY_WITHIN_SECONDS", "Role"]

log = logging.getLogger(__name__)

_ROLE_POLL_SECONDS = 0.2
# A standby is ready while its store held every record below the active's commits
# when they were last read (every 5 s), no longer ago than this.
READY_WITHIN_SECONDS = 15.0
_FOLLOWER_RESTART_SECONDS = 5.0  # a follower that stopped (its reader failed) starts again


class Role:
    """Whether this instance may send, and the standby's follower meanwhile."""

    def __init__(
        self,
        follower: Follower,
        restorer: Restorer,
        store: StateStore,
        obligations: Obligations,
        limiter: RateLimiter,
        committer: Committer,
        stopping: asyncio.Event,
    ) -> None:
        self.follower = follower
        self._restorer = restorer
        self._store = store
        self._obligations = obligations
        self._limiter = limiter
        self._committer = committer
        self._stopping = stopping
        self.sending_allowed = False  # the role is taken (see take)
        # The store holds every record below the group's commits: ingest may read.
        self.caught_up = asyncio.Event()

    def ready(self, source: Source | None) -> bool:
        """``/readyz``: active with no gap, or standing by caught up with the active."""
        role = source.role() if source is not None else "joining"
        if role == "active":
            return self.sending_allowed
        return role == "standby" and self.follower.caught_up(READY_WITHIN_SECONDS)

    async def run(self, source: Source) -> None:
        """Until the service stops: follow while standing by, take the role when it comes."""
        while not self._stopping.is_set():
            role = source.role()
            if role == "active" and not self.sending_allowed:
                await self.take(source)
            elif role != "active":
                self.sending_allowed = False
                self.caught_up.clear()
            if self._standing_by(source):
                started = time.monotonic()
                await self.follower.run(lambda: self._standing_by(source))
                if self._standing_by(source):
                    # Its reader stopped (logged): start again, not in a tight loop.
                    pause = _FOLLOWER_RESTART_SECONDS - (time.monotonic() - started)
                    await sleep_or_stop(pause, self._stopping)
                continue
            await sleep_or_stop(_ROLE_POLL_SECONDS, self._stopping)

    def _standing_by(self, source: Source) -> bool:
        return not self._stopping.is_set() and source.role() == "standby"

    async def take(self, source: Source) -> None:
        """Take the active role (see the module's docstring); returns without it when
        the partitions went away meanwhile (the next round decides)."""
        partitions = source.assignment()
        if not partitions:
            return
        try:
            found = await source.committed_marks(partitions)
        except SourceError:
            return
        committed = {tp: mark[0] for tp, mark in found.items() if mark is not None}
        marks = {tp: CommitMark.decode(mark[1]) for tp, mark in found.items() if mark is not None}
        floors = {tp: marks[tp].floor_at(committed[tp]) for tp in committed}

        instance = self._store.instance_id

        def settle_the_store() -> tuple[int, int, list[str], int]:
            """In a thread: replaying and adopting may take seconds in a large shop."""
            replayed = self._restorer.catch_up(committed, floors)
            dropped = self._obligations.drop_delivered(floors)
            # This store's own imports are in it, unless it lost what it committed
            # (a lost disk has a new instance id; a power loss, records to replay).
            listed = [
                pid
                for mark in marks.values()
                if mark.instance != instance or replayed
                for pid in mark.imports
            ]
            adopted, documents = self._obligations.adopt_imports(listed, floors, committed)
            return replayed, dropped, adopted, documents

        settled = await first_of(in_daemon_thread(settle_the_store, "take-over"), self._stopping)
        if settled is None:
            return  # stopping
        replayed, dropped, adopted, documents = settled
        if replayed:
            log.info("taking over: %d records the store lacked were applied first", replayed)
        if adopted:
            log.info(
                "taking over: %d imports the instance before did not see completed (%d"
                " documents they may carry): checked, and their documents sent again if"
                " one failed",
                len(adopted),
                documents,
            )
        others = sorted({mark.instance for mark in marks.values()} - {instance})
        log.info(
            "taking over: the store followed up to %d records; %d documents owed (%d the"
            " commits showed delivered)",
            self.follower.records,
            self._obligations.owed_count(),
            dropped,
        )
        self._budget(others)
        try:
            await self._committer.claim(source, committed)
        except SourceError as exc:  # CommitFailed included: lost meanwhile
            log.warning("taking over: the claim was refused (%s); trying again", exc)
            return
        self.caught_up.set()
        self.sending_allowed = True

    def _budget(self, others: list[str]) -> None:
        """Before the first request: the key's budget is shared with whoever sent before."""
        window = self._limiter.window
        now = time.time()
        if others:
            self._limiter.fill()
            # A restart within the window must wait out the rest of it too.
            for _ in range(self._limiter.limit):
                self._store.record_send(now, window)
            log.info(
                "active, after another instance (%s): no request for up to %.0f s, the"
                " budget it may have used in its last window",
                ", ".join(others),
                window,
            )
            return
        self._limiter.seed(now - at for at in self._store.sends_since(now - window))
        log.info(
            "active: %d requests of this store in the last window",
            self._limiter.limit - self._limiter.free_slots(),
        )
