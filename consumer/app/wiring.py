"""Wiring: the service's long-lived parts, built from the settings and the mapping.

The one place that knows which part needs which (the composition root); the
parts themselves only know their collaborators' narrow interfaces. What only
exists while the service streams (the source's connection, the HTTP client,
the flusher) is made by :mod:`consumer.app.service` and
:mod:`consumer.delivery.stack`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

from consumer.app.report import Report
from consumer.changes.mapping import Mapping
from consumer.checkpoint import Committer, Revocations
from consumer.config import Settings
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.planner import Planner
from consumer.delivery.privacy import anonymizer_for
from consumer.delivery.resync import Resync
from consumer.errors import StoreUnusable
from consumer.ingest import Ingest, OwedBound
from consumer.ops.metrics import Metrics
from consumer.recovery.follower import Follower
from consumer.recovery.replays import ReplayApplier
from consumer.recovery.restore import Restorer
from consumer.recovery.standby import Role
from consumer.registry import Registry
from consumer.source.base import Source, SourceSettings
from consumer.source.deadletter import DeadLetters
from consumer.source.placement import place_source
from consumer.state.obligations import Obligations
from consumer.state.replays import Replays
from consumer.state.store import StateStore
from schemas.debezium import Position, RawRecord
from schemas.entities import DocRef

__all__ = ["DeadLetterSink", "Parts", "build", "new_source"]

log = logging.getLogger("consumer.app.service")


class DeadLetterSink:
    """Where bad records and rejected documents go; the topic opens at start-up
    (nothing is ingested or sent before)."""

    def __init__(self) -> None:
        self.letters: DeadLetters | None = None

    def record(self, record: RawRecord, reason: str) -> None:
        if self.letters is not None:
            self.letters.send(record, reason)

    def document(self, ref: DocRef, position: Position | None, reason: str, body: bytes) -> None:
        log.warning("dead-lettered %s %s: %s", ref[0].value, ref[1], reason)
        if self.letters is not None:
            where = position if position is not None else Position("", -1, -1)
            self.letters.send_entity(where, f"{ref[0].value}:{ref[1]}".encode(), body, reason)


@dataclass
class Parts:
    store: StateStore
    obligations: Obligations
    limiter: RateLimiter
    dead_letters: DeadLetterSink
    ingest: Ingest
    planner: Planner
    committer: Committer
    revocations: Revocations
    resync: Resync
    restorer: Restorer
    role: Role
    report: Report
    prometheus: Metrics
    owed_bound: OwedBound
    replays: ReplayApplier


def build(
    settings: Settings,
    mapping: Mapping,
    *,
    stopping: asyncio.Event,
    stop_requested: threading.Event,
    active: Callable[[], bool],
    ready: Callable[[], bool],
    wake_flush: Callable[[], None],
) -> Parts:
    try:
        store = StateStore(settings.store.path)
        obligations = Obligations(store)
    except (sqlite3.Error, OSError) as exc:
        raise StoreUnusable(
            f"the store {settings.store.path} cannot be opened ({exc}): check store.path"
            " and that the volume is writable by this user"
        ) from None
    pacing, kafka = settings.pacing, settings.kafka
    limiter = RateLimiter(
        pacing.requests_per_minute,
        pacing.window_seconds,
        # Spread over the window: a burst would leave the rest of it silent.
        spacing=pacing.window_seconds / pacing.requests_per_minute,
    )
    dead_letters = DeadLetterSink()
    ingest = Ingest(
        obligations,
        mapping,
        dead_letter=dead_letters.record,
        limits=settings.limits.record_limits(),
        registry=Registry.from_config(kafka.schema_registry),
    )
    planner = Planner(
        store,
        obligations,
        mark_deleted=mapping.mark_deleted if mapping.order_delete.policy == "mark" else None,
        orphan_wait=settings.store.orphan_order_wait_seconds,
        anonymizer=anonymizer_for(settings, mapping),
    )
    committer = Committer(
        obligations,
        instance=store.instance_id,
        hold_imports=settings.api.acceptance == "completed",
        dead_letters=lambda: dead_letters.letters,
    )
    resync = Resync(store, obligations)
    restorer = Restorer(kafka, mapping, store, ingest, resync, stop_requested=stop_requested)
    follower = Follower(
        ingest,
        obligations,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=kafka.group_id,
        topics=mapping.topics(),
        extra=kafka.extra,
    )
    role = Role(follower, restorer, store, obligations, limiter, committer, stopping)
    report = Report(
        ingest=ingest,
        obligations=obligations,
        committer=committer,
        limiter=limiter,
        restorer=restorer,
        active=active,
    )
    return Parts(
        store=store,
        obligations=obligations,
        limiter=limiter,
        dead_letters=dead_letters,
        ingest=ingest,
        planner=planner,
        committer=committer,
        revocations=Revocations(committer),
        resync=resync,
        restorer=restorer,
        role=role,
        report=report,
        prometheus=Metrics(report),
        owed_bound=OwedBound(obligations, settings.store.max_owed_documents),
        # Replayed dead letters, applied by every instance (consumer/recovery/replays.py).
        replays=ReplayApplier(
            ingest,
            obligations,
            Replays(store, kafka.dead_letter_topic),
            bootstrap_servers=kafka.bootstrap_servers,
            extra=kafka.extra,
            active=active,
            ready=ready,
            dead_letter=dead_letters.record,
            owed=wake_flush,
        ),
    )


def new_source(settings: Settings, mapping: Mapping, parts: Parts) -> Source:
    """The Kafka source, placed as ``kafka.consumer_process`` says."""
    kafka = settings.kafka
    return place_source(
        SourceSettings(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.group_id,
            topics=tuple(mapping.topics()),
            client_id=kafka.client_id,
            max_pending_bytes=kafka.max_pending_bytes,
            extra=kafka.extra,
            commit_metadata=parts.store.instance_id,
        ),
        kafka.consumer_process,
        on_revoke=parts.revocations.on_revoke,
        on_lost=parts.revocations.on_lost,
        log_format=settings.service.log_format,
    )
