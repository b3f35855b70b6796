"""Where the Kafka consumer runs: a thread of the service, or a process of its own.

kafka-python parses fetches in Python, under the same GIL as the service's
work; a child process gives it a core of its own, which pays from 1.5 CPUs
(``kafka.consumer_process: auto``). The CPUs are the process's affinity capped
by its cgroup's quota: a Kubernetes CPU limit is a CFS quota, not a smaller
affinity, so ``os.sched_getaffinity`` still shows every core of the node and
the quota has to be read from the cgroup (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from consumer.source.base import OnLost, OnRevoke, Source, SourceSettings
from consumer.source.process import ProcessSource
from consumer.source.thread import KafkaSource

__all__ = ["available_cpus", "cgroup_quota", "place_source"]

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


CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> float:
    """The CPUs this process may use (2.0 for two cores, 1.5 for a 1500m limit)."""
    cores = float(len(os.sched_getaffinity(0)))
    quota = cgroup_quota(cgroup_root)
    return cores if quota is None else min(cores, quota)


def cgroup_quota(root: Path) -> float | None:
    """The cgroup's CPU quota in CPUs, None without one (or when it cannot be read)."""
    try:
        v2 = root / "cpu.max"
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu"
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        period_us = int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
