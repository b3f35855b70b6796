"""A shop's day on MariaDB as SQL transactions, in phases a test can interleave with crashes.

The MySQL family's side of :mod:`testkit.e2e.workload`: deterministic for a
seed, one transaction a step through the ``mariadb`` client. Sessions run at
fixed UTC offsets: TIMESTAMP columns get local literals (MariaDB stores the
instant), DATETIME columns a UTC wall clock (Debezium reads a DATETIME as
UTC). Statuses are an ENUM, newsletter a TINYINT(1), attributes a JSON
column edited with JSON_SET, and items move between orders.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta, timezone
from decimal import Decimal

from testkit.e2e.day import ShopDay
from testkit.e2e.mariadb import MariaDb
from testkit.shop import BRANDS, PROVINCES

OFFSETS = ["+00:00", "-05:00", "+01:00", "+05:30", "+09:00", "-03:00"]
LABELS = {
    "pending": "Pending",
    "paid": "Paid",
    "shipped": "Shipped",
    "delivered": "Delivered",
    "cancelled": "Cancelled",
}
TIERS = ["bronze", "silver", "gold"]


def _text(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _zone(offset: str) -> timezone:
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


@dataclass(kw_only=True)
class MariaDbWorkload(ShopDay):
    """Writes the shop's changes into one MariaDB database; remembers live ids only."""

    db: MariaDb

    # -- SQL pieces --------------------------------------------------------------

    def _tick(self, offset: str) -> tuple[str, str]:
        """The next moment: (a UTC wall clock for DATETIME, local time at ``offset`` for
        TIMESTAMP), with fractions of a second now and then."""
        self.clock += timedelta(
            seconds=self.rng.randint(1, 5000),
            microseconds=self.rng.choice([0, 0, 250_000, 999_999]),
        )
        utc = self.clock.strftime("%Y-%m-%d %H:%M:%S.%f")
        local = self.clock.astimezone(_zone(offset)).strftime("%Y-%m-%d %H:%M:%S.%f")
        return f"'{utc}'", f"'{local}'"

    def _transaction(self, statements: list[str], offset: str = "+00:00") -> None:
        self.db.run(
            "\n".join(
                [f"SET time_zone = '{offset}';", "START TRANSACTION;", *statements, "COMMIT;"]
            )
        )
        self.transactions += 1

    def _attributes(self) -> str:
        document = {"tier": self.rng.choice(TIERS), "tags": ["vip"] * self.rng.randint(0, 2)}
        return _text(json.dumps(document)) if self.rng.random() < 0.8 else "NULL"

    def _recompute(self, order_id: int, offset: str) -> str:
        _, local = self._tick(offset)
        return (
            "UPDATE orders SET amount = (SELECT coalesce(sum(quantity * unit_price), 0)"
            f" FROM order_lines WHERE order_id = {order_id}), updated_at = {local}"
            f" WHERE id = {order_id};"
        )

    # -- shop operations -------------------------------------------------------------

    def sign_up(self) -> int:
        offset, cid = self.rng.choice(OFFSETS), self._new_id("c")
        utc, local = self._tick(offset)
        name = self.rng.choice(["Anna", "Luca", "Sara", "Marco", "José", "D'Amico"])
        self._transaction(
            [
                "INSERT INTO customers (id, email, first_name, last_name, phone, password_hash,"
                " newsletter, attributes, created_at, updated_at) VALUES"
                f" ({cid}, 'customer{cid}@example.com', {_text(name)},"
                f" {_text(self.rng.choice(['Rossi', 'Núñez', 'Verdi', '李']))},"
                f" '+39 02 {cid:07d}', '$argon2id$v=19$secret{cid}',"
                f" {int(self.rng.random() < 0.5)}, {self._attributes()}, {utc}, {local});"
            ],
            offset,
        )
        self.customers.append(cid)
        return cid

    def edit_profile(self, cid: int) -> None:
        offset = self.rng.choice(OFFSETS)
        _, local = self._tick(offset)
        self._transaction(
            [
                f"UPDATE customers SET phone = '+39 06 {self.rng.randint(0, 9_999_999):07d}',"
                f" newsletter = NOT newsletter,"
                f" attributes = JSON_SET(coalesce(attributes, '{{}}'), '$.tier',"
                f" '{self.rng.choice(TIERS)}'), updated_at = {local} WHERE id = {cid};"
            ],
            offset,
        )

    def touch_unmapped(self, cid: int) -> None:
        self._transaction(
            [
                f"UPDATE customers SET password_hash = '$argon2id${self.rng.random()}'"
                f" WHERE id = {cid};"
            ]
        )

    def change_email(self, cid: int) -> None:
        offset = self.rng.choice(OFFSETS)
        _, local = self._tick(offset)
        self._transaction(
            [
                f"UPDATE customers SET email ="
                f" 'renamed{cid}.{self.rng.randint(1, 9999)}@example.com',"
                f" updated_at = {local} WHERE id = {cid};"
            ],
            offset,
        )

    def place_order(self, cid: int | None, items: int = 2, guest: str | None = None) -> int:
        offset, oid = self.rng.choice(OFFSETS), self._new_id("o")
        utc, local = self._tick(offset)
        email = None if cid is not None else guest or f"guest{oid}@example.net"
        statements = [
            "INSERT INTO orders (id, customer_id, customer_email, status, status_label, amount,"
            " currency, delivery_province, created_at, updated_at) VALUES"
            f" ({oid}, {'NULL' if cid is None else cid}, {_text(email)}, 'pending', 'Pending',"
            f" 0, 'EUR', {_text(self.rng.choice(PROVINCES))}, {utc}, {local});"
        ]
        for _ in range(items):
            statements.append(self._item_insert(oid))
        statements.append(self._recompute(oid, offset))
        self._transaction(statements, offset)
        self.orders[oid] = cid
        return oid

    def _item_insert(self, oid: int) -> str:
        iid = self._new_id("i")
        self.items[iid] = oid
        price = Decimal(self.rng.randint(1, 25999)) / 100
        return (
            "INSERT INTO order_lines (id, order_id, product_id, sku, brand, quantity, unit_price)"
            f" VALUES ({iid}, {oid}, {self.rng.randint(40000, 49999)},"
            f" 'SKU-{self.rng.randint(1, 999):03d}', '{self.rng.choice(BRANDS)}',"
            f" {self.rng.randint(1, 3)}, {price});"
        )

    def add_item(self, oid: int) -> None:
        offset = self.rng.choice(OFFSETS)
        self._transaction([self._item_insert(oid), self._recompute(oid, offset)], offset)

    def edit_item(self, iid: int) -> None:
        offset, oid = self.rng.choice(OFFSETS), self.items[iid]
        self._transaction(
            [
                f"UPDATE order_lines SET quantity = quantity + 1,"
                f" unit_price = unit_price + 0.01 WHERE id = {iid};",
                self._recompute(oid, offset),
            ],
            offset,
        )

    def move_item(self, iid: int, oid: int) -> None:
        """The item now belongs to another order; both orders' amounts follow."""
        offset, old = self.rng.choice(OFFSETS), self.items[iid]
        self._transaction(
            [
                f"UPDATE order_lines SET order_id = {oid} WHERE id = {iid};",
                self._recompute(old, offset),
                self._recompute(oid, offset),
            ],
            offset,
        )
        self.items[iid] = oid

    def remove_item(self, iid: int) -> None:
        offset, oid = self.rng.choice(OFFSETS), self.items.pop(iid)
        self._transaction(
            [f"DELETE FROM order_lines WHERE id = {iid};", self._recompute(oid, offset)], offset
        )

    def set_status(self, oid: int, status: str) -> None:
        offset = self.rng.choice(OFFSETS)
        _, local = self._tick(offset)
        self._transaction(
            [
                f"UPDATE orders SET status = '{status}', status_label = '{LABELS[status]}',"
                f" updated_at = {local} WHERE id = {oid};"
            ],
            offset,
        )

    def delete_order(self, oid: int) -> None:
        """Items first; the order is remembered in deleted_orders (not captured)."""
        self._transaction(
            [
                f"INSERT INTO deleted_orders SELECT * FROM orders WHERE id = {oid};",
                f"DELETE FROM order_lines WHERE order_id = {oid};",
                f"DELETE FROM orders WHERE id = {oid};",
            ]
        )
        self._forget_order(oid)

    def delete_customer(self, cid: int) -> None:
        """Items, then orders, then the customer, in one transaction."""
        self._transaction(
            [
                "DELETE FROM order_lines WHERE order_id IN"
                f" (SELECT id FROM orders WHERE customer_id = {cid});",
                f"DELETE FROM orders WHERE customer_id = {cid};",
                f"DELETE FROM customers WHERE id = {cid};",
            ]
        )
        for oid in [o for o, owner in self.orders.items() if owner == cid]:
            self._forget_order(oid)
        self.customers.remove(cid)

    # -- the day, in phases ------------------------------------------------------------

    def phases(self, scale: int = 1) -> list[Callable[[], None]]:
        """Four phases: sign-ups and first orders; edits; more orders, moves and deletes;
        a tail."""
        n = 10 * scale

        def signups() -> None:
            for _ in range(n):
                cid = self.sign_up()
                for _ in range(self.rng.randint(0, 2)):
                    self.place_order(cid, items=self.rng.randint(1, 3))
            self.place_order(None, items=2, guest="repeat.guest@example.net")
            self.place_order(None, items=1)

        def edits() -> None:
            for cid in self.rng.sample(self.customers, k=n // 3):
                self.edit_profile(cid)
            for cid in self.rng.sample(self.customers, k=n // 5):
                self.change_email(cid)
            for cid in self.rng.sample(self.customers, k=n // 5):
                self.touch_unmapped(cid)
            for oid in self.rng.sample(sorted(self.orders), k=len(self.orders) // 2):
                self.set_status(oid, self.rng.choice(["paid", "shipped", "delivered"]))
            for iid in self.rng.sample(sorted(self.items), k=len(self.items) // 5):
                self.edit_item(iid)

        def churn() -> None:
            for cid in self.rng.sample(self.customers, k=n // 3):
                self.place_order(cid, items=self.rng.randint(2, 3))
            self.place_order(None, items=1, guest="repeat.guest@example.net")
            registered = sorted(o for o, c in self.orders.items() if c is not None)
            for iid in self.rng.sample(sorted(self.items), k=3):
                target = self.rng.choice([o for o in registered if o != self.items[iid]])
                self.move_item(iid, target)
            for iid in self.rng.sample(sorted(self.items), k=len(self.items) // 8):
                self.remove_item(iid)
            for oid in self.rng.sample(registered, k=max(1, len(registered) // 8)):
                if oid in self.orders:
                    self.delete_order(oid)
            guests = sorted(o for o, c in self.orders.items() if c is None)
            self.delete_order(guests[-1])
            for cid in self.rng.sample(self.customers, k=max(1, n // 8)):
                self.delete_customer(cid)

        def tail() -> None:
            for cid in self.rng.sample(self.customers, k=3):
                oid = self.place_order(cid, items=2)
                self.add_item(oid)
                self.set_status(oid, "cancelled")
            for cid in self.rng.sample(self.customers, k=3):
                self.edit_profile(cid)
            for _ in range(2):
                self.sign_up()

        return [signups, edits, churn, tail]
