"""Where the Kafka consumer runs: a thread of the service, or a process of its own.

kafka-python parses fetches in Python, under the same GIL as the service's
work; a child process gives it a core of its own, which pays from 1.5 CPUs
(``kafka.consumer_process: auto``), counted by :mod:`consumer.cpus`.
"""

from __future__ import annotations

import logging
from typing import Literal

from consumer.cpus import available_cpus
from consumer.source.base import OnLost, OnRevoke, Source, SourceSettings
from consumer.source.process import ProcessSource
from consumer.source.thread import KafkaSource

__all__ = ["place_source"]

log = logging.getLogger(__name__)

# The consumer process costs CPU of its own (the pipe): it pays from 1.5 CPUs on.
MIN_CPUS_FOR_CONSUMER_PROCESS = 1.5


def place_source(
    settings: SourceSettings,
    placement: bool | Literal["auto"],
    *,
    on_revoke: OnRevoke,
    on_lost: OnLost,
    log_format: str,
) -> Source:
    """The source, in a child process or in a thread as ``placement`` says
    (``kafka.consumer_process``); a child is spawned at once, so that its imports
    overlap the service's start-up (it joins the group at ``start()``)."""
    own_process = placement
    if own_process == "auto":
        cpus = available_cpus()
        own_process = cpus >= MIN_CPUS_FOR_CONSUMER_PROCESS
        log.info(
            "kafka.consumer_process auto: %.1f CPUs available, so the Kafka consumer runs in %s",
            cpus,
            "a process of its own" if own_process else "a thread",
        )
    if not own_process:
        return KafkaSource(settings, on_revoke=on_revoke, on_lost=on_lost)
    source = ProcessSource(settings, on_revoke=on_revoke, on_lost=on_lost, log_format=log_format)
    source.spawn()
    return source
