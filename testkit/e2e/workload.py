"""A shop's day as SQL transactions, in phases a test can interleave with crashes.

Deterministic for a seed: ids are chosen here, not by sequences. Every step is
one transaction run through psql. Timestamps are written from several time
zones (session ``TIME ZONE`` with local literals, or literals with an offset),
some with fractions of a second; amounts have cents; each customer has
several KB of incompressible ``notes`` stored out of line (TOAST).

    python -m testkit.e2e.workload --dbname shop      # the whole day into database shop
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from testkit.e2e.database import Postgres
from testkit.e2e.day import ShopDay
from testkit.shop import BRANDS, PROVINCES, STATUS_LABELS

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Rome",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "America/Sao_Paulo",
]


def _text(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


@dataclass(kw_only=True)
class Workload(ShopDay):
    """Writes the shop's changes into one database; remembers live ids only."""

    db: Postgres

    # -- SQL pieces --------------------------------------------------------------

    def _zone(self) -> str:
        return self.rng.choice(ZONES)

    def _at(self, zone: str) -> str:
        """The next moment as a literal: local time of the session's zone, or with an offset."""
        self.clock += timedelta(
            seconds=self.rng.randint(1, 5000),
            microseconds=self.rng.choice([0, 0, 250_000, 999_999]),
        )
        local = self.clock.astimezone(ZoneInfo(zone))
        if self.rng.random() < 0.5:
            return f"'{local.strftime('%Y-%m-%d %H:%M:%S.%f')}'"  # read in the session's zone
        return f"'{local.isoformat(sep=' ')}'"  # carries its own offset

    def _transaction(self, statements: list[str], zone: str | None = None) -> None:
        zone = zone or "UTC"
        self.db.run("\n".join(["BEGIN;", f"SET LOCAL TIME ZONE '{zone}';", *statements, "COMMIT;"]))
        self.transactions += 1

    def _notes(self) -> str:
        # Random hex: pglz finds nothing to compress, so the value really is TOASTed.
        return "".join(f"{self.rng.getrandbits(128):032x}" for _ in range(150))

    def _recompute(self, order_id: int, zone: str) -> str:
        return (
            "UPDATE orders SET amount = (SELECT coalesce(sum(quantity * unit_price), 0)"
            f" FROM order_items WHERE order_id = {order_id}), updated_at = {self._at(zone)}"
            f" WHERE id = {order_id};"
        )

    # -- shop operations -------------------------------------------------------------

    def sign_up(self) -> int:
        zone, cid = self._zone(), self._new_id("c")
        at = self._at(zone)
        name = self.rng.choice(["Anna", "Luca", "Sara", "Marco", "Giulia", "D'Amico"])
        self._transaction(
            [
                "INSERT INTO customers (id, email, first_name, last_name, phone, password_hash,"
                " newsletter, notes, created_at, updated_at) VALUES"
                f" ({cid}, 'customer{cid}@example.com', {_text(name)},"
                f" {_text(self.rng.choice(['Rossi', 'Bianchi', 'Verdi', 'Neri']))},"
                f" '+39 02 {cid:07d}', '$argon2id$v=19$secret{cid}',"
                f" {str(self.rng.random() < 0.5).lower()}, '{self._notes()}', {at}, {at});"
            ],
            zone,
        )
        self.customers.append(cid)
        return cid

    def edit_profile(self, cid: int) -> None:
        """Leaves notes alone: Debezium sends it as the unavailable-TOAST placeholder."""
        zone = self._zone()
        self._transaction(
            [
                f"UPDATE customers SET phone = '+39 06 {self.rng.randint(0, 9_999_999):07d}',"
                f" newsletter = NOT newsletter, updated_at = {self._at(zone)} WHERE id = {cid};"
            ],
            zone,
        )

    def rewrite_notes(self, cid: int) -> None:
        self._transaction([f"UPDATE customers SET notes = '{self._notes()}' WHERE id = {cid};"])

    def touch_unmapped(self, cid: int) -> None:
        self._transaction(
            [
                f"UPDATE customers SET password_hash = '$argon2id${self.rng.random()}'"
                f" WHERE id = {cid};"
            ]
        )

    def change_email(self, cid: int) -> None:
        zone = self._zone()
        self._transaction(
            [
                f"UPDATE customers SET email ="
                f" 'renamed{cid}.{self.rng.randint(1, 9999)}@example.com',"
                f" updated_at = {self._at(zone)} WHERE id = {cid};"
            ],
            zone,
        )

    def place_order(self, cid: int | None, items: int = 2, guest: str | None = None) -> int:
        zone, oid = self._zone(), self._new_id("o")
        at = self._at(zone)
        email = None if cid is not None else guest or f"guest{oid}@example.net"
        statements = [
            "INSERT INTO orders (id, customer_id, customer_email, status, status_label, amount,"
            " currency, delivery_province, created_at, updated_at) VALUES"
            f" ({oid}, {'NULL' if cid is None else cid}, {_text(email)}, '10', 'Pending', 0,"
            f" 'EUR', {_text(self.rng.choice(PROVINCES))}, {at}, {at});"
        ]
        for _ in range(items):
            statements.append(self._item_insert(oid))
        statements.append(self._recompute(oid, zone))
        self._transaction(statements, zone)
        self.orders[oid] = cid
        return oid

    def _item_insert(self, oid: int) -> str:
        iid = self._new_id("i")
        self.items[iid] = oid
        price = Decimal(self.rng.randint(1, 25999)) / 100
        return (
            "INSERT INTO order_items (id, order_id, product_id, sku, brand, quantity, unit_price)"
            f" VALUES ({iid}, {oid}, {self.rng.randint(40000, 49999)},"
            f" 'SKU-{self.rng.randint(1, 999):03d}', '{self.rng.choice(BRANDS)}',"
            f" {self.rng.randint(1, 3)}, {price});"
        )

    def add_item(self, oid: int) -> None:
        zone = self._zone()
        self._transaction([self._item_insert(oid), self._recompute(oid, zone)], zone)

    def edit_item(self, iid: int) -> None:
        zone, oid = self._zone(), self.items[iid]
        self._transaction(
            [
                f"UPDATE order_items SET quantity = quantity + 1,"
                f" unit_price = unit_price + 0.01 WHERE id = {iid};",
                self._recompute(oid, zone),
            ],
            zone,
        )

    def remove_item(self, iid: int) -> None:
        zone, oid = self._zone(), self.items.pop(iid)
        self._transaction(
            [f"DELETE FROM order_items WHERE id = {iid};", self._recompute(oid, zone)], zone
        )

    def set_status(self, oid: int, status: str) -> None:
        zone = self._zone()
        self._transaction(
            [
                f"UPDATE orders SET status = '{status}', status_label = '{STATUS_LABELS[status]}',"
                f" updated_at = {self._at(zone)} WHERE id = {oid};"
            ],
            zone,
        )

    def delete_order(self, oid: int) -> None:
        """Items first; the order is remembered in deleted_orders (not captured)."""
        self._transaction(
            [
                f"INSERT INTO deleted_orders SELECT * FROM orders WHERE id = {oid};",
                f"DELETE FROM order_items WHERE order_id = {oid};",
                f"DELETE FROM orders WHERE id = {oid};",
            ]
        )
        self._forget_order(oid)

    def delete_customer(self, cid: int) -> None:
        """Items, then orders, then the customer, in one transaction."""
        self._transaction(
            [
                "DELETE FROM order_items WHERE order_id IN"
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
        """Four phases: sign-ups and first orders; edits; more orders and deletes; a tail."""
        n = 12 * scale

        def signups() -> None:
            for _ in range(n):
                cid = self.sign_up()
                for _ in range(self.rng.randint(0, 2)):
                    self.place_order(cid, items=self.rng.randint(1, 4))
            self.place_order(None, items=2, guest="repeat.guest@example.net")
            for _ in range(3):
                self.place_order(None, items=self.rng.randint(1, 3))

        def edits() -> None:
            for cid in self.rng.sample(self.customers, k=n // 3):
                self.edit_profile(cid)
            for cid in self.rng.sample(self.customers, k=n // 6):
                self.change_email(cid)
            for cid in self.rng.sample(self.customers, k=n // 6):
                self.touch_unmapped(cid)
            self.rewrite_notes(self.customers[0])
            for oid in self.rng.sample(sorted(self.orders), k=len(self.orders) // 2):
                self.set_status(oid, self.rng.choice(["20", "30", "40"]))
            for iid in self.rng.sample(sorted(self.items), k=len(self.items) // 5):
                self.edit_item(iid)

        def churn() -> None:
            for cid in self.rng.sample(self.customers, k=n // 3):
                self.place_order(cid, items=self.rng.randint(2, 4))
            self.place_order(None, items=1, guest="repeat.guest@example.net")
            for iid in self.rng.sample(sorted(self.items), k=len(self.items) // 8):
                if iid in self.items:
                    self.remove_item(iid)
            registered = sorted(o for o, c in self.orders.items() if c is not None)
            for oid in self.rng.sample(registered, k=max(1, len(registered) // 8)):
                self.delete_order(oid)
            guests = sorted(o for o, c in self.orders.items() if c is None)
            self.delete_order(guests[-1])
            for cid in self.rng.sample(self.customers, k=max(1, n // 8)):
                self.delete_customer(cid)

        def tail() -> None:
            for cid in self.rng.sample(self.customers, k=3):
                oid = self.place_order(cid, items=2)
                self.add_item(oid)
                self.set_status(oid, "90")
            for cid in self.rng.sample(self.customers, k=3):
                self.edit_profile(cid)
            for _ in range(2):
                self.sign_up()

        return [signups, edits, churn, tail]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dbname", default="shop")
    parser.add_argument("--port", type=int, default=25432)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args(argv)
    workload = Workload(db=Postgres(args.port).database(args.dbname), seed=args.seed)
    workload.run_all(args.scale)
    print(f"{workload.transactions} transactions written to {args.dbname}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
