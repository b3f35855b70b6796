"""The dead-letter topic: records and entities the pipeline could not deliver.

A dead letter keeps the original key and value (or, for an entity the API
rejected, the rejected document) and says why and where it came from in
headers: ours (``rfmcube.*``) and Kafka Connect's (``__connect.errors.*``:
topic, partition, offset, exception class and message), which existing
dead-letter tooling reads. The letters are read back, listed and replayed by
:mod:`consumer.source.letters`. Sends are asynchronous; :meth:`DeadLetters.flush` waits for the
broker's acknowledgement (acks=all) of the dead letters sent before it (or up
to a count), never for those sent meanwhile, and raises if any dead letter
was lost, so the service flushes before committing offsets past a
dead-lettered record. The event loop sends while a thread flushes: the
bookkeeping is under a lock.

A dead letter never fails for its size. One larger than the producer's
``max_request_size`` is cut before it is sent (kafka-python refuses it in
``send()`` itself, outside the future); one the topic refuses as too large
(its ``max.message.bytes``) is sent again, cut smaller. What was cut is said
in the ``rfmcube.truncated`` header (``value``, ``headers``, ``key``, in that
order of sacrifice) with the original key + value size in
``rfmcube.original.bytes``. Any other refusal (topic missing, not
authorized, not acknowledged after the producer's retries) makes
:meth:`DeadLetters.flush` raise :class:`DeadLetterFailed` with a one-line
message that says what to fix, then and at every later flush.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaConsumer, KafkaProducer
from kafka.record.default_records import DefaultRecordBatchBuilder

from consumer.errors import ApiRejected, BadRecord, DeadLetterFailed
from consumer.source.base import broker_errors
from schemas.debezium import Position, RawRecord

log = logging.getLogger(__name__)

REASON = "rfmcube.reason"
SOURCE_TOPIC = "rfmcube.source.topic"
SOURCE_PARTITION = "rfmcube.source.partition"
SOURCE_OFFSET = "rfmcube.source.offset"
KIND = "rfmcube.kind"  # "record" (undecodable/unmappable) or "entity" (API-rejected)
TRUNCATED = "rfmcube.truncated"  # what was cut to fit: "value", "value,headers", ...
ORIGINAL_BYTES = "rfmcube.original.bytes"  # key + value bytes before the cut
# Kafka Connect's names (its DeadLetterQueueReporter), beside ours.
CONNECT_TOPIC = "__connect.errors.topic"
CONNECT_PARTITION = "__connect.errors.partition"
CONNECT_OFFSET = "__connect.errors.offset"
CONNECT_CLASS = "__connect.errors.exception.class.name"
CONNECT_MESSAGE = "__connect.errors.exception.message"
CONNECT_PREFIX = "__connect.errors."

Headers = list[tuple[str, bytes]]

MAX_REASON_BYTES = 2000
# The varints of a record's lengths grow by a few bytes at most between two estimates.
_SLACK = 16
_SIZE_ERRORS = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordListTooLargeError)


def producer_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a consumer's ``extra`` (security settings etc.) a producer accepts:
    consumer-only keys are left out, unknown keys stay so the producer refuses them."""
    consumer_only = set(KafkaConsumer.DEFAULT_CONFIG) - set(KafkaProducer.DEFAULT_CONFIG)
    return {key: value for key, value in extra.items() if key not in consumer_only}


def _error_class(kind: str, reason: str) -> str:
    """The exception class Connect's header names: the error class of ours that says
    why. The API's refusals name their call (``import rejected: ...``); the other
    entity letters are documents no request could carry (the planner's)."""
    if kind == "entity" and " rejected: " in reason:
        return f"{ApiRejected.__module__}.{ApiRejected.__qualname__}"
    return f"{BadRecord.__module__}.{BadRecord.__qualname__}"


def _position_headers(position: Position, reason: str, kind: str) -> Headers:
    text = reason.encode("utf-8", "backslashreplace")  # a lone surrogate must not fail send()
    if len(text) > MAX_REASON_BYTES:
        text = text[: MAX_REASON_BYTES - 3].decode("utf-8", "ignore").encode() + "…".encode()
    topic = position.topic.encode("utf-8", "backslashreplace")
    partition = str(position.partition).encode("ascii")
    offset = str(position.offset).encode("ascii")
    ours = [
        (REASON, text),
        (SOURCE_TOPIC, topic),
        (SOURCE_PARTITION, partition),
        (SOURCE_OFFSET, offset),
        (KIND, kind.encode("ascii")),
    ]
    # Connect names a position only when there is one (a document whose records were
    # all committed has none).
    where = (
        [(CONNECT_TOPIC, topic), (CONNECT_PARTITION, partition), (CONNECT_OFFSET, offset)]
        if position.topic
        else []
    )
    error = [(CONNECT_CLASS, _error_class(kind, reason).encode("ascii")), (CONNECT_MESSAGE, text)]
    return ours + where + error


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """An upper bound of the bytes one record takes in a request (kafka-python's own)."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
    return size


_LONGEST_CUT = b"value,headers,key"


def fit(
    key: bytes | None, value: bytes | None, carried: Headers, own: Headers, limit: int
) -> tuple[bytes | None, bytes | None, Headers] | None:
    """The dead letter cut to take at most ``limit`` bytes, or None when even its
    own headers do not fit. ``carried`` are the original record's headers (cut
    before the key), ``own`` ours (never cut)."""
    if record_size(key, value, carried + own) <= limit:
        return key, value, carried + own
    original = len(key or b"") + len(value or b"")
    marks = [(ORIGINAL_BYTES, str(original).encode("ascii"))]
    cut: list[str] = []

    def labelled() -> Headers:
        return [*own, (TRUNCATED, ",".join(cut).encode("ascii")), *marks]

    def room(key_part: bytes | None, value_part: bytes | None, headers: Headers) -> int:
        reserve = [*headers[: -len(marks) - 1], (TRUNCATED, _LONGEST_CUT), *marks]
        return limit - record_size(key_part, value_part, reserve) - _SLACK

    if value:
        cut.append("value")
        value = value[: max(0, room(key, b"", carried + labelled()))]
        if record_size(key, value, carried + labelled()) <= limit:
            return key, value, carried + labelled()
    if carried:
        cut.append("headers")
        carried = []
        if record_size(key, value, labelled()) <= limit:
            return key, value, labelled()
    if key:
        cut.append("key")
        key = key[: max(0, room(b"", value, labelled()))]
        if record_size(key, value, labelled()) <= limit:
            return key, value, labelled()
    return None


@dataclass(slots=True)
class _Letter:
    """A dead letter in flight: what it was before any cut, and the cut sent."""

    key: bytes | None
    value: bytes | None
    carried: Headers
    own: Headers
    sent_bytes: int = 0
    future: Any = None
    cut: bool = False
    number: int = 0  # 1, 2, ... in the order sent; kept when it is sent again, cut smaller


class DeadLetters:
    """Producer of the dead-letter topic."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        extra: Mapping[str, Any] | None = None,
        producer: Any = None,
    ) -> None:
        self.topic = topic
        self.count = 0  # dead letters sent: each has its number, 1 to count
        self.acknowledged = 0  # every dead letter numbered up to this was acknowledged
        self.truncated = 0
        self._lock = threading.Lock()  # the loop sends while a thread flushes
        self._pending: list[_Letter] = []  # sent, not yet seen acknowledged by flush()
        self._lost: str | None = None  # why a dead letter was lost: sticky
        self._producer: Any = producer  # tests: a stand-in whose acknowledgements lag
        if producer is None:
            self._producer = _open_producer(bootstrap_servers, topic, extra or {})
        self._max_bytes = int(self._producer.config["max_request_size"])

    def send(self, record: RawRecord, reason: str) -> None:
        """Dead-letter a record: its key, value and headers, plus why and where from."""
        carried: Headers = [(name, value or b"") for name, value in record.headers]
        own = _position_headers(record.position, reason, "record")
        self._send(_Letter(record.key, record.value, carried, own), self._max_bytes)

    def send_entity(self, position: Position, key: bytes | None, value: bytes, reason: str) -> None:
        """Dead-letter an entity the API rejected; ``value`` is the rejected JSON document."""
        self._send(
            _Letter(key, value, [], _position_headers(position, reason, "entity")), self._max_bytes
        )

    def _send(self, letter: _Letter, limit: int) -> None:
        """Send ``letter`` cut to ``limit`` bytes; never raises: a failure is kept
        for flush(), so that no offset past this dead letter is committed."""
        fitted = fit(letter.key, letter.value, letter.carried, letter.own, limit)
        if fitted is None:
            self._lose(
                f"the dead-letter topic {self.topic} refuses a dead letter of"
                f" {letter.sent_bytes or limit} bytes even with its body cut:"
                " raise the topic's max.message.bytes (and the producer's max_request_size)",
                letter,
            )
            return
        key, value, headers = fitted
        letter.sent_bytes = record_size(key, value, headers)
        if not letter.cut and any(name == TRUNCATED for name, _ in headers):
            letter.cut = True
            self.truncated += 1
            log.warning(
                "dead letter from %s cut to fit the dead-letter topic %s",
                _source_of(letter.own),
                self.topic,
            )
        try:
            future = self._producer.send(self.topic, key=key, value=value, headers=headers)
        except _SIZE_ERRORS:
            # fit() used the producer's own estimate: this is not meant to happen
            self._send(letter, _smaller(letter))
            return
        except Exception as exc:  # closed producer, buffer full past max_block_ms...
            self._lose(_refusal(self.topic, exc), letter)
            return
        with self._lock:
            letter.future = future
            if not letter.number:  # a new letter (not one sent again, cut smaller)
                self.count += 1
                letter.number = self.count
                self._pending.append(letter)

    def _lose(self, why: str, letter: _Letter | None = None) -> None:
        log.error("dead letter lost: %s", why)
        if self._lost is None:
            self._lost = why
        if letter is not None and letter.number:  # lost, not to be waited for again
            with self._lock:
                self._pending = [x for x in self._pending if x is not letter]

    def flush(self, timeout: float = 10.0, *, upto: int | None = None) -> None:
        """Block until the broker acknowledged the dead letters numbered up to ``upto``
        (default: every one sent before this call); those sent meanwhile are for a
        later flush.

        A dead letter the topic refuses as too large is sent again, cut smaller.
        Raises :class:`DeadLetterFailed` if one was lost, now or before (every
        later flush fails too, so nothing past it commits), or if some are
        still unacknowledged after ``timeout`` seconds."""
        upto = self.count if upto is None else upto
        deadline = time.monotonic() + timeout
        while self._waiting_for(upto):
            try:
                # kafka-python waits for every record sent before this call: ours.
                self._producer.flush(timeout=max(0.0, deadline - time.monotonic()))
            except kafka_errors.KafkaTimeoutError:
                break
            except kafka_errors.UnknownError:
                # kafka-python 3.0 raises this when a batch it split after a
                # MESSAGE_TOO_LARGE is in flight still: wait for the parts
                if time.monotonic() + 0.05 < deadline:
                    time.sleep(0.05)
                    continue
                break
            except Exception as exc:
                raise DeadLetterFailed(_refusal(self.topic, exc)) from exc
            if not self._settle(upto):
                break
        waiting = self._waiting_for(upto)
        if waiting:
            raise DeadLetterFailed(
                f"{waiting} dead letters to {self.topic} not acknowledged within"
                f" {timeout:.0f} s: check that the broker is reachable and the topic writable"
            )
        if self._lost is not None:
            raise DeadLetterFailed(self._lost)
        self.acknowledged = max(self.acknowledged, upto)

    def _waiting_for(self, upto: int) -> int:
        with self._lock:
            return sum(1 for letter in self._pending if letter.number <= upto)

    def _settle(self, upto: int) -> bool:
        """Drop the acknowledged letters up to ``upto``; send again, cut smaller, those
        refused as too large. True when some were sent again (flush once more)."""
        too_large: list[_Letter] = []
        with self._lock:
            kept: list[_Letter] = []
            for letter in self._pending:
                future = letter.future
                if letter.number > upto or not future.is_done:
                    kept.append(letter)
                elif not future.failed():
                    continue
                elif isinstance(future.exception, _SIZE_ERRORS):
                    kept.append(letter)
                    too_large.append(letter)
                else:
                    self._lose(_refusal(self.topic, future.exception))
            self._pending = kept
        for letter in too_large:
            self._send(letter, _smaller(letter))
        return bool(too_large)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.close(timeout=timeout)


def _open_producer(bootstrap_servers: str, topic: str, extra: Mapping[str, Any]) -> Any:
    config = {
        "client_id": "rfmcube-cdc-deadletter",
        "linger_ms": 5,
        **producer_extra(extra or {}),
        "bootstrap_servers": bootstrap_servers,
        "acks": "all",
        # kafka-python 3.0's idempotent producer fails every later batch of a
        # partition once one was refused as too large (seen on Kafka 4.1), and a
        # refused dead letter is sent again, cut smaller. Without idempotence a
        # retry may write a dead letter twice: never lose one.
        "enable_idempotence": False,
    }
    with broker_errors(f"opening the dead-letter topic {topic}"):
        producer = KafkaProducer(**config)
        # Fetch the topic's metadata now: a missing topic is a start-up
        # error, and the first send() then never blocks on it.
        producer.partitions_for(topic)
    return producer


def _smaller(letter: _Letter) -> int:
    """The next size to try for a dead letter refused as too large (the topic's
    limit is unknown): three quarters of the last, down to the letter cut bare;
    0, which nothing fits, once that was refused too."""
    bare = [*letter.own, (TRUNCATED, _LONGEST_CUT), (ORIGINAL_BYTES, b"0" * 12)]
    floor = record_size(None, b"", bare)
    if letter.sent_bytes <= floor:
        return 0
    return max(floor, letter.sent_bytes * 3 // 4)


def _source_of(own: Headers) -> str:
    values = {name: value.decode("utf-8", "replace") for name, value in own}
    return f"{values[SOURCE_TOPIC]}[{values[SOURCE_PARTITION]}]@{values[SOURCE_OFFSET]}"


def _refusal(topic: str, exc: BaseException | None) -> str:
    """One line: why the topic did not take a dead letter, and what to fix."""
    name = type(exc).__name__
    if isinstance(exc, kafka_errors.TopicAuthorizationFailedError):
        fix = "grant this client WRITE on the topic"
    elif isinstance(exc, kafka_errors.UnknownTopicOrPartitionError):
        fix = "create the topic (kafka.dead_letter_topic names it)"
    elif isinstance(
        exc, kafka_errors.NotEnoughReplicasError | kafka_errors.NotEnoughReplicasAfterAppendError
    ):
        fix = "the topic has fewer in-sync replicas than its min.insync.replicas"
    elif isinstance(exc, kafka_errors.InvalidRecordError):
        fix = (
            "the topic refuses the record (a compacted topic refuses one without a key):"
            " use cleanup.policy=delete"
        )
    elif isinstance(exc, kafka_errors.KafkaTimeoutError):
        fix = "no acknowledgement within the producer's delivery timeout: check the broker"
    else:
        fix = "check the topic and the broker"
    return f"a dead letter to {topic} was lost ({name}): {fix}; nothing past it is committed"
