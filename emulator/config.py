"""The emulator's settings: the limits it enforces and the faults it injects."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# The settings a test may change at run time through ``POST /_emulator/reset``.
RESETTABLE = (
    "requests_per_minute",
    "window_seconds",
    "max_request_bytes",
    "wrong_platform",
    "fail_rate",
    "latency_ms",
    "process_delay_ms",
    "process_fail_rate",
    "seed",
    "outage",
    "refused_orders",
)


class ConfigChangeError(ValueError):
    """A run-time change that names an unknown setting or has a bad value."""


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything the emulator needs; the API key never appears in the repr."""

    api_key: str = field(repr=False)
    requests_per_minute: int = 60
    window_seconds: float = 60.0
    max_request_bytes: int = 200_000_000
    wrong_platform: bool = False
    fail_rate: float = 0.0
    latency_ms: int = 0
    process_delay_ms: int = 200
    process_fail_rate: float = 0.0
    seed: int | None = None
    # An outage: every /v1 connection is dropped without an answer (the state is kept).
    outage: bool = False
    # Orders (by id) the API refuses with 400, as it refuses content it finds wrong.
    refused_orders: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if self.requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1")
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if self.max_request_bytes < 1:
            raise ValueError("max_request_bytes must be at least 1")
        for name in ("fail_rate", "process_fail_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency_ms", "process_delay_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def with_changes(self, changes: Mapping[str, Any]) -> EmulatorConfig:
        """A copy with ``changes`` applied; raises :class:`ConfigChangeError`."""
        unknown = sorted(set(changes) - set(RESETTABLE))
        if unknown:
            raise ConfigChangeError(f"unknown settings: {', '.join(unknown)}")
        typed: dict[str, Any] = {}
        for name, value in changes.items():
            typed[name] = _coerce(name, value)
        try:
            return dataclasses.replace(self, **typed)
        except ValueError as exc:
            raise ConfigChangeError(str(exc)) from exc


def _coerce(name: str, value: Any) -> Any:
    """Checks a JSON value against the setting's type (JSON numbers may be exact decimals)."""
    if name in ("wrong_platform", "outage"):
        if not isinstance(value, bool):
            raise ConfigChangeError(f"{name} must be a boolean")
        return value
    if name == "seed" and value is None:
        return None
    if name == "refused_orders":
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            raise ConfigChangeError(f"{name} must be a list of order ids")
        return frozenset(str(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ConfigChangeError(f"{name} must be a number")
    if name in ("fail_rate", "process_fail_rate", "window_seconds"):
        return float(value)
    if int(value) != value:
        raise ConfigChangeError(f"{name} must be an integer")
    return int(value)
