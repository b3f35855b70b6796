"""What the processes of one pytest run share when it runs on several xdist workers
(``make test`` runs ``-n 2``): the services of ``scripts/`` and the turns of the tests.

A run has a folder that all its processes know (tests/conftest.py makes it and hands
it to the workers). In it:

- :meth:`SharedServices.use` starts a service of ``scripts/`` (kafka, registry,
  postgres, mariadb, connect) once per run, whichever worker needs it first, under
  a lock, and notes it when this run started it; :meth:`SharedServices.stop_started`,
  called by the process that ran the session once every worker has ended, stops
  what the run started. A service that ran before the run is left running.
- :func:`turn`: a test runs beside the other workers' tests, or alone, with none
  of theirs beside it (the tests that stop or freeze the shared broker, or that
  bound how long something takes). A test waiting to run alone goes before those
  that ask after it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from testkit.e2e.scripts import REPO

__all__ = ["SERVICES", "SharedServices", "turn"]

T = TypeVar("T")

# The services of scripts/ the tests start, in the order a run stops them: Connect and
# the registry before the broker they use.
SERVICES = ("connect", "registry", "postgres", "mariadb", "kafka")


@contextmanager
def _locked(path: Path, how: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def running(name: str) -> bool:
    """``scripts/<name> status``: whether the service runs and answers."""
    status = subprocess.run([str(REPO / "scripts" / name), "status"], capture_output=True)
    return status.returncode == 0


class SharedServices:
    """The services of ``scripts/`` for one run, started at most once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def use(self, name: str, start: Callable[[], T]) -> T:
        """``start()`` (``scripts/<name> start``, which reuses a running service and
        says where it is) with no other process of this run starting it meanwhile;
        when the service was not running before, this run stops it at its end."""
        assert name in SERVICES, name
        with _locked(self.folder / f"{name}.lock", fcntl.LOCK_EX):
            before = running(name)
            found = start()
            if not before:
                (self.folder / f"{name}.started").touch()
        return found

    def started(self) -> list[str]:
        return [name for name in SERVICES if (self.folder / f"{name}.started").exists()]

    def stop_started(self) -> None:
        """Stops what this run started, Connect first and the broker last."""
        for name in self.started():
            subprocess.run([str(REPO / "scripts" / name), "stop"], check=False, capture_output=True)
            (self.folder / f"{name}.started").unlink()


@contextmanager
def turn(folder: Path, *, alone: bool) -> Iterator[None]:
    """A test's turn among the run's workers: beside the others' tests (a shared
    lock), or alone (an exclusive one). Every test passes a turnstile first, held by
    a test waiting to run alone, so that it is not starved by tests that follow."""
    fd = os.open(folder / "tests.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with _locked(folder / "turnstile.lock", fcntl.LOCK_EX):
            fcntl.flock(fd, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
