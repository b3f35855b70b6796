"""The offset tracker: commits only contiguous done offsets, across gaps and rebalances."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.offsets import OffsetTracker

TOPIC = "shop.public.orders"


def test_nothing_is_committable_before_a_record_is_done() -> None:
    tracker = OffsetTracker()
    tracker.track(TOPIC, 0, 0)
    tracker.track(TOPIC, 0, 1)
    assert tracker.committable() == {}
    assert tracker.pending() == 2


def test_offsets_never_committed_past_a_record_the_api_has_not_accepted() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.track(TOPIC, 0, offset)
    tracker.done(TOPIC, 0, 0)
    tracker.done(TOPIC, 0, 1)
    tracker.done(TOPIC, 0, 3)  # 2 is still in flight
    tracker.done(TOPIC, 0, 4)
    assert tracker.committable() == {(TOPIC, 0): 2}
    tracker.done(TOPIC, 0, 2)
    assert tracker.committable() == {(TOPIC, 0): 5}
    assert tracker.pending() == 0


def test_gaps_between_tracked_offsets_do_not_block() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 15, 40):  # compaction and transaction markers leave holes
        tracker.track(TOPIC, 0, offset)
    for offset in (40, 15, 11, 10):
        tracker.done(TOPIC, 0, offset)
    assert tracker.committable() == {(TOPIC, 0): 41}


def test_only_partitions_that_advanced_since_the_last_commit_are_committable() -> None:
    tracker = OffsetTracker()
    tracker.track(TOPIC, 0, 0)
    tracker.track(TOPIC, 1, 0)
    tracker.done(TOPIC, 0, 0)
    tracker.done(TOPIC, 1, 0)
    first = tracker.committable()
    assert first == {(TOPIC, 0): 1, (TOPIC, 1): 1}
    tracker.mark_committed(first)
    assert tracker.committable() == {}
    tracker.track(TOPIC, 1, 1)
    tracker.done(TOPIC, 1, 1)
    assert tracker.committable() == {(TOPIC, 1): 2}


def test_a_commit_of_an_older_snapshot_leaves_the_newer_offset_committable() -> None:
    tracker = OffsetTracker()
    tracker.track(TOPIC, 0, 0)
    tracker.track(TOPIC, 0, 1)
    tracker.done(TOPIC, 0, 0)
    snapshot = tracker.committable()
    tracker.done(TOPIC, 0, 1)  # finished while the commit was on its way
    tracker.mark_committed(snapshot)
    assert tracker.committable() == {(TOPIC, 0): 2}


def test_offsets_going_backwards_are_refused() -> None:
    tracker = OffsetTracker()
    tracker.track(TOPIC, 0, 5)
    with pytest.raises(ValueError, match=r"offset 5 tracked after 5"):
        tracker.track(TOPIC, 0, 5)
    with pytest.raises(ValueError, match=r"offset 3 tracked after 5"):
        tracker.track(TOPIC, 0, 3)
    tracker.track(TOPIC, 1, 3)  # another partition has its own sequence


def test_revoke_forgets_a_partition_and_late_acceptances_are_harmless() -> None:
    tracker = OffsetTracker()
    tracker.track(TOPIC, 0, 0)
    tracker.track(TOPIC, 0, 1)
    tracker.track(TOPIC, 1, 0)
    tracker.done(TOPIC, 0, 0)
    tracker.revoke([(TOPIC, 0)])
    assert tracker.pending() == 1
    assert tracker.committable() == {}
    tracker.done(TOPIC, 0, 1)  # the API answered after the rebalance
    tracker.mark_committed({(TOPIC, 0): 1})
    assert tracker.committable() == {}
    assert tracker.pending() == 1
    # Assigned again, the partition is read again from its committed offset.
    tracker.track(TOPIC, 0, 1)
    assert tracker.pending() == 2


def test_done_twice_or_for_an_untracked_offset_changes_nothing() -> None:
    tracker = OffsetTracker()
    tracker.track(TOPIC, 0, 0)
    tracker.track(TOPIC, 0, 2)
    tracker.done(TOPIC, 0, 2)
    tracker.done(TOPIC, 0, 2)
    tracker.done(TOPIC, 0, 1)
    assert tracker.pending() == 1
    assert tracker.pending_in(TOPIC, 0) == 1
    assert tracker.committable() == {}


def test_a_million_offsets_in_reverse_completion_order_is_fast() -> None:
    tracker = OffsetTracker()
    count = 1_000_000
    start = time.perf_counter()
    for offset in range(count):
        tracker.track(TOPIC, 0, offset)
    for offset in range(count - 1, -1, -1):
        tracker.done(TOPIC, 0, offset)
    elapsed = time.perf_counter() - start
    assert tracker.committable() == {(TOPIC, 0): count}
    assert elapsed < 10.0  # linear: a quadratic tracker would take hours


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[int], list[int], list[int]]:
    """Tracked offsets with gaps, the order they finish in, and commit checkpoints."""
    gaps = draw(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=60))
    offsets: list[int] = []
    position = draw(st.integers(min_value=0, max_value=100))
    for gap in gaps:
        offsets.append(position)
        position += gap
    finish_order = draw(st.permutations(offsets))
    checkpoints = draw(st.lists(st.integers(min_value=0, max_value=len(offsets)), max_size=10))
    return offsets, list(finish_order), checkpoints


@settings(max_examples=300, deadline=None)
@given(histories())
def test_committable_never_passes_an_unfinished_offset_and_reaches_the_end(
    history: tuple[list[int], list[int], list[int]],
) -> None:
    offsets, finish_order, checkpoints = history
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.track(TOPIC, 0, offset)
    finished: set[int] = set()
    last_committed = -1
    for step, offset in enumerate(finish_order):
        tracker.done(TOPIC, 0, offset)
        finished.add(offset)
        proposal = tracker.committable().get((TOPIC, 0))
        # The exact answer: one past the longest finished prefix, if it moved.
        prefix = list(itertools.takewhile(lambda o: o in finished, offsets))
        expected = prefix[-1] + 1 if prefix and prefix[-1] + 1 > last_committed else None
        assert proposal == expected
        if proposal is not None:
            unfinished_below = [o for o in offsets if o < proposal and o not in finished]
            assert unfinished_below == []
            if step in checkpoints:
                tracker.mark_committed({(TOPIC, 0): proposal})
                last_committed = proposal
        assert tracker.pending() == len(offsets) - len(finished)
    final = tracker.committable().get((TOPIC, 0), last_committed)
    assert final == offsets[-1] + 1
