"""The shop's PostgreSQL through psql: databases, SQL, and what Rfmcube must hold.

Standard library only (psql as a subprocess): the end-to-end run adds no
Python dependency. The server is the one of ``scripts/postgres``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from testkit.e2e.scripts import start_script
from testkit.shop import Shop, expected_state

REPO = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).resolve().parent / "shop.sql"
# The shop's role: owns the shop databases and may replicate (Debezium logs in as it).
SHOP_ROLE = "shop"
SHOP_PASSWORD = "shop"


def start_postgres() -> int:
    """``scripts/postgres start`` (installs and starts the server if needed): its port."""
    start_script("postgres")
    return int(os.environ.get("PG_PORT", "25432"))


@dataclass(frozen=True)
class Postgres:
    """One database of the local server, reached as ``user`` over loopback TCP."""

    port: int = 25432
    dbname: str = "postgres"
    user: str = "postgres"
    password: str = "postgres"

    def database(
        self, dbname: str, *, user: str = SHOP_ROLE, password: str = SHOP_PASSWORD
    ) -> Postgres:
        return Postgres(self.port, dbname, user, password)

    def run(self, sql: str, timeout: float = 60.0) -> str:
        """Runs a script (stops at the first error); psql's unaligned output."""
        done = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                self.dbname,
                "-f",
                "-",
            ],
            input=sql,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"},
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed on {self.dbname}: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def query_json(self, select: str) -> Any:
        """The rows of ``select`` as JSON objects (numbers as exact Decimals)."""
        out = self.run(f"SELECT coalesce(json_agg(row_to_json(q)), '[]') FROM ({select}) q;")
        return json.loads(out, parse_float=Decimal)


def create_shop_database(server: Postgres, dbname: str) -> Postgres:
    """A fresh database with the shop's schema, owned by the shop role."""
    server.run(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SHOP_ROLE}') THEN
            CREATE ROLE {SHOP_ROLE} LOGIN REPLICATION PASSWORD '{SHOP_PASSWORD}';
          END IF;
        END $$;
        DROP DATABASE IF EXISTS {dbname} WITH (FORCE);
        CREATE DATABASE {dbname} OWNER {SHOP_ROLE};
        """
    )
    shop = server.database(dbname)
    shop.run(SCHEMA.read_text(encoding="utf-8"))
    return shop


def drop_shop_database(server: Postgres, dbname: str, slot: str) -> None:
    """Drops the connector's replication slot, then the database."""
    server.run(
        f"""
        SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
          WHERE slot_name = '{slot}' AND active_pid IS NOT NULL;
        SELECT pg_sleep(0.2);
        SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
          WHERE slot_name = '{slot}';
        DROP DATABASE IF EXISTS {dbname} WITH (FORCE);
        """
    )


def slot_active(server: Postgres, slot: str) -> bool:
    rows = server.query_json(f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'")
    return bool(rows) and bool(rows[0]["active"])


def _moment(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _money(value: Decimal | int | None) -> Decimal | None:
    return None if value is None else Decimal(value).quantize(Decimal("0.01"))


def table_counts(shop: Postgres) -> dict[str, int]:
    rows = shop.query_json(
        "SELECT (SELECT count(*) FROM customers) AS customers,"
        " (SELECT count(*) FROM orders) AS orders,"
        " (SELECT count(*) FROM order_items) AS order_items"
    )
    return {table: int(count) for table, count in rows[0].items()}


def shop_from_sql(shop: Postgres) -> Shop:
    """The shop's tables as :class:`testkit.shop.Shop` rows (no records)."""
    model = Shop()
    for row in shop.query_json("SELECT * FROM customers"):
        row["created_at"], row["updated_at"] = (
            _moment(row["created_at"]),
            _moment(row["updated_at"]),
        )
        model.customers[row["id"]] = row
    for table, target in (("orders", model.orders), ("deleted_orders", model.deleted_orders)):
        for row in shop.query_json(f"SELECT * FROM {table}"):
            row["created_at"], row["updated_at"] = (
                _moment(row["created_at"]),
                _moment(row["updated_at"]),
            )
            row["amount"] = _money(row["amount"])
            target[row["id"]] = row
    for row in shop.query_json("SELECT * FROM order_items"):
        row["unit_price"] = _money(row["unit_price"])
        model.items[row["id"]] = row
    return model


def expected_state_from_sql(
    shop: Postgres, *, sent_customer_columns: dict[str, str] | None = None
) -> dict[str, Any]:
    """What Rfmcube must hold for the shop's current tables, in ``/_emulator/state``'s
    shape, by the rules of :func:`testkit.shop.expected_state`. ``sent_customer_columns``
    adds customer columns that the run's mapping sends too ({column: field})."""
    model = shop_from_sql(shop)
    state = expected_state(model)
    if sent_customer_columns:
        by_id = {str(c["id"]): c for c in model.customers.values()}
        for customer in state["customers"]:
            row = by_id.get(customer.get("id") or "")
            if row is None:
                continue  # a guest: only orders
            for column, field in sent_customer_columns.items():
                if row[column] is not None:
                    customer[field] = row[column]
    return state
