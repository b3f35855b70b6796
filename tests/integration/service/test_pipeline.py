"""End to end: shop stream in Kafka → rfmcube-cdc → emulator; Rfmcube ends equal to the shop."""

from __future__ import annotations

from testkit.pipeline import Pipeline


def test_a_mixed_workload_ends_equal_to_the_shop(pipeline: Pipeline) -> None:
    shop = pipeline.shop()
    shop.workload(customers=40, guest_orders=10)
    pipeline.write_shop(shop)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    assert service.stop() == 0
    pipeline.assert_equal(shop)
    calls = {r["call"] for r in pipeline.api.requests()}
    assert "import" in calls and "delete_customer" in calls


def test_schemaless_records_end_equal_too(pipeline: Pipeline) -> None:
    shop = pipeline.shop(schemas=False)
    shop.workload(customers=20, guest_orders=5)
    pipeline.write_shop(shop)
    service = pipeline.start()
    pipeline.wait_caught_up(service)
    assert service.stop() == 0
    pipeline.assert_equal(shop)
