"""available_cpus: a pod's CPU limit is a cgroup quota, not a smaller affinity."""

from __future__ import annotations

import os
from pathlib import Path

from consumer.cpus import available_cpus, cgroup_quota


def test_a_v2_quota_is_read_as_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5


def test_no_v2_quota_means_none(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None


def test_a_v1_quota_is_read_as_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) == 0.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert cgroup_quota(tmp_path) is None


def test_without_a_readable_cgroup_the_affinity_counts(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("garbage")
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_the_quota_caps_the_cores(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert available_cpus(tmp_path) == min(1.0, len(os.sched_getaffinity(0)))
