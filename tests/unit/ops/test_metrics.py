"""The metrics an operator's alerts read: there from the first scrape, and right."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.delivery.http.client import Attempt
from consumer.ops.metrics import Metrics, ServiceState

CALLS = {"import", "merge_customer", "merge_order", "delete_customer"}


class State:
    def __init__(self, active: bool = True) -> None:
        self.state = ServiceState(active=active)

    def metrics_state(self) -> ServiceState:
        return self.state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(metrics: Metrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample by name, then by its sorted labels."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def attempt(status: int | None, call: str = "import") -> Attempt:
    return Attempt(call, status, 0.1, 100)


def test_every_series_an_alert_reads_is_there_at_the_first_scrape() -> None:
    samples = scrape(Metrics(State(active=False), build="1.2.3"))
    assert samples["rfmcube_cdc_api_failing_seconds"] == {(): 0.0}
    counts = samples["rfmcube_cdc_freshness_seconds_count"]
    assert {dict(labels)["call"] for labels in counts} == CALLS
    assert set(counts.values()) == {0.0}
    assert (("call", "import"), ("le", "300.0")) in samples["rfmcube_cdc_freshness_seconds_bucket"]
    assert samples["rfmcube_cdc_build_info"] == {(("version", "1.2.3"),): 1.0}
    outcomes = samples["rfmcube_cdc_import_processes_total"]
    assert {dict(labels)["outcome"] for labels in outcomes} == {
        "completed",
        "failed",
        "unknown",
        "running",
    }
    assert samples["rfmcube_cdc_active"] == {(): 0.0}
    # The process and the interpreter, on the service's own registry.
    assert samples["process_cpu_seconds_total"][()] > 0
    assert samples["process_resident_memory_bytes"][()] > 0
    assert "python_info" in samples and "python_gc_collections_total" in samples


def test_api_failing_counts_from_the_first_request_not_accepted() -> None:
    clock = Clock()
    metrics = Metrics(State(), monotonic=clock)

    def failing() -> float:
        return scrape(metrics)["rfmcube_cdc_api_failing_seconds"][()]

    assert failing() == 0
    metrics.attempt(attempt(None))  # no answer: refused, reset, DNS, timeout
    clock.now += 30
    metrics.attempt(attempt(503, "process"))  # a process check counts too
    clock.now += 30
    assert failing() == 60  # from the first failure, not the last
    metrics.attempt(attempt(200))
    assert failing() == 0
    for status in (429, 408, 425, 500):
        metrics.attempt(attempt(status))
        clock.now += 10
    assert failing() == 40
    metrics.attempt(attempt(422))  # the API answered about the content: reachable
    assert failing() == 0


def test_api_failing_is_0_on_a_standby_and_starts_afresh_when_active() -> None:
    clock = Clock()
    state = State()
    metrics = Metrics(state, monotonic=clock)
    metrics.attempt(attempt(None))
    clock.now += 100
    state.state = ServiceState(active=False)
    assert scrape(metrics)["rfmcube_cdc_api_failing_seconds"][()] == 0
    clock.now += 1000
    state.state = ServiceState(active=True)
    metrics.attempt(attempt(503))
    clock.now += 5
    assert scrape(metrics)["rfmcube_cdc_api_failing_seconds"][()] == 5


def test_freshness_is_observed_per_call_from_the_source_time() -> None:
    metrics = Metrics(State(), clock=lambda: 10_000.0)
    metrics.fresh("merge_order", [9_998_000, 9_700_000])  # 2 s and 300 s late
    metrics.fresh("import", [10_001_000])  # a source clock ahead of ours: 0
    samples = scrape(metrics)
    buckets = samples["rfmcube_cdc_freshness_seconds_bucket"]
    assert buckets[(("call", "merge_order"), ("le", "2.5"))] == 1
    assert buckets[(("call", "merge_order"), ("le", "300.0"))] == 2
    assert samples["rfmcube_cdc_freshness_seconds_sum"][(("call", "merge_order"),)] == 302
    assert samples["rfmcube_cdc_freshness_seconds_sum"][(("call", "import"),)] == 0
    assert samples["rfmcube_cdc_freshness_seconds_count"][(("call", "delete_customer"),)] == 0
