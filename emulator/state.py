"""One running emulator: its settings, account, rate window, processes and request log."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.config import EmulatorConfig
from emulator.limits import SlidingWindow
from emulator.processes import ProcessRegistry
from emulator.store import Store
from emulator.validate import ImportRequest

# Calls as the request log names them.
CALLS = ("import", "merge_customer", "merge_order", "delete_customer", "processes")


def classify_call(path: str) -> str:
    """``/v1/merge_order`` → ``merge_order``; ``/v1/processes/7`` → ``processes``."""
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "v1" and parts[1] in CALLS:
        return parts[1]
    return "other"


@dataclass(slots=True)
class Touched:
    """What an accepted request touched, for the request log."""

    customers: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    process_id: int | None = None


class Emulator:
    """The mutable heart of the app; ``reset`` brings it back to its start-up settings."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.initial = config
        self.config = config
        self.store = Store()
        self.processes = ProcessRegistry(self._apply_import)
        self.requests: list[dict[str, Any]] = []
        self.window = SlidingWindow(config.requests_per_minute, config.window_seconds)
        self.fault_rng = random.Random(config.seed)
        self.process_rng = random.Random(config.seed)

    def reset(self, changes: Mapping[str, Any]) -> None:
        """Clears the account, processes, log and rate window; applies ``changes`` to the
        start-up settings (raises ConfigChangeError on a bad change, changing nothing)."""
        config = self.initial.with_changes(changes)
        self.config = config
        self.store.clear()
        self.processes.clear()
        self.requests.clear()
        self.window = SlidingWindow(config.requests_per_minute, config.window_seconds)
        self.fault_rng = random.Random(config.seed)
        self.process_rng = random.Random(config.seed)

    def change(self, changes: Mapping[str, Any]) -> None:
        """Applies ``changes`` to the current settings, keeping the account, processes,
        log and rate window (raises ConfigChangeError on a bad change, changing nothing)."""
        config = self.config.with_changes(changes)
        if config.requests_per_minute != self.config.requests_per_minute or (
            config.window_seconds != self.config.window_seconds
        ):
            self.window = SlidingWindow(config.requests_per_minute, config.window_seconds)
        self.config = config

    def _apply_import(self, request: ImportRequest) -> None:
        self.store.apply_import(request.customers)
