"""The schema registry of scripts/registry (Apicurio, in memory), once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.e2e.registry import registry_running, start_registry, stop_registry


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[str]:
    """Its Confluent-compatible base URL; started if needed, stopped if we started it."""
    already = registry_running()
    url = start_registry()
    yield url
    if not already:
        stop_registry()
