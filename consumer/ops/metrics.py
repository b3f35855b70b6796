"""Prometheus metrics: what an operator alerts on.

Requests are counted on the wire (every attempt, retries included, by call
and HTTP status) with a latency histogram, from the API client's
``on_attempt`` hook, which also times how long the API has been failing
(:class:`FailingSpell`). The freshness of what Rfmcube holds is observed as
documents are accepted (:meth:`Metrics.fresh`). Everything else is read from
the service when Prometheus scrapes (:class:`ServiceCollector`), so nothing
on the hot path pays for it. The registry is the service's own, with the
process, platform and GC collectors on it. Names follow Prometheus'
conventions: ``rfmcube_cdc_`` prefix, ``_total`` counters, ``_seconds``
durations and timestamps.

Every series an alert reads is there from the first scrape, at 0: a rule on
a series that appears only once something happened cannot fire from the
start. The alerts themselves are a PrometheusRule, with a dashboard beside
it (``deploy/components/prometheus``, README.md "Metrics and alerts").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from consumer import version
from consumer.delivery.http.client import CALLS, PROCESS_CALL, Attempt
from schemas.debezium import PartitionId

__all__ = ["FRESHNESS_BUCKETS", "FailingSpell", "Metrics", "ServiceState", "is_retried"]


# Request latency: a merge answers in milliseconds, a 200 MB import in minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# From the shop's commit to Rfmcube's acceptance: a second or two when the budget
# keeps up, minutes in a backlog. 300 is a boundary: the freshness alert's threshold.
FRESHNESS_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# The outcomes of an import's check (consumer/delivery/processes.py), each a series
# from the first scrape.
PROCESS_OUTCOMES = ("completed", "failed", "unknown", "running")


def is_retried(status: int | None) -> bool:
    """Whether the API client sends a request again after this answer (None: no
    answer: a timeout, a reset, a refused connection, a DNS failure). The table
    is the client's (consumer/delivery/http/client.py)."""
    return status is None or status in (408, 425, 429) or status >= 500


class FailingSpell:
    """How long the API has accepted nothing: from the first attempt it did not
    accept after the last one it did (``rfmcube_cdc_api_failing_seconds``).

    An attempt the client retries (:func:`is_retried`) starts a spell or
    continues it; any other answer ends it: a 2xx, and also a 400, 422, 413 or
    416 (the API answered about the content), or a 404 for a process. A refused
    key (401, 403, 406) stops the service (exit code 3, its own alert). Process
    checks count like every other request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None

    def attempt(self, status: int | None) -> None:
        if not is_retried(status):
            self._since = None
        elif self._since is None:
            self._since = self._clock()

    def seconds(self) -> float:
        return 0.0 if self._since is None else max(0.0, self._clock() - self._since)

    def reset(self) -> None:
        """Not active: a spell of an earlier role must not count in the next one."""
        self._since = None


@dataclass(slots=True)
class ServiceState:
    """What the service reports at a scrape."""

    records: Mapping[str, int] = field(default_factory=dict)  # read, restored, followed
    skipped: Mapping[str, int] = field(default_factory=dict)
    dead_letters: Mapping[str, int] = field(default_factory=dict)  # record, entity
    documents: Mapping[str, int] = field(default_factory=dict)  # sent, unchanged, parked
    retries: Mapping[str, int] = field(default_factory=dict)
    processes: Mapping[str, int] = field(default_factory=dict)  # by outcome
    limiter_waits: int = 0
    limiter_wait_seconds: float = 0.0
    free_slots: int = 0
    owed_documents: int = 0
    owed_age_seconds: float = 0.0
    pending_imports: int = 0
    commits: int = 0
    lag: Mapping[PartitionId, int] = field(default_factory=dict)
    last_accepted_at: float | None = None
    last_commit_at: float | None = None
    restore_progress: float = 0.0
    active: bool = False


class StateSource(Protocol):
    def metrics_state(self) -> ServiceState: ...


class Metrics:
    """The registry /metrics serves, with the counters updated as things happen."""

    def __init__(
        self,
        service: StateSource,
        *,
        build: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        # The process (CPU, memory, open files), the interpreter and its collector:
        # what the global registry would have, on ours.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Gauge(
            "rfmcube_cdc_build_info",
            "Always 1; the label says which version of rfmcube-cdc runs",
            ["version"],
            registry=self.registry,
        ).labels(build or version()).set(1)
        self.requests = Counter(
            "rfmcube_cdc_requests",
            "Requests sent to the Rfmcube API (every attempt), by call and HTTP status"
            " (status none: no answer)",
            ["call", "status"],
            registry=self.registry,
        )
        self.request_bytes = Counter(
            "rfmcube_cdc_request_bytes",
            "Bytes of request bodies sent to the Rfmcube API, by call",
            ["call"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rfmcube_cdc_request_duration_seconds",
            "Time from sending a request to its answer (or its failure), by call",
            ["call"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.freshness = Histogram(
            "rfmcube_cdc_freshness_seconds",
            "From the source's commit of the oldest change a document carries (Debezium's"
            " source ts_ms) to the API's acceptance of the document (api.acceptance), by call",
            ["call"],
            buckets=FRESHNESS_BUCKETS,
            registry=self.registry,
        )
        for call in sorted(CALLS):
            self.freshness.labels(call)
        self.failing = FailingSpell(monotonic)
        self.registry.register(ServiceCollector(service, self.failing))

    def attempt(self, attempt: Attempt) -> None:
        """The API client's ``on_attempt`` hook."""
        status = "none" if attempt.status is None else str(attempt.status)
        self.requests.labels(attempt.call, status).inc()
        self.request_bytes.labels(attempt.call).inc(attempt.request_bytes)
        self.latency.labels(attempt.call).observe(attempt.seconds)
        self.failing.attempt(attempt.status)

    def fresh(self, call: str, source_ms: Iterable[int]) -> None:
        """Documents the API accepted through ``call``, each by the source time (ms)
        of the oldest change it carried. A source clock ahead of ours counts as 0."""
        histogram = self.freshness.labels(call)
        now = self._clock()
        for ms in source_ms:
            histogram.observe(max(0.0, now - ms / 1000))


def _counter(name: str, doc: str, label: str, values: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value_label, value in sorted(values.items()):
        family.add_metric([value_label], value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class ServiceCollector(Collector):
    """Reads the service's state at each scrape."""

    def __init__(self, service: StateSource, failing: FailingSpell | None = None) -> None:
        self._service = service
        self._failing = failing or FailingSpell()

    def describe(self) -> list[GaugeMetricFamily]:
        # Nothing to read at registration: the service is not built yet.
        return []

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self._service.metrics_state()
        yield _counter(
            "rfmcube_cdc_records",
            "Kafka records applied to the store, by how: read (as the active), restored"
            " (replayed at start-up), followed (by a standby)",
            "how",
            s.records,
        )
        yield _counter(
            "rfmcube_cdc_records_skipped",
            "Records that change no entity, by kind (heartbeat, unmapped...)",
            "kind",
            s.skipped,
        )
        yield _counter(
            "rfmcube_cdc_dead_letters",
            "Dead letters written: undecodable records, or documents the API rejected",
            "kind",
            s.dead_letters,
        )
        yield _counter(
            "rfmcube_cdc_documents",
            "Documents planned, by outcome: sent (accepted), unchanged (nothing to send),"
            " parked (an order waiting for its customer)",
            "outcome",
            s.documents,
        )
        yield _counter(
            "rfmcube_cdc_request_retries",
            "Requests sent again after a 5xx, a 429, a timeout or a reset, by call",
            "call",
            {**dict.fromkeys((*CALLS, PROCESS_CALL), 0), **s.retries},
        )
        yield _counter(
            "rfmcube_cdc_import_processes",
            "Checks of import processes, by outcome (completed, failed, unknown, running)",
            "outcome",
            {**dict.fromkeys(PROCESS_OUTCOMES, 0), **s.processes},
        )
        yield CounterMetricFamily(
            "rfmcube_cdc_rate_limit_waits",
            "Requests that had to wait for a slot of the rate limit",
            value=s.limiter_waits,
        )
        yield CounterMetricFamily(
            "rfmcube_cdc_rate_limit_wait_seconds",
            "Time requests spent waiting for a slot of the rate limit",
            value=s.limiter_wait_seconds,
        )
        yield CounterMetricFamily(
            "rfmcube_cdc_commits", "Offset commits accepted by Kafka", value=s.commits
        )
        yield _gauge(
            "rfmcube_cdc_rate_limit_free_slots",
            "Requests that could be sent right now within the budget",
            s.free_slots,
        )
        yield _gauge(
            "rfmcube_cdc_owed_documents",
            "Documents owed to the API (changed, not yet accepted), kept in the store",
            s.owed_documents,
        )
        yield _gauge(
            "rfmcube_cdc_owed_age_seconds",
            "How long the oldest owed document has been waiting (0: nothing owed)",
            s.owed_age_seconds,
        )
        yield _gauge(
            "rfmcube_cdc_pending_imports",
            "Imports accepted whose process was not yet seen completed",
            s.pending_imports,
        )
        lag = GaugeMetricFamily(
            "rfmcube_cdc_consumer_lag_records",
            "Records not yet committed per partition: the log end minus the committed offset",
            labels=["topic", "partition"],
        )
        for (topic, partition), records in sorted(s.lag.items()):
            lag.add_metric([topic, str(partition)], records)
        yield lag
        if s.last_accepted_at is not None:
            yield _gauge(
                "rfmcube_cdc_last_accepted_request_timestamp_seconds",
                "When the API last accepted a request (Unix time)",
                s.last_accepted_at,
            )
        if s.last_commit_at is not None:
            yield _gauge(
                "rfmcube_cdc_last_commit_timestamp_seconds",
                "When offsets were last committed (Unix time)",
                s.last_commit_at,
            )
        yield _gauge(
            "rfmcube_cdc_restore_progress_ratio",
            "Share of the start-up restore done (1: done or not needed)",
            s.restore_progress,
        )
        yield _gauge(
            "rfmcube_cdc_active",
            "1 on the instance that holds the partitions and sends; 0 on a standby",
            1.0 if s.active else 0.0,
        )
        if not s.active:
            self._failing.reset()
        yield _gauge(
            "rfmcube_cdc_api_failing_seconds",
            "Seconds since the first request the API did not accept (5xx, 408, 425, 429, no"
            " answer) after the last one it did; 0 while it accepts, and when not active",
            self._failing.seconds() if s.active else 0.0,
        )
