"""The schema registry of scripts/registry (Apicurio, in memory), once per run."""

from __future__ import annotations

import pytest

from testkit.e2e.registry import start_registry
from testkit.shared import SharedServices


@pytest.fixture(scope="session")
def schema_registry(shared_services: SharedServices) -> str:
    """Its Confluent-compatible base URL; started if needed, stopped at the end of the
    run if the run started it."""
    return shared_services.use("registry", start_registry)
