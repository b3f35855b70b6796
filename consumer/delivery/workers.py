"""Planning and packing in worker processes: documents built at the API's pace.

A resync (or a first sync) builds every document of the shop: reading its
rows, building and hashing each document, serializing each customer. That is
Python, about 50 µs a document, and one core of it made a 200 MB import take
a minute and a half to build while the API could take one a second. SQLite in
WAL mode serves readers in other processes, so pages of owed documents are
planned and packed (:func:`consumer.delivery.packing.pack`) in processes of
their own, each with a read-only connection to the store, and come back as
what the sender needs: the deletes, each customer's bytes and the rows it
carries, and what needs no request. The service keeps taking pages, sending,
and settling, in order: the pages are handed back in the order they were
taken.

A worker plans each page inside one read transaction, so it sees the store as
of one moment (the service commits meanwhile). It reads decimal numbers as
their exact text (:func:`consumer.state.store.loads_fields_verbatim`), which
serializes to the same bytes and hashes as the service's Decimals, without a
Python call per number. Workers are spawned (the service has threads), die
with the service, and start only when a flush has more than a page to plan.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import gc
import logging
import multiprocessing
import signal
from collections.abc import Sequence
from pathlib import Path

from consumer.delivery.packing import Draft, PackedPlan, pack
from consumer.delivery.planner import Delete, Planner, PlannerSpec
from consumer.state.obligations import Obligations, OwedRow, StagedRow, owed_doc
from consumer.state.store import StateStore
from schemas.entities import CustomerIdentity, Kind

__all__ = ["PlannerSpec", "PlanningPool"]

log = logging.getLogger(__name__)

# A plan on the wire: owed documents out (:data:`OwedRow`); back: deletes (kind, key,
# id, email, index of the owed document or -1), drafts (bytes, carried rows as staged,
# documents), indexes of done, parked and deferred documents, rejected ones with a
# reason, and the imports to hurry. Plain tuples: no object per document.
WirePlan = tuple[
    list[tuple[str, str, str | None, str | None, int]],
    list[tuple[bytes, tuple[StagedRow, ...], int]],
    list[int],
    list[int],
    list[int],
    list[tuple[int, str]],
    list[str],
]
_KIND = {kind.value: kind for kind in Kind}


class PlanningPool:
    """Worker processes planning and packing pages of a store's owed documents."""

    def __init__(self, store_path: Path, spec: PlannerSpec, processes: int) -> None:
        self._path = store_path
        self._spec = spec
        self.processes = processes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            log.info("building documents in %d worker processes", self.processes)
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.processes,
                # spawn: a fork of a process with threads (source, health) is unsafe.
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(str(self._path), self._spec),
            )
        return self._pool

    def pack(self, owed: Sequence[OwedRow], now: float) -> asyncio.Future[PackedPlan]:
        """Plan and pack a page in a worker; the future's result is the packed plan."""
        loop = asyncio.get_running_loop()
        answer = loop.run_in_executor(self._executor(), _pack_page, owed, now)
        return asyncio.ensure_future(_unwire(answer, owed))

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


async def _unwire(answer: asyncio.Future[WirePlan], owed: Sequence[OwedRow]) -> PackedPlan:
    """The packed plan, with objects only for the documents that need no request."""
    deletes, drafts, done, parked, deferred, rejected, hurry = await answer
    return PackedPlan(
        deletes=[
            Delete(
                (_KIND[kind], key),
                CustomerIdentity(who, email),
                owed_doc(owed[i]) if i >= 0 else None,
            )
            for kind, key, who, email, i in deletes
        ],
        drafts=[Draft(body, rows, documents) for body, rows, documents in drafts],
        done=[owed_doc(owed[i]) for i in done],
        parked=[owed_doc(owed[i]) for i in parked],
        deferred=[owed_doc(owed[i]) for i in deferred],
        rejected=[(owed_doc(owed[i]), reason) for i, reason in rejected],
        hurry=set(hurry),
    )


# -- in the worker ------------------------------------------------------------------------

_WORKER: tuple[StateStore, Planner] | None = None
_PR_SET_PDEATHSIG = 1


def _start_worker(path: str, spec: PlannerSpec) -> None:
    global _WORKER
    try:  # Linux: the worker ends with the service, however the service ends
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when workers stop
    # Pages make many short-lived objects: the default threshold (700) collected
    # every few documents (the same setting as the service's, bench/README.md).
    gc.set_threshold(50_000, 50, 100)
    store = StateStore.open_read_only(path, verbatim_numbers=True)
    obligations = Obligations(store)
    planner = Planner(
        store,
        obligations,
        mark_deleted=spec.mark_deleted,
        orphan_wait=spec.orphan_wait,
        anonymizer=spec.anonymizer,
    )
    _WORKER = (store, planner)


def _pack_page(wire: Sequence[OwedRow], now: float) -> WirePlan:
    assert _WORKER is not None, "a planning worker without its store"
    store, planner = _WORKER
    owed = [owed_doc(row) for row in wire]
    store.db.execute("BEGIN")  # one snapshot for the whole page
    try:
        packed = pack(planner.plan(owed, now))
    finally:
        store.db.execute("COMMIT")
    index = {id(doc): i for i, doc in enumerate(owed)}
    return (
        [
            (
                d.ref[0].value,
                d.ref[1],
                d.identity.id,
                d.identity.email,
                -1 if d.owed is None else index[id(d.owed)],
            )
            for d in packed.deletes
        ],
        [(draft.body, draft.carried, draft.documents) for draft in packed.drafts],
        [index[id(d)] for d in packed.done],
        [index[id(d)] for d in packed.parked],
        [index[id(d)] for d in packed.deferred],
        [(index[id(d)], reason) for d, reason in packed.rejected],
        sorted(packed.hurry),
    )
