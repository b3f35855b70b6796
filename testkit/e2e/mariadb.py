"""The shop on MariaDB through the ``mariadb`` client: databases, SQL, what Rfmcube must hold.

Standard library only (the client as a subprocess), like the PostgreSQL side
(:mod:`testkit.e2e.database`). The server is the one of ``scripts/mariadb``
(MariaDB 10.11, the binlog set for Debezium, the server's zone UTC).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from testkit.e2e.scripts import start_script
from testkit.shop import Shop, expected_state
from testkit.workbench import REPO

SCHEMA = Path(__file__).resolve().parent / "mariadb-shop.sql"
TABLES = ("customers", "orders", "order_lines")
_COLUMNS = {
    "customers": (
        "id", "email", "first_name", "last_name", "phone", "newsletter", "attributes",
        "created_at", "updated_at",
    ),
    "orders": (
        "id", "customer_id", "customer_email", "status", "status_label", "amount", "currency",
        "delivery_province", "created_at", "updated_at",
    ),
    "order_lines": ("id", "order_id", "product_id", "sku", "brand", "quantity", "unit_price"),
}  # fmt: skip
_COLUMNS["deleted_orders"] = _COLUMNS["orders"]


def start_mariadb() -> int:
    """``scripts/mariadb start`` (installs Debian's server if missing): its port."""
    start_script("mariadb")
    return int(os.environ.get("MARIADB_PORT", "23306"))


@dataclass(frozen=True)
class MariaDb:
    """One database of the local server, reached as root over loopback TCP."""

    port: int = 23306
    dbname: str = ""

    def database(self, dbname: str) -> MariaDb:
        return MariaDb(self.port, dbname)

    def run(self, sql: str, timeout: float = 60.0) -> str:
        """Runs a script (stops at the first error); raw tab-separated output."""
        command = [
            "mariadb", "--no-defaults", "--default-character-set=utf8mb4", "--protocol=tcp",
            "-h", "127.0.0.1", "-P", str(self.port), "-u", "root", "-N", "-B", "--raw",
        ]  # fmt: skip
        if self.dbname:
            command.append(self.dbname)
        done = subprocess.run(
            command,
            input=sql,
            capture_output=True,
            text=True,
            env={**os.environ, "MYSQL_PWD": "root"},
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb failed on {self.dbname}: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one of the shop's tables, numbers exact, times as UTC datetimes."""
        # a JSON column as its text: what Debezium sends (MariaDB's JSON is LONGTEXT)
        pairs = ", ".join(
            f"'{c}', CAST({c} AS CHAR)" if c == "attributes" else f"'{c}', {c}"
            for c in _COLUMNS[table]
        )
        out = self.run(
            f"SET time_zone = '+00:00'; SELECT JSON_ARRAYAGG(JSON_OBJECT({pairs})) FROM {table};"
        ).strip()
        rows: list[dict[str, Any]] = json.loads(out, parse_float=Decimal) if out != "NULL" else []
        for row in rows:
            for column in ("created_at", "updated_at"):
                if column in row:
                    row[column] = datetime.fromisoformat(row[column]).replace(tzinfo=UTC)
        return rows


def create_shop_database(server: MariaDb, dbname: str) -> MariaDb:
    server.run(f"DROP DATABASE IF EXISTS {dbname}; CREATE DATABASE {dbname} CHARACTER SET utf8mb4;")
    shop = server.database(dbname)
    shop.run(SCHEMA.read_text(encoding="utf-8"))
    return shop


def drop_shop_database(server: MariaDb, dbname: str) -> None:
    server.run(f"DROP DATABASE IF EXISTS {dbname};")


def table_counts(shop: MariaDb) -> dict[str, int]:
    out = shop.run(";".join(f"SELECT count(*) FROM {table}" for table in TABLES) + ";")
    return dict(zip(TABLES, (int(line) for line in out.split()), strict=True))


def _money(value: Decimal | int) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"))


def shop_from_sql(shop: MariaDb) -> Shop:
    """The shop's tables as :class:`testkit.shop.Shop` rows, in the reference names."""
    model = Shop()
    for row in shop.rows("customers"):
        row["newsletter"] = bool(row["newsletter"])
        model.customers[row["id"]] = row
    for table, target in (("orders", model.orders), ("deleted_orders", model.deleted_orders)):
        for row in shop.rows(table):
            row["amount"] = _money(row["amount"])
            target[row["id"]] = row
    for row in shop.rows("order_lines"):
        row["unit_price"] = _money(row["unit_price"])
        model.items[row["id"]] = row
    return model


def expected_state_from_sql(
    shop: MariaDb, *, sent_customer_columns: dict[str, str] | None = None
) -> dict[str, Any]:
    """What Rfmcube must hold for the shop's tables, by :func:`testkit.shop.expected_state`'s
    rules; ``sent_customer_columns`` adds the customer columns the run's mapping sends too."""
    model = shop_from_sql(shop)
    state = expected_state(model)
    by_id = {str(c["id"]): c for c in model.customers.values()}
    for customer in state["customers"]:
        row = by_id.get(customer.get("id") or "")
        for column, field in (sent_customer_columns or {}).items():
            if row is not None:  # a null column is sent as null, as the reference's are
                customer[field] = row[column]
    return state


def mapping_for(prefix: str, dbname: str) -> str:
    """The reference mapping for the MariaDB shop's topics (``<prefix>.<database>.<table>``):
    order_lines is the items' table, and the JSON column attributes a descriptor."""
    text = (REPO / "consumer" / "default_mapping.yaml").read_text(encoding="utf-8")
    for table, topic_table in (
        ("customers", "customers"),
        ("orders", "orders"),
        ("order_items", "order_lines"),
    ):
        text = text.replace(f"shop.public.{table}", f"{prefix}.{dbname}.{topic_table}")
    marker = "      - phone\n"
    assert marker in text, "the default mapping's descriptors changed: update this mapping"
    return text.replace(marker, marker + "      - attributes\n")
