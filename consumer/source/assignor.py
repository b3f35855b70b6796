"""One active member per consumer group: who holds the partitions, and for how long it may trust it.

Customers, orders and items sit in different topics keyed by their own ids,
so the store must see every partition of every mapped topic. Any number of
instances may share the group; the assignor here gives every partition to
one of them (the *active*) and nothing to the others (the *standbys*).

Who is active (:func:`assign_single_active`, pure):

1. Eligible are the members subscribed to every topic anyone in the group
   subscribes to. When none is (a misconfigured or half-rolled-out group),
   the members with the most of those topics are eligible, and partitions of
   topics the active does not subscribe to stay unassigned: a visible stall
   rather than two members each sending half of the joins.
2. Sticky: the eligible member that owns partitions now keeps them (and gets
   the rest). Members report what they own and the generation in which they
   got it (ConsumerProtocolSubscription v2: OwnedPartitions, GenerationId);
   when two claim the same partition the newer generation wins, and the
   loser is told its claim was *superseded*.
3. Otherwise the first eligible member by (static instance id, member id).

Protocol: COOPERATIVE (KIP-429, which kafka-python 3.0 implements). A member
keeps its partitions across a rebalance, so a standby joining or leaving
revokes nothing and the active never stops. When the role must move from a
member that still owns partitions (it lost eligibility, or the group was
split), the new active gets nothing new in that round: the old owner sees
its assignment shrink, revokes (and may commit, being a valid member of the
new generation), and rejoins; the next round gives everything to the new
active. So no two members ever hold partitions at once, as far as the group
knows.

How long a holder may trust it (:class:`HeartbeatLease`): the broker removes
a member ``session_timeout_ms`` after the last heartbeat it *received*; that
is never before ``session_timeout_ms`` after the member *sent* it. So the
send time of the last acknowledged heartbeat plus the session timeout is a
deadline before which no other member can have been given the partitions.
A member paused (SIGSTOP, a long GC, a frozen VM) or cut off from the broker
learns at once from the lease that it may no longer act, without waiting for
the broker's verdict.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor, RebalanceProtocol
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

from schemas.debezium import PartitionId

log = logging.getLogger(__name__)


NO_GENERATION: Final = -1
# ConsumerProtocolSubscription v2 carries OwnedPartitions (v1, KIP-429) and GenerationId (KIP-792).
SUBSCRIPTION_VERSION: Final = 2
ASSIGNMENT_VERSION: Final = 0


@dataclass(frozen=True)
class Member:
    """What one member told the group when it joined."""

    member_id: str
    topics: frozenset[str]
    owned: frozenset[PartitionId] = frozenset()
    generation: int = NO_GENERATION  # the generation in which it got ``owned``
    instance_id: str | None = None  # group.instance.id of a static member

    def order(self) -> tuple[bool, str, str]:
        """Deterministic choice among equals: static members first, then by id."""
        return (self.instance_id is None, self.instance_id or "", self.member_id)


@dataclass(frozen=True)
class GroupAssignment:
    """The leader's decision for one generation."""

    active: str | None
    partitions: Mapping[str, tuple[PartitionId, ...]]  # every member, standbys with ()
    superseded: frozenset[str]  # members whose claim lost to a newer one: theirs is lost
    withheld: tuple[PartitionId, ...]  # for the active once their owner revoked them
    unassigned_topics: tuple[str, ...]  # subscribed by someone, not by the active


def assign_single_active(
    members: Sequence[Member], partitions: Mapping[str, Iterable[int]]
) -> GroupAssignment:
    """Every partition of the subscribed topics to one member (see the module docstring).

    ``partitions`` lists each topic's partitions; topics missing from it (no
    metadata yet) are left out until the next rebalance."""
    if not members:
        return GroupAssignment(None, {}, frozenset(), (), ())
    subscribed = frozenset[str]().union(*(m.topics for m in members))
    existing = {(topic, p) for topic in subscribed for p in partitions.get(topic, ())}

    # The current owner of each partition: the newest claim wins.
    owner: dict[PartitionId, Member] = {}
    for m in sorted(members, key=lambda m: (-m.generation, m.order())):
        for tp in m.owned:
            if tp in existing and tp[0] in m.topics:
                owner.setdefault(tp, m)
    superseded = frozenset(
        m.member_id for m in members if any(tp in owner and owner[tp] is not m for tp in m.owned)
    )

    coverage = {m.member_id: len(m.topics & subscribed) for m in members}
    best = max(coverage.values())
    eligible = [m for m in members if coverage[m.member_id] == best]
    holding = {m.member_id: sum(1 for o in owner.values() if o is m) for m in eligible}
    owners = [m for m in eligible if holding[m.member_id]]
    if owners:
        active = min(owners, key=lambda m: (-m.generation, -holding[m.member_id], m.order()))
    else:
        active = min(eligible, key=Member.order)

    target = sorted(tp for tp in existing if tp[0] in active.topics)
    held_elsewhere = [tp for tp in target if tp in owner and owner[tp] is not active]
    # While another member still holds some, the active gains nothing this round.
    given = [tp for tp in target if owner.get(tp) is active] if held_elsewhere else target
    kept = set(given)
    withheld = tuple(tp for tp in target if tp not in kept)
    return GroupAssignment(
        active=active.member_id,
        partitions={m.member_id: tuple(given) if m is active else () for m in members},
        superseded=superseded,
        withheld=withheld,
        unassigned_topics=tuple(sorted(subscribed - active.topics)),
    )


def _by_topic(partitions: Iterable[PartitionId]) -> list[tuple[str, list[int]]]:
    grouped: defaultdict[str, list[int]] = defaultdict(list)
    for topic, partition in partitions:
        grouped[topic].append(partition)
    return [(topic, sorted(grouped[topic])) for topic in sorted(grouped)]


def member_from_join(member: Any) -> Member:
    """A JoinGroup response member (metadata already decoded) as a :class:`Member`."""
    metadata = member.metadata
    owned = frozenset(
        (tp.topic, partition)
        for tp in getattr(metadata, "owned_partitions", None) or ()
        for partition in tp.partitions
    )
    generation = getattr(metadata, "generation_id", None)
    return Member(
        member_id=member.member_id,
        topics=frozenset(metadata.topics),
        owned=owned,
        generation=NO_GENERATION if generation is None else generation,
        instance_id=getattr(member, "group_instance_id", None),
    )


class SingleActiveAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """kafka-python's side of :func:`assign_single_active`.

    One instance per consumer, passed in ``partition_assignment_strategy``
    and bound to its consumer with :meth:`bind`: a member must report what it
    owns *now* (after a lost generation, nothing), not what it was last
    assigned, or its stale claim could outlive the loss.

    After each rebalance (on kafka's IO thread, before the rebalance
    listener runs) :attr:`generation`, :attr:`active_member` and
    :attr:`superseded` describe the group's decision for this member.
    """

    name = "rfmcube-single-active"
    version = SUBSCRIPTION_VERSION

    def __init__(self) -> None:
        self._owned: Callable[[], Iterable[Any]] | None = None
        self._claim_generation = NO_GENERATION
        self.generation = NO_GENERATION
        self.active_member: str | None = None
        self.superseded = False

    def bind(self, owned: Callable[[], Iterable[Any]]) -> None:
        """``owned()`` returns the consumer's TopicPartitions (``consumer.assignment``)."""
        self._owned = owned

    def supported_protocols(self) -> list[RebalanceProtocol]:
        return [RebalanceProtocol.COOPERATIVE]

    def metadata(self, topics: Iterable[str]) -> Any:
        if self._owned is None:
            raise RuntimeError("SingleActiveAssignor.bind(consumer.assignment) was not called")
        owned = [(tp.topic, tp.partition) for tp in self._owned() or ()]
        owned_by_topic = [
            ConsumerProtocolSubscription.TopicPartition(topic=topic, partitions=parts)
            for topic, parts in _by_topic(owned)
        ]
        return ConsumerProtocolSubscription(
            version=self.version,
            topics=sorted(topics),
            user_data=b"",
            owned_partitions=owned_by_topic,
            generation_id=self._claim_generation if owned else NO_GENERATION,
        )

    def assign(self, cluster: Any, members: Sequence[Any]) -> dict[str, Any]:
        group = [member_from_join(m) for m in members]
        topics = frozenset[str]().union(*(m.topics for m in group))
        partitions: dict[str, Iterable[int]] = {}
        for topic in sorted(topics):
            known = cluster.partitions_for_topic(topic)
            if known is None:
                log.warning("no partition metadata for topic %s: left out this round", topic)
            else:
                partitions[topic] = known
        decision = assign_single_active(group, partitions)
        if decision.unassigned_topics:
            log.warning(
                "no member subscribes to every topic; %s stay unassigned with %s active",
                ", ".join(decision.unassigned_topics),
                decision.active,
            )
        log.info(
            "single-active assignment: %s active over %d partitions (%d withheld until revoked), "
            "%d standby",
            decision.active,
            len(decision.partitions.get(decision.active or "", ())),
            len(decision.withheld),
            len(group) - 1,
        )
        return {
            member_id: ConsumerProtocolAssignment(
                version=ASSIGNMENT_VERSION,
                assigned_partitions=_by_topic(given),
                user_data=json.dumps(
                    {"active": decision.active, "superseded": member_id in decision.superseded}
                ).encode(),
            )
            for member_id, given in decision.partitions.items()
        }

    def on_assignment(self, assignment: Any, generation: int) -> None:
        self.generation = generation
        if assignment.partitions():
            self._claim_generation = generation
        try:
            note = json.loads(assignment.user_data or b"{}")
        except ValueError:
            note = {}
        self.active_member = note.get("active")
        self.superseded = bool(note.get("superseded"))
        if not assignment.partitions():
            log.info("standing by: %s is active (generation %d)", self.active_member, generation)


def lease_clock() -> float:
    """Seconds on a clock that keeps counting while the machine is suspended
    (``CLOCK_BOOTTIME``; the monotonic clock stands still then): a lease must run
    out during a suspension as the broker's session does. One clock for every
    process of the machine (the consumer's process and the service's)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class HeartbeatLease:
    """Until when this member may act as the owner of its partitions.

    Anchored on the *send* time of the last heartbeat the coordinator
    acknowledged (a REBALANCE_IN_PROGRESS answer counts: the broker still
    knew the member and renewed its session). Never anchored on a join, a
    coordinator lookup or anything else the broker does not count as a
    heartbeat, so the deadline errs early. A new member has no lease until
    its first acknowledged heartbeat, which it sends 100 ms after its join
    completes (kafka-python would wait one ``heartbeat_interval_ms``).

    Void the moment kafka-python drops its generation (the broker answered
    UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION to a heartbeat or a commit, or
    the member left the group after ``max_poll_interval_ms``): until then
    a heartbeat sent earlier cannot renew it.
    """

    def __init__(self, session_timeout_ms: int, clock: Callable[[], float] | None = None) -> None:
        self._session = session_timeout_ms / 1000
        self._clock = clock or lease_clock
        self._sent_at: float | None = None  # the heartbeat in flight, on the lease's clock
        self._lock = threading.Lock()
        self._anchor: float | None = None
        self._voided_at = float("-inf")

    def renew(self, sent_at: float) -> None:
        """A heartbeat sent at ``sent_at`` (on the lease's clock) was acknowledged."""
        with self._lock:
            if sent_at < self._voided_at:
                return
            if self._anchor is None or sent_at > self._anchor:
                self._anchor = sent_at

    def void(self) -> None:
        """The member is no longer the one the broker knew."""
        with self._lock:
            self._anchor = None
            self._voided_at = self._clock()

    def valid_until(self) -> float | None:
        """The deadline on the lease's clock, None while there is no lease."""
        with self._lock:
            return None if self._anchor is None else self._anchor + self._session

    def valid(self) -> bool:
        until = self.valid_until()
        return until is not None and self._clock() < until

    def attach(self, consumer: Any) -> None:
        """Follow ``consumer``'s heartbeats and generation (kafka-python 3.0 internals,
        checked here rather than failing on the first heartbeat).

        kafka-python runs one heartbeat at a time and stamps ``last_send``
        before sending it, so ``last_send`` at acknowledgement is that
        heartbeat's send time; every loss of membership goes through
        ``reset_generation``. kafka-python stamps it on its monotonic clock,
        which stands still while the machine is suspended: the lease stamps
        the same moment on its own clock (``sent_heartbeat``). A completed join
        enables heartbeats (``_enable_heartbeat``); the first one is then sent
        after ``retry_backoff_ms``."""
        try:
            coordinator = consumer._coordinator
            heartbeat = coordinator.heartbeat
            acknowledge = heartbeat.received_heartbeat
            stamp = heartbeat.sent_heartbeat
            reset_generation = coordinator.reset_generation
            enable_heartbeat = coordinator._enable_heartbeat
            heartbeat.last_send  # noqa: B018
            heartbeat.heartbeat_failed  # noqa: B018
        except AttributeError as exc:
            raise RuntimeError(
                "this kafka-python has no coordinator.heartbeat or reset_generation; "
                "the single-active lease cannot follow the group membership"
            ) from exc

        def sent() -> None:
            stamp()
            self._sent_at = self._clock()

        def acknowledged() -> None:
            if self._sent_at is not None:
                self.renew(self._sent_at)
            acknowledge()

        def reset(*args: Any, **kwargs: Any) -> Any:
            self.void()
            return reset_generation(*args, **kwargs)

        def enable_soon() -> None:
            # After a join kafka-python waits a whole interval before the first
            # heartbeat, and a new member's lease starts with its acknowledgement.
            # Its "retry soon" state sends it after retry_backoff_ms (100 ms) instead,
            # so a new active need not wait 3 s to send; sending it resets the state.
            enable_heartbeat()
            heartbeat.heartbeat_failed = True

        heartbeat.sent_heartbeat = sent
        heartbeat.received_heartbeat = acknowledged
        coordinator.reset_generation = reset
        coordinator._enable_heartbeat = enable_soon
