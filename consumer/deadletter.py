"""The dead-letter topic: records and entities the pipeline could not deliver.

A dead letter keeps the original key and value (or, for an entity the API
rejected, the rejected document) and says why and where it came from in
headers. Sends are asynchronous; :meth:`DeadLetters.flush` waits for the
broker's acknowledgement (acks=all) and raises if any dead letter was lost,
so the service flushes before committing offsets past a dead-lettered record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from consumer.errors import RfmcubeCdcError
from consumer.source import broker_errors
from schemas.debezium import Position, RawRecord

log = logging.getLogger(__name__)

REASON = "rfmcube.reason"
SOURCE_TOPIC = "rfmcube.source.topic"
SOURCE_PARTITION = "rfmcube.source.partition"
SOURCE_OFFSET = "rfmcube.source.offset"
KIND = "rfmcube.kind"  # "record" (undecodable/unmappable) or "entity" (API-rejected)

Headers = list[tuple[str, bytes]]


class DeadLetterFailed(RfmcubeCdcError):
    """A dead letter was not acknowledged: offsets past it must not be committed."""


def producer_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a consumer's ``extra`` (security settings etc.) a producer accepts:
    consumer-only keys are left out, unknown keys stay so the producer refuses them."""
    consumer_only = set(KafkaConsumer.DEFAULT_CONFIG) - set(KafkaProducer.DEFAULT_CONFIG)
    return {key: value for key, value in extra.items() if key not in consumer_only}


def _position_headers(position: Position, reason: str, kind: str) -> Headers:
    return [
        (REASON, reason.encode("utf-8")),
        (SOURCE_TOPIC, position.topic.encode("utf-8")),
        (SOURCE_PARTITION, str(position.partition).encode("ascii")),
        (SOURCE_OFFSET, str(position.offset).encode("ascii")),
        (KIND, kind.encode("ascii")),
    ]


class DeadLetters:
    """Producer of the dead-letter topic."""

    def __init__(
        self, bootstrap_servers: str, topic: str, *, extra: Mapping[str, Any] | None = None
    ) -> None:
        self.topic = topic
        self.count = 0
        self._pending: list[Any] = []  # kafka futures not yet checked by flush()
        self._lost: BaseException | None = None
        config = {
            "client_id": "rfmcube-cdc-deadletter",
            "linger_ms": 5,
            **producer_extra(extra or {}),
            "bootstrap_servers": bootstrap_servers,
            "acks": "all",
        }
        with broker_errors(f"opening the dead-letter topic {topic}"):
            self._producer: Any = KafkaProducer(**config)
            # Fetch the topic's metadata now: a missing topic is a start-up
            # error, and the first send() then never blocks on it.
            self._producer.partitions_for(topic)

    def send(self, record: RawRecord, reason: str) -> None:
        """Dead-letter a record: its key, value and headers, plus why and where from."""
        headers: Headers = [(name, value or b"") for name, value in record.headers]
        headers += _position_headers(record.position, reason, "record")
        self._send(record.key, record.value, headers)

    def send_entity(self, position: Position, key: bytes | None, value: bytes, reason: str) -> None:
        """Dead-letter an entity the API rejected; ``value`` is the rejected JSON document."""
        self._send(key, value, _position_headers(position, reason, "entity"))

    def _send(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        future = self._producer.send(self.topic, key=key, value=value, headers=headers)
        self._pending.append(future)
        self.count += 1

    def flush(self, timeout: float = 10.0) -> None:
        """Block until the broker acknowledged every dead letter sent so far.

        Raises :class:`DeadLetterFailed` if one was not, now or before: a lost
        dead letter keeps every later flush failing, so nothing past it commits."""
        if self._pending:
            try:
                self._producer.flush(timeout=timeout)
            except Exception as exc:
                raise DeadLetterFailed(f"dead letters not acknowledged: {exc!r}") from exc
            pending, self._pending = self._pending, []
            for future in pending:
                if not future.is_done:
                    self._pending.append(future)
                elif future.failed() and self._lost is None:
                    self._lost = future.exception
            if self._pending:
                raise DeadLetterFailed(f"{len(self._pending)} dead letters not acknowledged yet")
        if self._lost is not None:
            raise DeadLetterFailed(
                f"a dead letter to {self.topic} was lost: {self._lost!r}"
            ) from self._lost

    def close(self) -> None:
        self._producer.close(timeout=10)
