"""/metrics of a running service, parsed with prometheus_client's own parser."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from testkit.pipeline import Pipeline


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _scrape(port: int) -> tuple[dict[str, str], list[Sample]]:
    """The metric families' types, and every sample."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for family in text_string_to_metric_families(text):
        assert family.documentation, f"{family.name} has no HELP"
        types[family.name] = family.type
        samples.extend(family.samples)
    return types, samples


def _first_scrape(port: int, timeout: float = 30) -> tuple[dict[str, str], list[Sample]]:
    """/metrics as soon as the health server answers (it starts before anything else)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _scrape(port)
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "the health server never answered"
            time.sleep(0.05)


CALLS = {"import", "merge_customer", "merge_order", "delete_customer"}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` with these labels (0 when none)."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def test_metrics_say_what_an_operator_alerts_on(pipeline: Pipeline) -> None:
    pipeline.api.reset(fail_rate=0.2, seed=28)  # the first two requests fail: retries
    # Live: the records' source ts_ms are the wall clock, as a real shop's are.
    shop = pipeline.shop(seed=131, live=True)
    shop.workload(customers=25, guest_orders=5)
    orders_topic = pipeline.topics[1]
    written_at = time.time()
    pipeline.write_shop(shop)
    pipeline.write([(orders_topic, b'{"id": 99}', b"not json")])
    port = _free_port()
    service = pipeline.start(service={"health_port": port, "health_host": "127.0.0.1"})

    # What the alerts read is there from the first scrape, before any request.
    first_types, first = _first_scrape(port)
    assert first_types["rfmcube_cdc_api_failing_seconds"] == "gauge"
    assert first_types["rfmcube_cdc_freshness_seconds"] == "histogram"
    counts = [s for s in first if s.name == "rfmcube_cdc_freshness_seconds_count"]
    assert {s.labels["call"] for s in counts} == CALLS
    outcomes = [s for s in first if s.name == "rfmcube_cdc_import_processes_total"]
    assert {s.labels["outcome"] for s in outcomes} == {"completed", "failed", "unknown", "running"}
    letters = [s for s in first if s.name == "rfmcube_cdc_dead_letters_total"]
    assert {s.labels["kind"] for s in letters} == {"record", "entity"}
    for gauge in ("rfmcube_cdc_active", "rfmcube_cdc_owed_age_seconds"):
        assert first_types[gauge] == "gauge"
    (build,) = [s for s in first if s.name == "rfmcube_cdc_build_info"]
    assert build.value == 1 and build.labels["version"][0].isdigit()
    assert first_types["process_cpu_seconds"] == "counter"  # the process collector
    assert first_types["python_info"] == "gauge"  # the platform collector
    pipeline.wait_caught_up(service)
    pipeline.wait_equal(shop, timeout=30)
    deadline = time.monotonic() + 30
    while True:  # until the imports were checked and the last commit seen by a fetch
        types, samples = _scrape(port)
        lags = [s.value for s in samples if s.name == "rfmcube_cdc_consumer_lag_records"]
        done = _value(samples, "rfmcube_cdc_pending_imports") == 0 and not any(lags)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert types["rfmcube_cdc_requests"] == "counter"
    assert types["rfmcube_cdc_request_duration_seconds"] == "histogram"
    assert types["rfmcube_cdc_consumer_lag_records"] == "gauge"
    # Requests on the wire, by call and status: retries are visible.
    log = pipeline.api.requests()
    imports_ok = sum(1 for r in log if r["call"] == "import" and r["status"] == 200)
    failed = sum(1 for r in log if r["status"] in (500, 503))
    assert failed > 0
    assert _value(samples, "rfmcube_cdc_requests_total", call="import", status="200") == imports_ok
    assert (
        _value(samples, "rfmcube_cdc_requests_total", status="500")
        + _value(samples, "rfmcube_cdc_requests_total", status="503")
        == failed
    )
    assert _value(samples, "rfmcube_cdc_request_retries_total") == failed
    assert _value(samples, "rfmcube_cdc_request_duration_seconds_count") == len(log)
    assert _value(samples, "rfmcube_cdc_dead_letters_total", kind="record") == 1
    assert _value(samples, "rfmcube_cdc_import_processes_total", outcome="completed") >= 1
    # Caught up: no lag, nothing owed, recent acceptance and commit, the active role.
    lags = [s for s in samples if s.name == "rfmcube_cdc_consumer_lag_records"]
    assert len(lags) == len(pipeline.topics) * 3 and all(s.value == 0 for s in lags)
    assert _value(samples, "rfmcube_cdc_owed_documents") == 0
    now = time.time()
    assert now - _value(samples, "rfmcube_cdc_last_commit_timestamp_seconds") < 30
    assert now - _value(samples, "rfmcube_cdc_last_accepted_request_timestamp_seconds") < 60
    assert _value(samples, "rfmcube_cdc_active") == 1
    assert _value(samples, "rfmcube_cdc_restore_progress_ratio") == 1
    assert _value(samples, "rfmcube_cdc_records_total", how="read") == len(shop.records) + 1
    # The API accepts again: no failing spell, though the first requests failed.
    assert _value(samples, "rfmcube_cdc_api_failing_seconds") == 0
    # Freshness: every document and delete accepted was observed once, under its call,
    # and none took longer than the whole run.
    sent = _value(samples, "rfmcube_cdc_documents_total", outcome="sent")
    upserts = sum(
        _value(samples, "rfmcube_cdc_freshness_seconds_count", call=call)
        for call in CALLS - {"delete_customer"}
    )
    assert sent > 0 and upserts == sent
    deletes = sum(1 for r in log if r["call"] == "delete_customer" and r["status"] == 200)
    observed = _value(samples, "rfmcube_cdc_freshness_seconds_count", call="delete_customer")
    assert 0 < observed <= deletes
    total = upserts + observed
    run = time.time() - written_at
    assert _value(samples, "rfmcube_cdc_freshness_seconds_sum") <= total * run
    within = _value(samples, "rfmcube_cdc_freshness_seconds_bucket", le="120.0")
    assert within == total and run < 120
    assert service.stop() == 0
