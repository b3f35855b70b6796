"""A flush waits for the dead letters sent before it, never for those sent meanwhile.

The service flushes in a thread while the event loop keeps dead-lettering;
kafka-python's own flush waits only for records sent before it began. A
producer whose acknowledgements lag stands in for a remote, loaded cluster
(pure bookkeeping: the real broker's side is in tests/integration)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from consumer.errors import DeadLetterFailed
from consumer.source.deadletter import DeadLetters
from schemas.debezium import RawRecord


class _Future:
    def __init__(self) -> None:
        self.is_done = False
        self.exception: BaseException | None = None

    def failed(self) -> bool:
        return self.exception is not None


class LaggingProducer:
    """Acknowledges, at each flush, only what was sent before the flush began; the
    ``during_flush`` hook stands for the event loop dead-lettering meanwhile."""

    config: ClassVar[dict[str, int]] = {"max_request_size": 1_048_576}

    def __init__(self) -> None:
        self.sent: list[_Future] = []
        self.during_flush: Any = None
        self.lost = False

    def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def send(self, topic: str, **_: Any) -> _Future:
        future = _Future()
        self.sent.append(future)
        return future

    def flush(self, timeout: float | None = None) -> None:
        before = list(self.sent)
        if self.during_flush is not None:
            hook, self.during_flush = self.during_flush, None
            hook()
        for future in before:
            future.is_done = True
            if self.lost:
                future.exception = RuntimeError("lost")

    def close(self, timeout: float | None = None) -> None:
        pass


def _record(offset: int) -> RawRecord:
    return RawRecord("shop.customers", 0, offset, b"k", b"not json")


def _letters() -> tuple[DeadLetters, LaggingProducer]:
    producer = LaggingProducer()
    return DeadLetters("unused:9092", "dead", producer=producer), producer


def test_letters_sent_during_a_flush_do_not_fail_it() -> None:
    letters, producer = _letters()
    for offset in range(3):
        letters.send(_record(offset), "not JSON")
    producer.during_flush = lambda: [letters.send(_record(o), "not JSON") for o in (3, 4)]
    letters.flush(timeout=0.5)  # must not raise: 3 and 4 came after it began
    assert letters.acknowledged == 3
    letters.flush(timeout=0.5)
    assert letters.acknowledged == 5


def test_a_flush_up_to_a_count_waits_only_for_those() -> None:
    letters, producer = _letters()
    letters.send(_record(0), "bad")
    counted = letters.count
    letters.send(_record(1), "bad")
    producer.during_flush = lambda: letters.send(_record(2), "bad")
    letters.flush(upto=counted, timeout=0.5)
    assert letters.acknowledged >= counted


def test_a_lost_letter_still_fails_every_flush_with_what_to_fix() -> None:
    letters, producer = _letters()
    producer.lost = True
    letters.send(_record(0), "bad")
    for _ in range(2):
        with pytest.raises(DeadLetterFailed, match="dead letter to dead was lost"):
            letters.flush(timeout=0.5)
