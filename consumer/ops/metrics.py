"""Prometheus metrics: what an operator alerts on.

Requests are counted on the wire (every attempt, retries included, by call
and HTTP status) with a latency histogram, from the API client's
``on_attempt`` hook. Everything else is read from the service when
Prometheus scrapes (:class:`ServiceCollector`), so nothing on the hot path
pays for it. Names follow Prometheus' conventions: ``rfmcube_cdc_`` prefix,
``_total`` counters, ``_seconds`` durations and timestamps.

What to alert on (README.md, "Running on Kubernetes"):
- ``rfmcube_cdc_consumer_lag_records`` growing: the service does not keep up;
- ``time() - rfmcube_cdc_last_accepted_request_timestamp_seconds`` large while
  ``rfmcube_cdc_owed_documents`` > 0: the API refuses or is unreachable;
- ``rate(rfmcube_cdc_dead_letters_total[1h]) > 0``: records or documents
  were dead-lettered: read the dead-letter topic;
- ``sum(rfmcube_cdc_active) != 1`` over the replicas: no active instance.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from consumer.delivery.http.client import Attempt
from schemas.debezium import PartitionId

__all__ = ["Metrics", "ServiceState"]


# Request latency: a merge answers in milliseconds, a 200 MB import in minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


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

    def __init__(self, service: StateSource) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
        self.registry.register(ServiceCollector(service))

    def attempt(self, attempt: Attempt) -> None:
        """The API client's ``on_attempt`` hook."""
        status = "none" if attempt.status is None else str(attempt.status)
        self.requests.labels(attempt.call, status).inc()
        self.request_bytes.labels(attempt.call).inc(attempt.request_bytes)
        self.latency.labels(attempt.call).observe(attempt.seconds)


def _counter(name: str, doc: str, label: str, values: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value_label, value in sorted(values.items()):
        family.add_metric([value_label], value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class ServiceCollector(Collector):
    """Reads the service's state at each scrape."""

    def __init__(self, service: StateSource) -> None:
        self._service = service

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
            s.retries,
        )
        yield _counter(
            "rfmcube_cdc_import_processes",
            "Checks of import processes, by outcome (completed, failed, unknown, running)",
            "outcome",
            s.processes,
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
