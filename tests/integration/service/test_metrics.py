"""/metrics of a running service, parsed with prometheus_client's own parser."""

from __future__ import annotations

import socket
import time
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


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` with these labels (0 when none)."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def test_metrics_say_what_an_operator_alerts_on(pipeline: Pipeline) -> None:
    pipeline.api.reset(fail_rate=0.2, seed=28)  # the first two requests fail: retries
    shop = pipeline.shop(seed=131)
    shop.workload(customers=25, guest_orders=5)
    orders_topic = pipeline.topics[1]
    pipeline.write_shop(shop)
    pipeline.write([(orders_topic, b'{"id": 99}', b"not json")])
    port = _free_port()
    service = pipeline.start(service={"health_port": port, "health_host": "127.0.0.1"})
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
    assert service.stop() == 0
