"""The running service never writes its secrets: the API key and a Kafka password,
given the ways an operator gives them, stay out of its logs even at DEBUG."""

from __future__ import annotations

import pytest

from testkit.pipeline import API_KEY, Pipeline

KAFKA_PASSWORD = "kafka-pw-3c9e1a77"


def test_the_service_logs_no_secret_at_debug_level(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From the environment, as a Kubernetes Secret would give it; the broker
    # speaks PLAINTEXT, so kafka-python holds the credentials without using them.
    monkeypatch.setenv("RFMCUBE_CDC__KAFKA__EXTRA__SASL_PLAIN_PASSWORD", KAFKA_PASSWORD)
    shop = pipeline.shop()
    shop.workload(customers=10, guest_orders=3)
    pipeline.write_shop(shop)
    service = pipeline.start(
        service={"log_level": "DEBUG", "log_format": "json"},
        kafka={
            "extra": {
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                "sasl_plain_username": "shop-sync",
            }
        },
    )
    pipeline.wait_caught_up(service)
    assert service.stop() == 0
    pipeline.assert_equal(shop)
    log = service.log()
    assert '"level":"debug"' in log  # the level took effect: there is something to search
    assert API_KEY not in log and KAFKA_PASSWORD not in log
