"""The real broker works for what the service does: produce, group-consume, commit."""

from __future__ import annotations

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata


def _consume(
    bootstrap: str, topic: str, group: str, want: int
) -> tuple[KafkaConsumer, list[bytes]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    values: list[bytes] = []
    for _ in range(60):
        for records in consumer.poll(timeout_ms=500).values():
            values.extend(r.value for r in records)
        if len(values) >= want:
            break
    return consumer, values


def test_records_come_back_and_committed_offset_is_where_reading_resumes(
    kafka_bootstrap: str, topic: str, producer: KafkaProducer
) -> None:
    for i in range(10):
        producer.send(topic, key=str(i).encode(), value=f"v{i}".encode())
    producer.flush()

    group = f"g-{topic}"
    consumer, values = _consume(kafka_bootstrap, topic, group, 10)
    assert values == [f"v{i}".encode() for i in range(10)]
    tp = TopicPartition(topic, 0)
    consumer.commit({tp: OffsetAndMetadata(4, "", -1)})
    assert consumer.committed(tp) == 4
    consumer.close()

    again, rest = _consume(kafka_bootstrap, topic, group, 6)
    again.close()
    assert rest == [f"v{i}".encode() for i in range(4, 10)]
