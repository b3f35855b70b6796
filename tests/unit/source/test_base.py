"""take_batches: how the service takes records from a source, a bounded slice at a time."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from consumer.source.base import take_batches
from schemas.debezium import RawRecord


def record(partition: int, offset: int) -> RawRecord:
    return RawRecord("t", partition, offset, None, b"{}", (), None)


batch_sizes = st.lists(st.integers(min_value=1, max_value=7), max_size=8)


@given(sizes=batch_sizes, bound=st.integers(min_value=1, max_value=12))
def test_bounded_takes_hand_over_every_record_once_in_order(sizes: list[int], bound: int) -> None:
    offsets = iter(range(1000))
    batches = [[record(i % 3, next(offsets)) for _ in range(n)] for i, n in enumerate(sizes)]
    polled = [r for batch in batches for r in batch]
    ready = deque(batches)
    taken: list[RawRecord] = []
    while ready:
        chunk = take_batches(ready, bound)
        assert 0 < len(chunk) <= bound
        taken.extend(chunk)
    assert taken == polled  # the order across partitions too, so within each one


def test_what_is_left_of_a_batch_cut_short_comes_first_next_time() -> None:
    ready = deque([[record(0, 0), record(0, 1), record(0, 2)], [record(1, 0)]])
    assert [r.offset for r in take_batches(ready, 2)] == [0, 1]
    assert [(r.partition, r.offset) for r in take_batches(ready, 2)] == [(0, 2), (1, 0)]
    assert not ready


def test_without_a_bound_everything_is_taken() -> None:
    ready = deque([[record(0, 0)], [record(1, 0), record(1, 1)]])
    assert len(take_batches(ready, None)) == 3
    assert take_batches(ready, None) == []
