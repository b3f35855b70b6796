"""What the service reports: the state ``/metrics`` reads at each scrape, and the
counters logged when it stops (the demo reads them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from consumer.checkpoint import Committer
from consumer.delivery.flush import Flusher, FlushStats
from consumer.delivery.http.client import RfmcubeClient
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.processes import ProcessChecker
from consumer.ingest import Ingest
from consumer.ops.metrics import ServiceState
from consumer.recovery.restore import Restorer
from consumer.source.base import Source
from consumer.state.obligations import Obligations
from schemas.debezium import PartitionId

__all__ = ["Report"]


class Report:
    """Reads the service's parts; those made once it streams are set as they come."""

    def __init__(
        self,
        *,
        ingest: Ingest,
        obligations: Obligations,
        committer: Committer,
        limiter: RateLimiter,
        restorer: Restorer,
        active: Callable[[], bool],
    ) -> None:
        self._ingest = ingest
        self._obligations = obligations
        self._committer = committer
        self._limiter = limiter
        self._restorer = restorer
        self._active = active
        self.source: Source | None = None
        self.flusher: Flusher | None = None
        self.checker: ProcessChecker | None = None
        self.client: RfmcubeClient | None = None

    def metrics_state(self) -> ServiceState:
        """What /metrics reports (consumer/ops/metrics.py reads it at each scrape)."""
        ingest = self._ingest.stats
        flush = self.flusher.stats if self.flusher is not None else FlushStats()
        lag: dict[PartitionId, int] = {}
        if self.source is not None:
            for tp, end in self.source.highwaters().items():
                committed = self._committer.committed.get(tp)
                if committed is not None:
                    lag[tp] = max(0, end - committed)
        oldest = self._obligations.oldest_since()
        limiter = self._limiter
        return ServiceState(
            records={
                "read": ingest.records,
                "restored": ingest.restored,
                "followed": ingest.followed,
            },
            skipped=dict(ingest.skipped),
            dead_letters={"record": ingest.dead_letters, "entity": flush.dead},
            documents={
                "sent": flush.documents_sent,
                "unchanged": flush.documents_unchanged,
                "parked": flush.parked,
            },
            retries=dict(self.client.stats.retries) if self.client is not None else {},
            processes=dict(self.checker.outcomes) if self.checker is not None else {},
            limiter_waits=limiter.waits,
            limiter_wait_seconds=limiter.waited_seconds,
            free_slots=limiter.free_slots(),
            owed_documents=self._obligations.owed_count(),
            owed_age_seconds=0.0 if oldest is None else max(0.0, time.time() - oldest),
            pending_imports=self._obligations.pending_imports(),
            commits=self._committer.commits,
            lag=lag,
            last_accepted_at=flush.last_accepted_at,
            last_commit_at=self._committer.last_commit_at,
            restore_progress=self._restorer.progress,
            active=self._active(),
        )

    def stop_stats(self) -> dict[str, Any]:
        """The counters logged when the service stops (the demo reads them)."""
        ingest = self._ingest.stats
        flush = self.flusher.stats if self.flusher is not None else None
        return {
            "records": ingest.records,
            "restored": ingest.restored,
            "skipped": dict(ingest.skipped),
            "dead_letters": ingest.dead_letters + (flush.dead if flush else 0),
            "requests": dict(flush.requests if flush else {}),
            "documents_sent": flush.documents_sent if flush else 0,
            "documents_unchanged": flush.documents_unchanged if flush else 0,
            "process_checks": self.checker.checks if self.checker else 0,
            "commits": self._committer.commits,
        }
