"""Watching a running service from outside, for the benches of large runs.

- :class:`~testkit.probe.HealthProbe` asks ``/healthz`` on a thread of its own
  (shared with the tests).
- :class:`ProcessTree` samples the service and its child processes (its Kafka
  consumer, its planning workers) from ``/proc`` twice a second: each one's
  CPU and peak RSS (``VmHWM``) as last seen, so that children that end before
  the service still count.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.pipeline import cpu_seconds, status_kib
from testkit.probe import HealthProbe
from testkit.workbench import descendants

__all__ = ["HealthProbe", "ProcessTree", "Seen"]


@dataclass
class Seen:
    """One process as last sampled."""

    name: str
    cpu: float = 0.0
    hwm_kib: int = 0


class ProcessTree:
    """The service's process and its descendants, sampled while it runs."""

    def __init__(self, pid: int, every: float = 0.5, others: dict[str, int] | None = None) -> None:
        self._pid = pid
        self._every = every
        self._others = others or {}  # processes outside the tree, by name: the emulator
        self._stop = threading.Event()
        self.seen: dict[int, Seen] = {}
        # (monotonic time, CPU seconds so far by role): the run's CPU over time.
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._cpu_at_start: dict[int, float] = {}
        self._consumer_seen = False  # the service's first spawned child: its Kafka consumer
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessTree:
        self._sample()
        self._cpu_at_start = {pid: seen.cpu for pid, seen in self.seen.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def _sample(self) -> None:
        for pid in [self._pid, *descendants(self._pid)]:
            with contextlib.suppress(OSError, StopIteration, ValueError):
                seen = self.seen.get(pid)
                if seen is None:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    name = "service" if pid == self._pid else _role(command.decode())
                    if name == "child" and not self._consumer_seen:
                        name, self._consumer_seen = "Kafka consumer process", True
                    elif name == "child":
                        name = "planning worker"
                    seen = self.seen[pid] = Seen(name)
                seen.cpu = cpu_seconds(pid)
                seen.hwm_kib = status_kib(pid, "VmHWM")
        by_role: dict[str, float] = {}
        for seen in self.seen.values():
            by_role[seen.name] = by_role.get(seen.name, 0.0) + seen.cpu
        for name, pid in self._others.items():
            with contextlib.suppress(OSError, ValueError):
                by_role[name] = cpu_seconds(pid)
        self.samples.append((time.monotonic(), by_role))

    def cpu(self, pid: int) -> float:
        """CPU seconds since the tree was first sampled."""
        return self.seen[pid].cpu - self._cpu_at_start.get(pid, 0.0)

    def lines(self) -> list[str]:
        """One line per process: its role, CPU during the run, peak RSS."""
        return [
            f"{seen.name} (pid {pid}): CPU {self.cpu(pid):.1f} s, peak RSS"
            f" {seen.hwm_kib / 1024:.0f} MiB"
            for pid, seen in self.seen.items()
        ]

    def timeline(self, step: float = 1.0) -> list[str]:
        """The CPU of each role (the planning workers together) over each ``step``
        seconds of the run, in % of one core: which part waits for which."""
        if len(self.samples) < 2:
            return []
        start = self.samples[0][0]
        roles = sorted(
            {role for _, cpu in self.samples for role in cpu if role != "resource tracker"},
            key=_role_order,
        )
        lines = ["    " + f"{'s':>5}" + "".join(f"{_LABELS.get(r, r)[:10]:>11}" for r in roles)]
        last_at, last = self.samples[0]
        final = len(self.samples) - 1
        for i, (at, cpu) in enumerate(self.samples[1:], 1):
            if at - last_at < step - self._every / 2 and i < final:
                continue
            spent = (at - last_at) / 100
            shares = "".join(
                f"{(cpu.get(role, 0.0) - last.get(role, cpu.get(role, 0.0))) / spent:10.0f}%"
                for role in roles
            )
            lines.append(f"    {at - start:5.1f}{shares}")
            last_at, last = at, cpu
        return lines

    @property
    def service_hwm_kib(self) -> int:
        return self.seen[self._pid].hwm_kib

    def children_hwm_kib(self) -> int:
        return sum(s.hwm_kib for pid, s in self.seen.items() if pid != self._pid)


_LABELS = {"planning worker": "workers", "Kafka consumer process": "consumer"}


def _role_order(role: str) -> tuple[int, str]:
    order = ["service", "planning worker", "Kafka consumer process", "emulator"]
    return (order.index(role) if role in order else len(order), role)


def _role(command: str) -> str:
    if "resource_tracker" in command:
        return "resource tracker"
    if "spawn_main" in command:
        # The service spawns its consumer's process at start-up, its planning workers
        # for the first large flush.
        return "child"
    return command[:60]
