"""What a shop's day written as SQL keeps, whatever the database: the live ids, the
clock, the random draws, and the phases a test interleaves with crashes.

:class:`testkit.e2e.workload.Workload` (PostgreSQL) and
:class:`testkit.e2e.mariadb_workload.MariaDbWorkload` (the MySQL family) write
the SQL of their dialect on top of it."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["ShopDay"]


@dataclass(kw_only=True)
class ShopDay:
    """Remembers live ids only; ids are chosen here, not by the database."""

    seed: int = 11
    clock: datetime = field(default_factory=lambda: datetime(2026, 3, 28, 22, 0, 7, tzinfo=UTC))
    customers: list[int] = field(default_factory=list)
    orders: dict[int, int | None] = field(default_factory=dict)  # order id -> customer id
    items: dict[int, int] = field(default_factory=dict)  # item id -> order id
    transactions: int = 0
    _next: dict[str, int] = field(default_factory=lambda: {"c": 1, "o": 1, "i": 1})

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _new_id(self, kind: str) -> int:
        value = self._next[kind]
        self._next[kind] += 1
        return value

    def _forget_order(self, oid: int) -> None:
        del self.orders[oid]
        for iid in [i for i, owner in self.items.items() if owner == oid]:
            del self.items[iid]

    def phases(self, scale: int = 1) -> list[Callable[[], None]]:
        raise NotImplementedError

    def run_all(self, scale: int = 1) -> None:
        for phase in self.phases(scale):
            phase()
