"""``rfmcube-cdc check-config --connect``: what a first run needs, checked before it.

After the configuration and the mapping (which ``check-config`` alone checks
offline), this reaches what the service will reach, as the service would:

1. the Kafka cluster, with ``kafka.extra``'s security settings;
2. every mapped topic: it exists, and its retention lets a lost store be
   rebuilt from it (compacted, or nothing deleted by time or size);
3. the dead-letter topic: it exists and is not compacted;
4. the Rfmcube API: one request (a process look-up, which changes nothing)
   says whether the key is accepted;
5. the schema registry, where one is configured (:func:`_schema_registry`).

Every check is printed, passed or not, and each failure says what to change.
The exit code is that of the first failure (:data:`EXIT_RETENTION` is this
command's own; the others mean what they mean for ``run``): README.md,
"Checking before a first run".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from consumer.changes.mapping import Mapping
from consumer.config import Settings
from consumer.delivery.http.client import RfmcubeClient
from consumer.delivery.http.ratelimit import RateLimiter
from consumer.delivery.stack import api_settings
from consumer.errors import (
    EXIT_API_REFUSED,
    EXIT_DEAD_LETTERS,
    EXIT_KAFKA,
    EXIT_OK,
    ApiFatal,
    ApiRejected,
    ApiTooLarge,
    BrokerUnavailable,
    RegistryUnavailable,
)
from consumer.registry.client import RegistryClient, SchemaNotFound
from consumer.source.topics import Cluster, TopicInfo, open_cluster
from schemas.entities import Kind

__all__ = ["EXIT_RETENTION", "Check", "connect_checks"]

# A mapped topic deletes records a rebuilt store would need: the service runs, but a
# lost store (a new volume) could not be rebuilt whole from the topics.
EXIT_RETENTION = 8

# A process that cannot exist: the API answers 404 once it accepted the key.
PROBE_PROCESS = "0"
# A schema id no registry gives out (they start at 1): "not found" means it answered.
PROBE_SCHEMA_ID = 0
_ENTITY = {Kind.CUSTOMER: "customers", Kind.ORDER: "orders", Kind.ITEM: "items"}


@dataclass(frozen=True, slots=True)
class Check:
    """One thing checked: what, whether it passed, what was found or what to change."""

    what: str
    ok: bool
    says: str
    exit_code: int = EXIT_OK

    def line(self) -> str:
        return f"  {'ok  ' if self.ok else 'FAIL'}  {self.what}: {self.says}"


def connect_checks(settings: Settings, mapping: Mapping, out: IO[str]) -> int:
    """Run every check, print each, and return the exit code of the first failure."""
    checks: list[Check] = []

    def report(check: Check) -> None:
        checks.append(check)
        print(check.line(), file=out, flush=True)

    print("checking what the configuration reaches:", file=out)
    _kafka_checks(settings, mapping, report)
    report(_api_check(settings))
    registry = _schema_registry(settings)
    if registry is not None:
        report(registry)
    failed = [c for c in checks if not c.ok]
    if not failed:
        print("everything a first run needs is there", file=out)
        return EXIT_OK
    print(f"{len(failed)} of {len(checks)} checks failed", file=out)
    return failed[0].exit_code


# -- Kafka --------------------------------------------------------------------------


def _kafka_checks(settings: Settings, mapping: Mapping, report: Callable[[Check], None]) -> None:
    kafka = settings.kafka
    protocol = kafka.extra.get("security_protocol", "PLAINTEXT")
    try:
        with open_cluster(kafka.bootstrap_servers, kafka.client_id, kafka.extra) as cluster:
            count = cluster.brokers()
            brokers = f"{count} broker{'' if count == 1 else 's'}"
            report(
                Check(
                    "Kafka",
                    True,
                    f"{brokers} answered at {kafka.bootstrap_servers} ({protocol})",
                )
            )
            _topic_checks(settings, mapping, cluster, report)
    except BrokerUnavailable as exc:
        report(
            Check(
                "Kafka",
                False,
                f"{exc}: check kafka.bootstrap_servers, the network, and kafka.extra's"
                f" security settings (security_protocol {protocol}, sasl_*, ssl_*); the"
                " topics were not checked",
                EXIT_KAFKA,
            )
        )


def _topic_checks(
    settings: Settings, mapping: Mapping, cluster: Cluster, report: Callable[[Check], None]
) -> None:
    topics = mapping.topics()
    letters = settings.kafka.dead_letter_topic
    existing = cluster.existing([*topics, letters])
    described = cluster.describe(sorted(existing))
    for topic in topics:
        kind = mapping.kind_of(topic)
        entity = _ENTITY.get(kind) if kind is not None else None
        if topic not in described:
            report(
                Check(
                    f"topic {topic}",
                    False,
                    "does not exist (or this user may not describe it): check the name in"
                    f" the mapping (entities.{entity}.topic) against Debezium's topic.prefix,"
                    " and that the connector runs",
                    EXIT_KAFKA,
                )
            )
        else:
            report(_retention_check(described[topic]))
    if letters not in described:
        report(
            Check(
                f"dead-letter topic {letters}",
                False,
                "does not exist: create it with cleanup.policy=delete (kafka.dead_letter_topic"
                " names it)",
                EXIT_DEAD_LETTERS,
            )
        )
    elif described[letters].compacted:
        report(
            Check(
                f"dead-letter topic {letters}",
                False,
                f"cleanup.policy={described[letters].cleanup_policy}: a compacted topic refuses"
                " a dead letter without a key and drops letters of the same key; set"
                " cleanup.policy=delete",
                EXIT_DEAD_LETTERS,
            )
        )
    else:
        info = described[letters]
        report(
            Check(
                f"dead-letter topic {letters}",
                True,
                f"{info.partitions} partitions, cleanup.policy={info.cleanup_policy}, letters"
                f" kept {_duration(info.retention_ms)} (write access shows with the first)",
            )
        )


def _retention_check(info: TopicInfo) -> Check:
    what = f"topic {info.name}"
    policy = f"cleanup.policy={info.cleanup_policy}"
    if info.keeps_every_key:
        kept = "compacted" if "delete" not in info.cleanup_policy else "nothing deleted"
        return Check(
            what,
            True,
            f"{info.partitions} partitions, {policy} ({kept}): a lost store can be rebuilt from it",
        )
    limits = []
    if info.retention_ms != -1:
        limits.append(f"retention.ms={info.retention_ms} ({_duration(info.retention_ms)})")
    if info.retention_bytes != -1:
        limits.append(f"retention.bytes={info.retention_bytes}")
    return Check(
        what,
        False,
        f"{policy}, {', '.join(limits)}: Kafka deletes older records, so a lost store could"
        " not be rebuilt whole from it. Set cleanup.policy=compact (Debezium keys every"
        " record by its row), or retention.ms=-1 and retention.bytes=-1:"
        f" kafka-configs.sh --alter --entity-type topics --entity-name {info.name}"
        " --add-config cleanup.policy=compact",
        EXIT_RETENTION,
    )


def _duration(ms: int) -> str:
    if ms == -1:
        return "forever"
    for unit, size in (("days", 86_400_000), ("hours", 3_600_000), ("minutes", 60_000)):
        if ms >= size:
            return f"{ms / size:g} {unit}"
    return f"{ms} ms"


# -- the API ------------------------------------------------------------------------


def _api_check(settings: Settings) -> Check:
    """One look-up of a process that does not exist: 404 once the key is accepted."""
    api = settings.api
    what = f"Rfmcube API {api.base_url}"
    answers: list[int | None] = []
    try:
        asyncio.run(_probe(settings, answers.append))
    except (ApiRejected, ApiTooLarge):
        pass  # it answered about the process: the key and the platform are accepted
    except ApiFatal as exc:
        return Check(what, False, str(exc), EXIT_API_REFUSED)
    except TimeoutError:
        last = answers[-1] if answers else None
        if last == 429:
            # Rate limits come after the key is checked: the budget is in use (a
            # running service), the key was not refused.
            return Check(what, True, "the key is not refused (429: its budget is in use now)")
        got = "no answer" if last is None else f"the last answer was {last}"
        return Check(
            what,
            False,
            f"not reached within api.timeout_seconds ({api.timeout_seconds:g} s; {got}):"
            " check api.base_url, DNS, and any proxy or firewall between here and the API",
            EXIT_API_REFUSED,
        )
    return Check(what, True, "the key is accepted (one request, a process look-up)")


async def _probe(settings: Settings, status: Callable[[int | None], None]) -> None:
    api = settings.api
    limiter = RateLimiter(1, settings.pacing.window_seconds)
    async with RfmcubeClient(
        api_settings(settings),
        limiter,
        on_attempt=lambda attempt: status(attempt.status),
    ) as client:
        # Retried as the service retries (a 5xx, no answer), within one request's time.
        await asyncio.wait_for(client.process(PROBE_PROCESS), api.timeout_seconds)


# -- the schema registry --------------------------------------------------------------


def _schema_registry(settings: Settings) -> Check | None:
    """The schema registry's check, where ``kafka.schema_registry.url`` is set: one
    request for a schema id no writer uses (0), with the configured credentials
    and CA. "Not found" is the answer of a registry that accepted us; anything
    else (no answer, a refusal of the credentials, a URL that is not a registry's
    API) fails with what to change, and EXIT_KAFKA: the service would pause
    reading at its first Avro record."""
    config = settings.kafka.schema_registry
    if config.url is None:
        return None
    what = f"schema registry {config.url}"
    try:
        RegistryClient(config).fetch(PROBE_SCHEMA_ID)
    except SchemaNotFound:
        return Check(what, True, "answers, and accepts the credentials")
    except RegistryUnavailable as exc:
        return Check(what, False, str(exc), EXIT_KAFKA)
    return Check(what, True, "answers, and accepts the credentials")
