"""The CPUs this process may use: its affinity capped by its cgroup's quota.

A Kubernetes CPU limit is a CFS quota, not a smaller affinity, so
``os.sched_getaffinity`` still shows every core of the node and the quota has
to be read from the cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``). Where the Kafka consumer runs
(:mod:`consumer.source.placement`) and how many planning workers a large flush
starts (:mod:`consumer.delivery.workers`) both follow it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_cpus", "cgroup_quota"]

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
