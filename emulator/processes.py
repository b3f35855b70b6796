"""Asynchronous import processes: ``pending → running → completed`` (or ``failed``).

An ``/import`` answers with a process id at once; its data is applied to the
store only when the process completes (a failed process applies nothing).
About a third of the delay is spent pending, the rest running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from emulator.validate import ImportRequest

log = logging.getLogger(__name__)

PROCESS_TYPE = "IMPORT_CUSTOMERS_API"


class ProcessStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class ImportProcess:
    process_id: int
    request: ImportRequest | None
    total_customers: int
    total_orders: int
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    status: ProcessStatus = ProcessStatus.PENDING
    running_since: float = 0.0  # monotonic
    run_seconds: float = 0.0

    def _progress(self) -> float:
        if self.status is ProcessStatus.COMPLETED:
            return 1.0
        if self.status is ProcessStatus.RUNNING and self.run_seconds > 0:
            return min(1.0, (time.monotonic() - self.running_since) / self.run_seconds)
        return 0.0

    def to_json(self) -> dict[str, Any]:
        """The documented response of ``GET /processes/{processId}``."""
        progress = self._progress()
        return {
            "processId": self.process_id,
            "createdAt": _utc(self.created_at),
            "updatedAt": _utc(self.updated_at),
            "status": str(self.status),
            "type": PROCESS_TYPE,
            "data": {
                "processedCustomers": int(self.total_customers * progress),
                "totalCustomers": self.total_customers,
                "processedOrders": int(self.total_orders * progress),
                "totalOrders": self.total_orders,
            },
        }


class ProcessRegistry:
    """Creates processes, moves them along on timers, and applies them when they complete."""

    def __init__(self, apply: Callable[[ImportRequest], None]) -> None:
        self._apply = apply
        self._processes: dict[int, ImportProcess] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._last_id = 0

    def start(self, request: ImportRequest, delay_seconds: float, fails: bool) -> ImportProcess:
        """Registers a process for ``request``; with no delay it finishes before returning."""
        self._last_id += 1
        process = ImportProcess(
            process_id=self._last_id,
            request=request,
            total_customers=len(request.customers),
            total_orders=request.total_orders,
        )
        self._processes[process.process_id] = process
        if delay_seconds <= 0:
            self._finish(process, fails)
            return process
        loop = asyncio.get_running_loop()
        pending_seconds = delay_seconds / 3
        process.run_seconds = delay_seconds - pending_seconds

        def run() -> None:
            process.status = ProcessStatus.RUNNING
            process.running_since = time.monotonic()
            process.updated_at = time.time()
            self._timers[process.process_id] = loop.call_later(
                process.run_seconds, self._finish, process, fails
            )

        self._timers[process.process_id] = loop.call_later(pending_seconds, run)
        return process

    def get(self, process_id: int) -> ImportProcess | None:
        return self._processes.get(process_id)

    def clear(self) -> None:
        """Forgets every process; those still underway never apply. Ids keep increasing."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._processes.clear()

    def _finish(self, process: ImportProcess, fails: bool) -> None:
        self._timers.pop(process.process_id, None)
        request, process.request = process.request, None  # the data is not needed any more
        status = ProcessStatus.FAILED if fails else ProcessStatus.COMPLETED
        if not fails and request is not None:
            try:
                self._apply(request)
            except Exception:  # a bug here must not leave the process running forever
                log.exception("import process %d could not be applied", process.process_id)
                status = ProcessStatus.FAILED
        process.status = status
        process.updated_at = time.time()
