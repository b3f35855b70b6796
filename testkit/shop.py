"""A synthetic reference shop and the Debezium stream it would produce.

The shop keeps its tables as plain rows (the truth) and, for every change,
writes the records Debezium's PostgreSQL connector would write with the JSON
converter: ``{"schema", "payload"}`` envelopes (or bare payloads with
``schemas=False``), Connect ``Decimal`` amounts as base64 with scale 2,
``timestamptz`` as ``ZonedTimestamp`` strings, deletes followed by a
tombstone. :func:`expected_state` says what Rfmcube must hold for the shop, in
the emulator's ``/_emulator/state`` shape, under the default mapping.

Used by the demo, the pipeline tests and the benchmarks.
"""

from __future__ import annotations

import base64
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

PREFIX = "shop"
TABLES = ("customers", "orders", "order_items")


def topics_for(prefix: str) -> dict[str, str]:
    """Debezium's topic names: ``<prefix>.<schema>.<table>``."""
    return {table: f"{prefix}.public.{table}" for table in TABLES}


TOPICS = topics_for(PREFIX)

_INT64 = {"type": "int64", "optional": False}
_OPT_INT64 = {"type": "int64", "optional": True}
_INT32 = {"type": "int32", "optional": True}
_TEXT = {"type": "string", "optional": True}
_BOOL = {"type": "boolean", "optional": True}
_ZONED = {
    "type": "string",
    "optional": True,
    "name": "io.debezium.time.ZonedTimestamp",
    "version": 1,
}
_MONEY = {
    "type": "bytes",
    "optional": True,
    "name": "org.apache.kafka.connect.data.Decimal",
    "version": 1,
    "parameters": {"scale": "2", "connect.decimal.precision": "12"},
}

COLUMNS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "customers": [
        ("id", _INT64),
        ("email", _TEXT),
        ("first_name", _TEXT),
        ("last_name", _TEXT),
        ("phone", _TEXT),
        ("password_hash", _TEXT),
        ("newsletter", _BOOL),
        ("notes", _TEXT),
        ("created_at", _ZONED),
        ("updated_at", _ZONED),
    ],
    "orders": [
        ("id", _INT64),
        ("customer_id", _OPT_INT64),
        ("customer_email", _TEXT),
        ("status", _TEXT),
        ("status_label", _TEXT),
        ("amount", _MONEY),
        ("currency", _TEXT),
        ("delivery_province", _TEXT),
        ("created_at", _ZONED),
        ("updated_at", _ZONED),
    ],
    "order_items": [
        ("id", _INT64),
        ("order_id", _INT64),
        ("product_id", _INT64),
        ("sku", _TEXT),
        ("brand", _TEXT),
        ("quantity", _INT32),
        ("unit_price", _MONEY),
    ],
}

STATUS_LABELS = {
    "10": "Pending",
    "20": "Paid",
    "30": "Shipped",
    "40": "Completed",
    "90": "Cancelled",
}
BRANDS = ["nike", "adidas", "puma", "asics", "fila", "kappa"]
PROVINCES = ["MI", "RM", "TO", "NA", "BO", "FI", "VE", None]


def _zoned(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decimal_bytes(amount: Decimal, scale: int = 2) -> str:
    unscaled = int(amount.scaleb(scale).to_integral_value())
    length = max(1, (unscaled + (unscaled < 0)).bit_length() // 8 + 1)
    return base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()


def _encode_value(schema: dict[str, Any], value: Any) -> Any:
    if value is None:
        return None
    if schema is _ZONED:
        return _zoned(value)
    if schema is _MONEY:
        return _decimal_bytes(value)
    return value


def encode_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row of ``table`` (datetimes, Decimals) as Debezium's JSON converter writes it."""
    return {name: _encode_value(schema, row.get(name)) for name, schema in COLUMNS[table]}


@dataclass(slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes | None


@dataclass
class Shop:
    """The shop's tables and the Debezium records of every change so far."""

    schemas: bool = True
    seed: int = 7
    prefix: str = PREFIX
    # Live: timestamps and ts_ms are the wall clock (benchmarks measure delays).
    live: bool = False
    # PostgreSQL's REPLICA IDENTITY FULL: before images hold the whole row. With
    # DEFAULT (False), an update has no before image and a delete's holds only the key.
    replica_identity_full: bool = True
    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    # Orders deleted on their own (not with their customer): Rfmcube keeps them
    # with the "deleted" status under the default mapping's mark policy.
    deleted_orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    _next_id: dict[str, int] = field(default_factory=lambda: {t: 1 for t in COLUMNS})
    _lsn: int = 24_000_000

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.topics = topics_for(self.prefix)

    # -- encoding -----------------------------------------------------------

    def _tick(self) -> datetime:
        if self.live:
            self.clock = datetime.now(UTC).replace(microsecond=0)
        else:
            self.clock += timedelta(seconds=self.rng.randint(1, 90))
        return self.clock

    def _row_schema(self, table: str) -> dict[str, Any]:
        return {
            "type": "struct",
            "optional": True,
            "name": f"{self.topics[table]}.Value",
            "fields": [{**schema, "field": name} for name, schema in COLUMNS[table]],
        }

    def _encode_row(self, table: str, row: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if row is None else encode_row(table, row)

    def _emit(
        self, table: str, op: str, before: dict[str, Any] | None, after: dict[str, Any] | None
    ) -> None:
        row_id = (after or before or {})["id"]
        if not self.replica_identity_full and before is not None:
            before = None if op == "u" else {"id": row_id}
        self._lsn += self.rng.randint(100, 5000)
        millis = int((time.time() if self.live else self.clock.timestamp()) * 1000)
        key_payload = {"id": row_id}
        payload = {
            "before": self._encode_row(table, before),
            "after": self._encode_row(table, after),
            "source": {
                "version": "3.6.1.Final",
                "connector": "postgresql",
                "name": self.prefix,
                "ts_ms": millis,
                "snapshot": "false",
                "db": "shop",
                "sequence": f'[null,"{self._lsn}"]',
                "schema": "public",
                "table": table,
                "txId": self._lsn // 1000,
                "lsn": self._lsn,
                "xmin": None,
            },
            "transaction": None,
            "op": op,
            "ts_ms": millis + self.rng.randint(1, 40),
        }
        if self.schemas:
            key_schema = {
                "type": "struct",
                "optional": False,
                "name": f"{self.topics[table]}.Key",
                "fields": [{"type": "int64", "optional": False, "field": "id"}],
            }
            row_schema = self._row_schema(table)
            value_schema = {
                "type": "struct",
                "optional": False,
                "name": f"{self.topics[table]}.Envelope",
                "version": 2,
                "fields": [
                    {**row_schema, "field": "before"},
                    {**row_schema, "field": "after"},
                    {
                        "type": "struct",
                        "optional": False,
                        "name": "io.debezium.connector.postgresql.Source",
                        "field": "source",
                        "fields": [
                            {"type": "string", "optional": False, "field": "version"},
                            {"type": "string", "optional": False, "field": "connector"},
                            {"type": "string", "optional": False, "field": "name"},
                            {"type": "int64", "optional": False, "field": "ts_ms"},
                            {"type": "string", "optional": True, "field": "snapshot"},
                            {"type": "string", "optional": False, "field": "db"},
                            {"type": "string", "optional": True, "field": "sequence"},
                            {"type": "string", "optional": False, "field": "schema"},
                            {"type": "string", "optional": False, "field": "table"},
                            {"type": "int64", "optional": True, "field": "txId"},
                            {"type": "int64", "optional": True, "field": "lsn"},
                            {"type": "int64", "optional": True, "field": "xmin"},
                        ],
                    },
                    {
                        "type": "struct",
                        "optional": True,
                        "field": "transaction",
                        "fields": [
                            {"type": "string", "optional": False, "field": "id"},
                            {"type": "int64", "optional": False, "field": "total_order"},
                            {"type": "int64", "optional": False, "field": "data_collection_order"},
                        ],
                    },
                    {"type": "string", "optional": False, "field": "op"},
                    {"type": "int64", "optional": True, "field": "ts_ms"},
                ],
            }
            key = orjson.dumps({"schema": key_schema, "payload": key_payload})
            value = orjson.dumps({"schema": value_schema, "payload": payload})
        else:
            key = orjson.dumps(key_payload)
            value = orjson.dumps(payload)
        self.records.append(Record(self.topics[table], key, value))
        if op == "d":
            self.records.append(Record(self.topics[table], key, None))

    def _insert(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        row["id"] = self._next_id[table]
        self._next_id[table] += 1
        self._tables(table)[row["id"]] = row
        self._emit(table, "c", None, dict(row))
        return row

    def _update(self, table: str, row_id: int, **changes: Any) -> None:
        row = self._tables(table)[row_id]
        before = dict(row)
        row.update(changes)
        self._emit(table, "u", before, dict(row))

    def _delete(self, table: str, row_id: int) -> None:
        before = self._tables(table).pop(row_id)
        self._emit(table, "d", before, None)

    def _tables(self, table: str) -> dict[int, dict[str, Any]]:
        return {"customers": self.customers, "orders": self.orders, "order_items": self.items}[
            table
        ]

    def all_orders_ever(self) -> list[dict[str, Any]]:
        """Every order row that was ever created, as last written (deleted ones too)."""
        rows: dict[int, dict[str, Any]] = {}
        for record in self.records:
            if record.topic == self.topics["orders"] and record.value is not None:
                payload = orjson.loads(record.value)
                payload = payload.get("payload", payload)
                row = payload["after"] or payload["before"]
                if payload["after"] is not None or row["id"] not in rows:
                    rows[row["id"]] = row  # a key-only before image adds nothing
        return list(rows.values())

    # -- shop operations ------------------------------------------------------

    def sign_up(self) -> int:
        now = self._tick()
        n = self._next_id["customers"]
        row = self._insert(
            "customers",
            {
                "email": f"customer{n}@example.com",
                "first_name": self.rng.choice(["Anna", "Luca", "Sara", "Marco", "Giulia"]),
                "last_name": self.rng.choice(["Rossi", "Bianchi", "Verdi", "Neri"]),
                "phone": f"+39 02 {n:07d}",
                "password_hash": f"$argon2id$v=19$secret{n}",
                "newsletter": self.rng.random() < 0.5,
                "notes": "x" * 3000,
                "created_at": now,
                "updated_at": now,
            },
        )
        return int(row["id"])

    def edit_profile(self, customer_id: int) -> None:
        self._update(
            "customers",
            customer_id,
            phone=f"+39 06 {self.rng.randint(0, 9_999_999):07d}",
            newsletter=not self.customers[customer_id]["newsletter"],
            updated_at=self._tick(),
        )

    def set_newsletter(self, customer_id: int, subscribed: bool) -> None:
        """A flag set on its own, ``updated_at`` untouched (as many shops do): setting it
        back makes the very document Rfmcube held before."""
        self._update("customers", customer_id, newsletter=subscribed)

    def touch_unmapped(self, customer_id: int) -> None:
        """A change of a column that is never sent: nothing must go out."""
        self._update("customers", customer_id, password_hash=f"$argon2id$v=19${self.rng.random()}")

    def change_email(self, customer_id: int) -> None:
        self._update(
            "customers",
            customer_id,
            email=f"renamed{customer_id}.{self.rng.randint(1, 9999)}@example.com",
            updated_at=self._tick(),
        )

    def place_order(
        self, customer_id: int | None, *, items: int = 2, guest_email: str | None = None
    ) -> int:
        """An order of a registered customer, or a guest checkout (``customer_id`` None)
        under ``guest_email`` (default: an email of its own)."""
        now = self._tick()
        guest = None
        if customer_id is None:
            guest = guest_email or f"guest{self._next_id['orders']}@example.net"
        order = self._insert(
            "orders",
            {
                "customer_id": customer_id,
                "customer_email": guest,
                "status": "10",
                "status_label": STATUS_LABELS["10"],
                "amount": Decimal(0),
                "currency": "EUR",
                "delivery_province": self.rng.choice(PROVINCES),
                "created_at": now,
                "updated_at": now,
            },
        )
        for _ in range(items):
            self.add_item(int(order["id"]))
        return int(order["id"])

    def _recompute_amount(self, order_id: int) -> None:
        total = sum(
            (
                i["unit_price"] * i["quantity"]
                for i in self.items.values()
                if i["order_id"] == order_id
            ),
            Decimal(0),
        )
        self._update(
            "orders", order_id, amount=total.quantize(Decimal("0.01")), updated_at=self._tick()
        )

    def add_item(self, order_id: int) -> int:
        item = self._insert(
            "order_items",
            {
                "order_id": order_id,
                "product_id": self.rng.randint(40000, 49999),
                "sku": f"SKU-{self.rng.randint(1, 999):03d}",
                "brand": self.rng.choice(BRANDS),
                "quantity": self.rng.randint(1, 3),
                "unit_price": Decimal(self.rng.randint(199, 25999)).scaleb(-2),
            },
        )
        self._recompute_amount(order_id)
        return int(item["id"])

    def edit_item(self, item_id: int) -> None:
        self._update("order_items", item_id, quantity=self.items[item_id]["quantity"] + 1)
        self._recompute_amount(self.items[item_id]["order_id"])

    def move_item(self, item_id: int, order_id: int) -> None:
        """The item now belongs to another order; neither order's row changes (a shop
        that keeps its totals elsewhere), so only the item's record says so."""
        self._update("order_items", item_id, order_id=order_id)

    def remove_item(self, item_id: int) -> None:
        order_id = self.items[item_id]["order_id"]
        self._delete("order_items", item_id)
        self._recompute_amount(order_id)

    def set_status(self, order_id: int, status: str) -> None:
        self._update(
            "orders",
            order_id,
            status=status,
            status_label=STATUS_LABELS[status],
            updated_at=self._tick(),
        )

    def delete_order(self, order_id: int) -> None:
        for item_id in [i for i, item in self.items.items() if item["order_id"] == order_id]:
            self._delete("order_items", item_id)
        self.deleted_orders[order_id] = dict(self.orders[order_id])
        self._delete("orders", order_id)

    def erase_customer(self, customer_id: int) -> None:
        """The customer's row alone is deleted (a consent withdrawal): its orders stay."""
        self._delete("customers", customer_id)

    def delete_customer(self, customer_id: int) -> None:
        for order_id in [
            o for o, order in self.orders.items() if order["customer_id"] == customer_id
        ]:
            for item_id in [i for i, item in self.items.items() if item["order_id"] == order_id]:
                self._delete("order_items", item_id)
            self._delete("orders", order_id)
        self._delete("customers", customer_id)

    # -- a realistic day ----------------------------------------------------------

    def workload(self, customers: int = 40, guest_orders: int = 10) -> None:
        """Sign-ups, email changes, guest checkouts, orders with items, item edits,
        status changes, order and customer deletes."""
        ids = [self.sign_up() for _ in range(customers)]
        orders: list[int] = []
        for cid in ids:
            for _ in range(self.rng.randint(0, 3)):
                orders.append(self.place_order(cid, items=self.rng.randint(1, 4)))
        guests = [self.place_order(None, items=self.rng.randint(1, 3)) for _ in range(guest_orders)]
        for cid in self.rng.sample(ids, k=max(1, customers // 4)):
            self.edit_profile(cid)
        for cid in self.rng.sample(ids, k=max(1, customers // 8)):
            self.change_email(cid)
        for cid in self.rng.sample(ids, k=max(1, customers // 8)):
            self.touch_unmapped(cid)
        for oid in self.rng.sample(orders + guests, k=max(1, len(orders) // 2)):
            self.set_status(oid, self.rng.choice(["20", "30", "40"]))
        live_items = list(self.items)
        for iid in self.rng.sample(live_items, k=max(1, len(live_items) // 6)):
            self.edit_item(iid)
        for iid in self.rng.sample(list(self.items), k=max(1, len(self.items) // 10)):
            if iid in self.items:
                self.remove_item(iid)
        for oid in self.rng.sample(
            [o for o in orders if o in self.orders], k=max(1, len(orders) // 10)
        ):
            self.delete_order(oid)
        for cid in self.rng.sample(ids, k=max(1, customers // 10)):
            if cid in self.customers:
                self.delete_customer(cid)
        for cid in self.rng.sample([c for c in ids if c in self.customers], k=2):
            self.place_order(cid, items=2)


def _order_doc(
    order: dict[str, Any], items: list[dict[str, Any]], *, status: str | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": str(order["id"]),
        "createdAt": _zoned(order["created_at"])
        if isinstance(order["created_at"], datetime)
        else order["created_at"],
        "updatedAt": _zoned(order["updated_at"])
        if isinstance(order["updated_at"], datetime)
        else order["updated_at"],
        "amount": order["amount"],
        "status": status or order["status"],
        "statusLabel": order["status_label"],
        "currency": order["currency"],
    }
    doc["delivery"] = {"province": order["delivery_province"]}
    doc["items"] = [
        {
            "item_id": i["id"],
            "product_id": i["product_id"],
            "brand": i["brand"],
            "sku": i["sku"],
            "quantity": i["quantity"],
            "price": i["unit_price"],
        }
        for i in sorted(items, key=lambda i: int(i["id"]))
    ]
    return doc


def expected_state(shop: Shop) -> dict[str, Any]:
    """What Rfmcube must hold for this shop, in ``/_emulator/state``'s shape."""
    items_by_order: dict[int, list[dict[str, Any]]] = {}
    for item in shop.items.values():
        items_by_order.setdefault(item["order_id"], []).append(item)
    customers: dict[str, dict[str, Any]] = {}
    for c in shop.customers.values():
        customers[c["email"]] = {
            "id": str(c["id"]),
            "email": c["email"],
            "createdAt": _zoned(c["created_at"]),
            "updatedAt": _zoned(c["updated_at"]),
            "firstName": c["first_name"],
            "lastName": c["last_name"],
            "phone": c["phone"],
            "newsletter": c["newsletter"],
            "orders": [],
        }
    by_id = {str(c["id"]): customers[c["email"]] for c in shop.customers.values()}
    orders = [(o, None) for o in shop.orders.values()]
    deleted_orders: list[tuple[dict[str, Any], str | None]] = [
        (o, "deleted") for o in shop.deleted_orders.values()
    ]
    for order, status in orders + deleted_orders:
        owner: dict[str, Any] | None
        if order["customer_id"] is not None:
            owner = by_id.get(str(order["customer_id"]))
            if owner is None:
                continue  # gone with its customer
        else:
            email = order["customer_email"]
            owner = customers.get(email)
            if owner is None:
                owner = customers[email] = {
                    "email": email,
                    "createdAt": None,
                    "updatedAt": None,
                    "orders": [],
                }
        owner["orders"].append(
            _order_doc(
                order, items_by_order.get(order["id"], []) if status is None else [], status=status
            )
        )
    for owner in customers.values():
        if "id" not in owner:
            created = [o["createdAt"] for o in owner["orders"]]
            updated = [o["updatedAt"] for o in owner["orders"]]
            owner["createdAt"], owner["updatedAt"] = min(created), max(updated)
        owner["orders"].sort(key=lambda o: int(o["id"]))
    ordered = sorted(customers.values(), key=lambda c: (c.get("id") or "", c["email"]))
    return {"customers": ordered}


def document_of(topic: str, value: bytes | None) -> tuple[str, str] | None:
    """The Rfmcube document a shop record changes, as the emulator's request
    log names it (``("orders", "12")``); None for a tombstone."""
    if value is None:
        return None
    payload = orjson.loads(value)
    payload = payload.get("payload", payload)
    row = payload["after"] or payload["before"]
    if topic.endswith(".customers"):
        return ("customers", str(row["id"]))
    if topic.endswith(".orders"):
        return ("orders", str(row["id"]))
    return ("orders", str(row["order_id"]))


def state_difference(got: dict[str, Any], want: dict[str, Any]) -> str:
    """The first difference between two ``/_emulator/state`` answers, for a person."""
    got_by = {c["email"]: c for c in got.get("customers", [])}
    want_by = {c["email"]: c for c in want["customers"]}
    missing = sorted(set(want_by) - set(got_by))
    extra = sorted(set(got_by) - set(want_by))
    if missing or extra:
        return f"customers missing in Rfmcube: {missing[:5]}, not in the shop: {extra[:5]}"
    for email, customer in want_by.items():
        if got_by[email] != customer:
            fields = sorted(
                k
                for k in set(customer) | set(got_by[email])
                if customer.get(k) != got_by[email].get(k)
            )
            shown = {k: (got_by[email].get(k), customer.get(k)) for k in fields if k != "notes"}
            return f"customer {email}: fields {fields} differ (Rfmcube, shop): {shown!r}"[:3000]
    return "customers in a different order"
