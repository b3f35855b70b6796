"""The single-active assignment, pure: members' subscriptions and claims in, one active out."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition
from kafka.coordinator.assignors.abstract import RebalanceProtocol
from kafka.coordinator.heartbeat import Heartbeat
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

from consumer.source.assignor import (
    GroupAssignment,
    HeartbeatLease,
    Member,
    PartitionId,
    SingleActiveAssignor,
    assign_single_active,
    lease_clock,
)

TOPICS = ("shop.customers", "shop.orders", "shop.items")
ALL_TOPICS = frozenset(TOPICS)
PARTITIONS: dict[str, list[int]] = {t: [0, 1, 2] for t in TOPICS}
EVERYTHING = tuple(sorted((t, p) for t in TOPICS for p in range(3)))


def holders(decision: GroupAssignment) -> dict[str, tuple[PartitionId, ...]]:
    return {m: given for m, given in decision.partitions.items() if given}


def test_with_no_owner_the_first_member_by_id_gets_every_partition() -> None:
    members = [Member(m, ALL_TOPICS) for m in ("m-c", "m-a", "m-b")]
    decision = assign_single_active(members, PARTITIONS)
    assert decision.active == "m-a"
    assert holders(decision) == {"m-a": EVERYTHING}
    assert decision.partitions["m-b"] == decision.partitions["m-c"] == ()
    assert decision.withheld == () and decision.unassigned_topics == ()


def test_static_members_come_before_dynamic_ones_and_are_ordered_by_instance_id() -> None:
    members = [
        Member("m-a", ALL_TOPICS),
        Member("m-z", ALL_TOPICS, instance_id="pod-1"),
        Member("m-b", ALL_TOPICS, instance_id="pod-0"),
    ]
    assert assign_single_active(members, PARTITIONS).active == "m-b"


def test_the_current_owner_keeps_every_partition_when_others_join() -> None:
    owner = Member("m-z", ALL_TOPICS, owned=frozenset(EVERYTHING), generation=4)
    for newcomers in (["m-a"], ["m-a", "m-b"], ["m-0", "m-1", "m-2"]):
        members = [Member(m, ALL_TOPICS) for m in newcomers] + [owner]
        decision = assign_single_active(members, PARTITIONS)
        assert holders(decision) == {"m-z": EVERYTHING}
        assert decision.superseded == frozenset()


def test_the_owner_also_gets_partitions_that_appeared_since() -> None:
    partial = frozenset(tp for tp in EVERYTHING if tp[1] < 2)
    members = [Member("m-a", ALL_TOPICS), Member("m-z", ALL_TOPICS, owned=partial, generation=3)]
    decision = assign_single_active(members, PARTITIONS)
    assert holders(decision) == {"m-z": EVERYTHING}


def test_when_the_owner_leaves_the_next_member_by_id_takes_everything_at_once() -> None:
    members = [Member("m-c", ALL_TOPICS), Member("m-b", ALL_TOPICS)]
    decision = assign_single_active(members, PARTITIONS)
    assert holders(decision) == {"m-b": EVERYTHING}
    assert decision.withheld == ()


def test_a_member_subscribed_to_fewer_topics_never_becomes_active_beside_a_complete_one() -> None:
    narrow = frozenset(TOPICS[:2])
    members = [Member("m-a", narrow), Member("m-z", ALL_TOPICS)]
    decision = assign_single_active(members, PARTITIONS)
    assert holders(decision) == {"m-z": EVERYTHING}


def test_an_owner_that_lost_eligibility_hands_over_in_two_rounds_never_sharing() -> None:
    # A rolling update that adds a topic: the old active subscribes to two of three.
    narrow = frozenset(TOPICS[:2])
    old_claim = frozenset(tp for tp in EVERYTHING if tp[0] in narrow)
    old = Member("m-a", narrow, owned=old_claim, generation=7)
    new = Member("m-z", ALL_TOPICS)
    first = assign_single_active([old, new], PARTITIONS)
    assert first.active == "m-z"
    assert holders(first) == {}  # the old owner revokes; the new one waits
    assert first.withheld == EVERYTHING
    assert first.superseded == frozenset()  # an orderly revoke: the old owner may commit

    second = assign_single_active([Member("m-a", narrow), new], PARTITIONS)
    assert holders(second) == {"m-z": EVERYTHING}


def test_when_no_member_subscribes_to_every_topic_the_widest_is_active_and_the_rest_waits() -> None:
    members = [
        Member("m-a", frozenset(TOPICS[:1])),
        Member("m-b", frozenset(TOPICS[1:])),
        Member("m-c", frozenset(TOPICS[:2])),
    ]
    decision = assign_single_active(members, PARTITIONS)
    assert decision.active == "m-b"  # two topics, and before m-c by id
    assert holders(decision) == {"m-b": tuple(tp for tp in EVERYTHING if tp[0] in TOPICS[1:])}
    assert decision.unassigned_topics == (TOPICS[0],)


def test_of_two_claims_on_the_same_partitions_the_newer_generation_wins() -> None:
    # A zombie rejoined before it learned it was evicted, still claiming what it had.
    zombie = Member("m-a", ALL_TOPICS, owned=frozenset(EVERYTHING), generation=3)
    current = Member("m-z", ALL_TOPICS, owned=frozenset(EVERYTHING), generation=5)
    decision = assign_single_active([zombie, current], PARTITIONS)
    assert holders(decision) == {"m-z": EVERYTHING}  # no round without an owner
    assert decision.superseded == frozenset({"m-a"})  # its loss is a loss, not a revoke


def test_claims_on_partitions_or_topics_that_are_gone_are_ignored() -> None:
    ghost = frozenset({(TOPICS[0], 9), ("shop.deleted", 0)})
    members = [Member("m-a", ALL_TOPICS), Member("m-z", ALL_TOPICS, owned=ghost, generation=9)]
    decision = assign_single_active(members, PARTITIONS)
    assert holders(decision) == {"m-a": EVERYTHING}
    assert decision.superseded == frozenset()


def test_topics_without_metadata_are_left_out() -> None:
    members = [Member("m-a", ALL_TOPICS)]
    decision = assign_single_active(members, {TOPICS[0]: [0, 1]})
    assert holders(decision) == {"m-a": ((TOPICS[0], 0), (TOPICS[0], 1))}


def test_an_empty_group_gets_an_empty_assignment() -> None:
    assert assign_single_active([], PARTITIONS).active is None


# -- properties over arbitrary groups ----------------------------------------

member_ids = st.lists(
    st.text("abcdef", min_size=1, max_size=3), min_size=1, max_size=5, unique=True
)


@st.composite
def groups(draw: st.DrawFn) -> tuple[list[Member], dict[str, list[int]]]:
    partitions = {t: list(range(draw(st.integers(1, 3)))) for t in TOPICS}
    members = []
    for member_id in draw(member_ids):
        topics = frozenset(draw(st.sets(st.sampled_from(TOPICS), min_size=1)))
        possible = sorted((t, p) for t in topics for p in partitions[t])
        owned = frozenset(draw(st.sets(st.sampled_from(possible))))
        members.append(
            Member(
                member_id,
                topics,
                owned=owned,
                generation=draw(st.integers(-1, 4)) if owned else -1,
                instance_id=draw(st.none() | st.sampled_from(["pod-0", "pod-1"])),
            )
        )
    return members, partitions


@settings(max_examples=300, deadline=None)
@given(groups())
def test_at_most_one_member_holds_partitions_and_only_of_its_own_topics(
    group: tuple[list[Member], dict[str, list[int]]],
) -> None:
    members, partitions = group
    decision = assign_single_active(members, partitions)
    by_id = {m.member_id: m for m in members}
    assert set(decision.partitions) == set(by_id)
    assert set(holders(decision)) <= {decision.active}
    active = by_id[decision.active or ""]
    for topic, partition in decision.partitions[active.member_id]:
        assert topic in active.topics and partition in partitions[topic]
    subscribed = frozenset().union(*(m.topics for m in members))
    if any(m.topics == subscribed for m in members):
        assert active.topics == subscribed


@settings(max_examples=300, deadline=None)
@given(groups())
def test_the_active_gains_nothing_another_member_still_owns(
    group: tuple[list[Member], dict[str, list[int]]],
) -> None:
    members, partitions = group
    decision = assign_single_active(members, partitions)
    mine = decision.partitions[decision.active or ""]
    for m in members:
        if m.member_id == decision.active or m.member_id in decision.superseded:
            continue
        # An orderly owner that is not the active: it still holds its claim this round.
        live = {tp for tp in m.owned if tp[0] in m.topics and tp[1] in partitions[tp[0]]}
        assert not live & set(mine)


@settings(max_examples=300, deadline=None)
@given(groups(), st.randoms(use_true_random=False))
def test_the_decision_does_not_depend_on_the_order_members_are_listed_in(
    group: tuple[list[Member], dict[str, list[int]]], rng: random.Random
) -> None:
    members, partitions = group
    shuffled = list(members)
    rng.shuffle(shuffled)
    assert assign_single_active(members, partitions) == assign_single_active(shuffled, partitions)


@settings(max_examples=300, deadline=None)
@given(groups())
def test_two_rounds_settle_the_group_and_further_rounds_change_nothing(
    group: tuple[list[Member], dict[str, list[int]]],
) -> None:
    members, partitions = group

    def next_round(members: list[Member], decision: GroupAssignment, gen: int) -> list[Member]:
        return [
            Member(
                m.member_id,
                m.topics,
                owned=frozenset(decision.partitions[m.member_id]),
                generation=gen if decision.partitions[m.member_id] else -1,
                instance_id=m.instance_id,
            )
            for m in members
        ]

    first = assign_single_active(members, partitions)
    second = assign_single_active(next_round(members, first, 10), partitions)
    third = assign_single_active(next_round(members, second, 11), partitions)
    assert second.active == first.active == third.active
    assert second.withheld == () and second.superseded == frozenset()
    active = next(m for m in members if m.member_id == second.active)
    assert holders(second) == holders(third)
    assert set(second.partitions[active.member_id]) == {
        (t, p) for t in active.topics for p in partitions[t]
    }


# -- kafka-python's side -------------------------------------------------------


def join_member(member_id: str, metadata: Any, instance_id: str | None = None) -> Any:
    """A JoinGroup response member as kafka-python hands it to the leader's assignor."""
    decoded = ConsumerProtocolSubscription.decode(metadata.encode())
    return SimpleNamespace(member_id=member_id, group_instance_id=instance_id, metadata=decoded)


class Cluster:
    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(PARTITIONS[topic]) if topic in PARTITIONS else None


def bound(owned: Sequence[PartitionId] = ()) -> SingleActiveAssignor:
    assignor = SingleActiveAssignor()
    assignor.bind(lambda: {TopicPartition(t, p) for t, p in owned})
    return assignor


def test_the_assignor_is_cooperative_so_a_rebalance_revokes_only_what_moves() -> None:
    assert SingleActiveAssignor().supported_protocols() == [RebalanceProtocol.COOPERATIVE]


def test_metadata_carries_what_the_member_owns_now_and_since_which_generation() -> None:
    assignor = bound(EVERYTHING)
    assignor.on_assignment(ConsumerProtocolAssignment(0, [(TOPICS[0], [0])], b"{}"), 6)
    sent = join_member("m-a", assignor.metadata(set(TOPICS))).metadata
    assert sent.version == 2 and sent.generation_id == 6 and sorted(sent.topics) == sorted(TOPICS)
    owned = sorted((tp.topic, p) for tp in sent.owned_partitions for p in tp.partitions)
    assert tuple(owned) == EVERYTHING

    nothing = bound(())  # e.g. after its partitions were lost: it claims nothing
    nothing.on_assignment(ConsumerProtocolAssignment(0, [(TOPICS[0], [0])], b"{}"), 6)
    sent = join_member("m-b", nothing.metadata(set(TOPICS))).metadata
    assert sent.owned_partitions == [] and sent.generation_id == -1


def test_an_unbound_assignor_refuses_to_join_rather_than_claim_nothing() -> None:
    with pytest.raises(RuntimeError, match="bind"):
        SingleActiveAssignor().metadata(set(TOPICS))


def test_the_leader_assigns_from_the_members_metadata_and_tells_each_its_part() -> None:
    owner, standby, zombie = bound(EVERYTHING), bound(()), bound(EVERYTHING)
    owner.on_assignment(ConsumerProtocolAssignment(0, [(TOPICS[0], [0])], b"{}"), 5)
    zombie.on_assignment(ConsumerProtocolAssignment(0, [(TOPICS[0], [0])], b"{}"), 3)
    members = [
        join_member("m-a", zombie.metadata(set(TOPICS))),
        join_member("m-b", standby.metadata(set(TOPICS))),
        join_member("m-z", owner.metadata(set(TOPICS))),
    ]
    leader = bound()
    sent = leader.assign(Cluster(), members)
    received = {m: ConsumerProtocolAssignment.decode(a.encode()) for m, a in sent.items()}
    assert {m: tuple(sorted(a.partitions())) for m, a in received.items()} == {
        "m-a": (),
        "m-b": (),
        "m-z": tuple(TopicPartition(t, p) for t, p in EVERYTHING),
    }
    for member_id, assignor, generation in (("m-a", zombie, 6), ("m-z", owner, 6)):
        assignor.on_assignment(received[member_id], generation)
        assert assignor.active_member == "m-z" and assignor.generation == 6
    assert zombie.superseded and not owner.superseded


def test_an_assignment_without_our_note_is_no_supersession() -> None:
    assignor = bound()
    assignor.on_assignment(ConsumerProtocolAssignment(0, [], b"not json"), 2)
    assert not assignor.superseded and assignor.active_member is None


# -- the lease ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_lease_runs_one_session_from_the_send_time_of_the_last_acknowledged_heartbeat() -> None:
    clock = Clock()
    lease = HeartbeatLease(6000, clock=clock)
    assert not lease.valid() and lease.valid_until() is None  # nothing acknowledged yet
    lease.renew(99.0)
    assert lease.valid_until() == 105.0 and lease.valid()
    lease.renew(98.0)  # an older acknowledgement never moves it back
    assert lease.valid_until() == 105.0
    clock.now = 105.0
    assert not lease.valid()


class Coordinator:
    """The parts of kafka-python's coordinator the lease follows (the heartbeat is real)."""

    def __init__(self) -> None:
        self.heartbeat = Heartbeat(
            group_id="g", session_timeout_ms=6000, heartbeat_interval_ms=1000
        )
        self.resets: list[Any] = []
        self.enabled = False

    def reset_generation(self, member_id: str = "") -> None:
        self.resets.append(member_id)

    def _enable_heartbeat(self) -> None:  # as kafka-python does once a join completes
        self.enabled = True
        self.heartbeat.reset_timeouts()


def test_the_lease_follows_kafka_pythons_heartbeats() -> None:
    coordinator = Coordinator()
    heartbeat = coordinator.heartbeat
    clock = Clock()
    lease = HeartbeatLease(6000, clock=clock)
    lease.attach(SimpleNamespace(_coordinator=coordinator))
    heartbeat.sent_heartbeat()
    sent = clock.now
    clock.now += 0.2  # the answer comes later
    assert lease.valid_until() is None  # sent, not yet acknowledged
    heartbeat.received_heartbeat()
    assert lease.valid_until() == sent + 6.0 and lease.valid()
    assert heartbeat.last_receive >= sent  # kafka-python's own bookkeeping still runs
    heartbeat.sent_heartbeat()
    heartbeat.fail_heartbeat()
    assert lease.valid_until() == sent + 6.0


def test_a_suspension_runs_the_lease_out_though_kafka_pythons_clock_stood_still() -> None:
    """kafka-python stamps heartbeats on the monotonic clock, which stands still while
    a VM is suspended; the broker's session does not: neither may the lease."""
    coordinator = Coordinator()
    heartbeat = coordinator.heartbeat
    clock = Clock()
    lease = HeartbeatLease(6000, clock=clock)
    lease.attach(SimpleNamespace(_coordinator=coordinator))
    heartbeat.sent_heartbeat()
    heartbeat.received_heartbeat()
    assert lease.valid()
    clock.now += 30  # suspended for 30 s: no monotonic time passed
    assert not lease.valid()


def test_the_lease_counts_on_a_clock_that_counts_suspension() -> None:
    lease = HeartbeatLease(6000)
    assert lease._clock is lease_clock
    assert abs(lease_clock() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1.0


def test_the_first_heartbeat_after_a_join_goes_out_at_once() -> None:
    coordinator = Coordinator()
    heartbeat = coordinator.heartbeat
    HeartbeatLease(6000).attach(SimpleNamespace(_coordinator=coordinator))
    heartbeat.sent_heartbeat()  # a heartbeat of the previous generation, just now
    coordinator._enable_heartbeat()  # a join completed
    assert coordinator.enabled  # kafka-python's own step still runs
    assert heartbeat.time_to_next_heartbeat() <= 0.1  # retry_backoff_ms, not 1 s
    heartbeat.sent_heartbeat()
    assert heartbeat.time_to_next_heartbeat() > 0.9  # then the usual interval


def test_the_lease_is_void_once_kafka_python_drops_the_generation() -> None:
    coordinator = Coordinator()
    heartbeat = coordinator.heartbeat
    lease = HeartbeatLease(6000)
    lease.attach(SimpleNamespace(_coordinator=coordinator))
    heartbeat.sent_heartbeat()
    in_flight = heartbeat.last_send
    heartbeat.received_heartbeat()
    heartbeat.sent_heartbeat()  # in flight while a commit learns the member is unknown
    coordinator.reset_generation(member_id="m-a")
    assert coordinator.resets == ["m-a"]  # kafka-python's own reset still runs
    assert not lease.valid() and lease.valid_until() is None
    heartbeat.last_send = in_flight  # an answer to a heartbeat sent before the reset
    heartbeat.received_heartbeat()
    assert lease.valid_until() is None
    heartbeat.sent_heartbeat()  # the new membership's heartbeats count again
    heartbeat.received_heartbeat()
    assert lease.valid()


def test_the_lease_refuses_a_consumer_without_what_it_follows() -> None:
    with pytest.raises(RuntimeError, match="heartbeat"):
        HeartbeatLease(6000).attach(SimpleNamespace())
