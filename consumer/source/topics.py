"""What the cluster says about the service's topics: whether they exist, and whether
they keep every record (``rfmcube-cdc check-config --connect``).

The store is a cache of the topics: a lost store is rebuilt by reading them
from their beginning (:mod:`consumer.recovery.restore`). That holds only while
Kafka keeps every record that still matters: a compacted topic keeps the last
record of every key, a topic with unlimited retention keeps them all; a topic
whose retention deletes old records (Kafka's default: 7 days) does not.

The admin client connects with the consumer's own security settings
(``kafka.extra``), so a check that passes here is the connection the service
makes. kafka-python says why a broker could not be reached only in its log:
the last reason is kept and given with the failure.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaError

from consumer.errors import BrokerUnavailable

__all__ = ["Cluster", "TopicInfo", "open_cluster"]

_CHECK_TIMEOUT_MS = 10_000
_RETENTION_KEYS = ("cleanup.policy", "retention.ms", "retention.bytes")
_BOOTSTRAP_FAILED = re.compile(r"Bootstrap connection to \S+ failed: (.*?)(?: \(backoff [^)]*\))?$")


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as the cluster describes it."""

    name: str
    partitions: int
    cleanup_policy: str  # "delete", "compact" or "compact,delete"
    retention_ms: int  # -1: unlimited
    retention_bytes: int  # -1: unlimited

    @property
    def compacted(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def keeps_every_key(self) -> bool:
        """Whether the last record of every key stays: compaction alone, or no deletion
        by time or size."""
        if "delete" not in self.cleanup_policy:
            return True
        return self.retention_ms == -1 and self.retention_bytes == -1


class _LastReason(logging.Handler):
    """kafka-python's own words for why a bootstrap connection failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reason: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        found = _BOOTSTRAP_FAILED.match(record.getMessage())
        if found:
            self.reason = found[1]


@contextmanager
def _quiet_kafka() -> Iterator[_LastReason]:
    """kafka-python's log kept out of the command's output, its last reason kept."""
    logger = logging.getLogger("kafka")
    handler = _LastReason()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class Cluster:
    """An admin connection to the cluster with the service's security settings."""

    def __init__(self, admin: Any) -> None:
        self._admin = admin

    def brokers(self) -> int:
        return len(self._admin.describe_cluster().get("brokers", []))

    def existing(self, names: Sequence[str]) -> set[str]:
        listed = set(self._admin.list_topics())
        return {name for name in names if name in listed}

    def describe(self, names: Sequence[str]) -> dict[str, TopicInfo]:
        """Topics that exist, with their partitions and retention."""
        if not names:
            return {}
        partitions = {
            t["name"]: len(t.get("partitions") or [])
            for t in self._admin.describe_topics(list(names))
            if not t.get("error_code")
        }
        found = self._admin.describe_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, name, configs=dict.fromkeys(_RETENTION_KEYS)
                )
                for name in partitions
            ],
            config_filter="all",
        )
        topics = {}
        for name, configs in found.get("topic", {}).items():
            values = {key: str(entry.get("value")) for key, entry in configs.items()}
            topics[name] = TopicInfo(
                name,
                partitions[name],
                values.get("cleanup.policy", "delete"),
                int(values.get("retention.ms", "604800000")),
                int(values.get("retention.bytes", "-1")),
            )
        return topics

    def close(self) -> None:
        self._admin.close()


@contextmanager
def open_cluster(
    bootstrap_servers: str, client_id: str, extra: Mapping[str, Any]
) -> Iterator[Cluster]:
    """Connect as the service would; BrokerUnavailable says why it could not."""
    allowed = set(KafkaAdminClient.DEFAULT_CONFIG)
    config = {
        "bootstrap_timeout_ms": _CHECK_TIMEOUT_MS,
        "request_timeout_ms": _CHECK_TIMEOUT_MS,
        **{key: value for key, value in extra.items() if key in allowed},
        "bootstrap_servers": bootstrap_servers,
        "client_id": f"{client_id}-check",
    }
    with _quiet_kafka() as last:
        try:
            admin = KafkaAdminClient(**config)
        except KafkaError as exc:
            why = last.reason or str(exc)
            raise BrokerUnavailable(f"no broker answered at {bootstrap_servers} ({why})") from exc
        cluster = Cluster(admin)
        try:
            yield cluster
        except KafkaError as exc:
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            cluster.close()
