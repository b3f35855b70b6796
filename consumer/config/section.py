"""The base every section of the configuration builds on: an unknown key is refused,
a value never changes once validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    # Every key's description is its line in the configuration reference
    # (docs/configuration.md and README.md's sample, made by consumer/cli/reference.py).
    model_config = ConfigDict(extra="forbid", frozen=True)
