"""Accepted imports settled beside a flush (for :class:`consumer.delivery.flush.Flusher`).

An import the API accepted is settled in pages (:meth:`Obligations.settle_page`,
:mod:`consumer.state.settling`) by a task of its own, so that the workers keep
building and the next import is packed meanwhile; its rows are sorted for that
while it is on the wire (:meth:`Obligations.presort_page`: a 200 MB import is
read by the API for seconds, and the service mostly waits). Both wait while an
import's body is being written and moving
(:class:`~consumer.delivery.http.body.Uploads`). The flush that sent an import
settles all of it before it ends (:meth:`ImportSettler.finish`): another flush
plans only once what it carried is known.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from consumer.state.obligations import Obligations

__all__ = ["PAGE_SECONDS", "Fresh", "ImportSettler", "Pages"]

# Documents accepted through a call, by the source time (ms) of their oldest change.
Fresh = Callable[[str, list[int]], None]

# A page of settling should take about this long (pages adapt their size to it):
# well below the second a process check or a resync's progress may wait, and large
# enough that its commit, which rewrites every page of the tables it touched, is paid
# for many rows (at 5,000 rows a page, settling took twice as long as at 30,000).
PAGE_SECONDS = 0.45


class Pages:
    """A page size that keeps each page near ``PAGE_SECONDS``, whatever a page of
    this kind costs on this machine and this store."""

    def __init__(self, start: int, least: int = 200, most: int = 50_000) -> None:
        self.size = start
        self._least, self._most = least, most

    def took(self, seconds: float, done: int) -> None:
        if done < self.size:
            return  # a short page says nothing of a full one
        if seconds > PAGE_SECONDS:
            self.size = max(self._least, int(self.size * PAGE_SECONDS / seconds * 0.8))
        elif seconds < PAGE_SECONDS / 2:
            self.size = min(self._most, self.size * 3 // 2)


class ImportSettler:
    """Settles accepted imports a page at a time, and presorts the one on the wire."""

    def __init__(
        self,
        obligations: Obligations,
        *,
        fresh: Fresh,
        settled: asyncio.Event,
        page: int | None = None,
        uploads_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._obligations = obligations
        self._fresh = fresh
        self._settled = settled  # set at each page: commits may be due
        # Rows settled per transaction: adapted to PAGE_SECONDS, or as given (tests).
        self._pages = Pages(5_000) if page is None else Pages(page, page, page)
        # Settling waits while a body is being written and moving: the API reads
        # nothing of an import before all of it came.
        self._uploads_idle = uploads_idle
        self._settling: asyncio.Task[None] | None = None
        self._presorting: asyncio.Task[None] | None = None

    def settle_soon(self) -> None:
        """Settle accepted imports beside the next pages (the workers keep building
        meanwhile, the next import is packed); in full before the flush ends."""
        if self._settling is None or self._settling.done():
            self._settling = asyncio.create_task(self.settle_all(), name="settle")

    def presort_soon(self, staged: tuple[int, int]) -> None:
        """Sort an import's staged rows while it is on the wire, for the settling that
        follows its acceptance."""
        if self._presorting is None or self._presorting.done():
            self._presorting = asyncio.create_task(self._presort(staged), name="presort")

    async def _presort(self, staged: tuple[int, int]) -> None:
        while True:
            if self._uploads_idle is not None:
                await self._uploads_idle()
            if not self._obligations.presort_page(staged, self._pages.size):
                return
            await asyncio.sleep(0)

    async def settle_all(self) -> None:
        """Settle every accepted import's staged rows, a page at a time."""
        obligations, pages = self._obligations, self._pages
        while True:
            if self._uploads_idle is not None:
                await self._uploads_idle()
            started = time.monotonic()
            sources: list[int] = []
            done = obligations.settle_page(pages.size, sources)
            if not done:
                return
            pages.took(time.monotonic() - started, done)
            self._settled.set()
            if sources:
                self._fresh("import", sources)
            await asyncio.sleep(0)

    async def finish(self) -> None:
        """The flush ends: no more presorting, and every accepted import settled (its
        documents must be known as carried: a delete of one of them waits for it)."""
        if self._presorting is not None:
            self._presorting.cancel()
        settling, self._settling = self._settling, None
        if settling is not None:
            await settling
        await self.settle_all()
