"""A synthetic shop at scale, as Debezium's initial snapshot of it, and what Rfmcube must hold.

:class:`testkit.shop.Shop` keeps every table in memory and writes every
change of a day's work; at a hundred thousand customers that is gigabytes and
hours. This shop is the end state only: customers, orders and their items,
streamed from a seed in the row shapes of ``testkit.shop.COLUMNS`` and the
encodings of the JSON converter without schemas (Connect ``Decimal`` money as
base64, ``ZonedTimestamp`` strings), as snapshot reads (``op: r``). The same
seed gives the same rows again, so :func:`expected_digests` says, row for row,
what Rfmcube must hold under the default mapping (the shapes of
``testkit.shop.expected_state``) without keeping the shop in memory.

Sizes keep the issue's proportion: 5 orders and 15 items per customer; 1 % of
the orders are guest checkouts, each under an email of its own.
"""

from __future__ import annotations

import hashlib
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from schemas.debezium import RawRecord
from testkit.shop import BRANDS, PROVINCES, STATUS_LABELS, encode_row, topics_for

__all__ = ["Digests", "ShopSize", "expected_digests", "snapshot_records", "state_digests"]

_START = datetime(2024, 1, 1, tzinfo=UTC)
_CENT = Decimal("0.01")
_PARTITIONS = 3


@dataclass(frozen=True, slots=True)
class ShopSize:
    customers: int
    orders: int
    items: int
    guest_share: float = 0.01

    @classmethod
    def scaled(cls, customers: int, guest_share: float = 0.01) -> ShopSize:
        return cls(customers, 5 * customers, 15 * customers, guest_share)


Row = dict[str, Any]


def _rows(size: ShopSize, seed: int) -> Iterator[tuple[str, Row, list[Row]]]:
    """(table, row, items) in snapshot order: every customer, then every order with its
    items. Orders go to customers at random; item counts 1..5, three on average."""
    rng = random.Random(seed)
    created = array("q")  # customers' sign-up times (seconds after _START)
    for n in range(1, size.customers + 1):
        since = n * 600 + rng.randint(0, 599)
        created.append(since)
        yield (
            "customers",
            {
                "id": n,
                "email": f"customer{n}@example.com",
                "first_name": rng.choice(["Anna", "Luca", "Sara", "Marco", "Giulia"]),
                "last_name": rng.choice(["Rossi", "Bianchi", "Verdi", "Neri"]),
                "phone": f"+39 02 {n:07d}",
                "password_hash": f"$argon2id$v=19$secret{n}",
                "newsletter": rng.random() < 0.5,
                "notes": None,
                "created_at": _START + timedelta(seconds=since),
                "updated_at": _START + timedelta(seconds=since + rng.randint(0, 30 * 86400)),
            },
            [],
        )
    item_id = 0
    counts: list[int] = []
    for order_id in range(1, size.orders + 1):
        if not counts:
            counts = [1, 2, 3, 4, 5]
            rng.shuffle(counts)
        guest = rng.random() < size.guest_share
        customer = None if guest else rng.randint(1, size.customers)
        since = (created[customer - 1] if customer else 0) + rng.randint(3600, 60 * 86400)
        items: list[Row] = []
        amount = Decimal(0)
        for _ in range(counts.pop()):
            item_id += 1
            price = Decimal(rng.randint(199, 25999)).scaleb(-2)
            quantity = rng.randint(1, 3)
            amount += price * quantity
            items.append(
                {
                    "id": item_id,
                    "order_id": order_id,
                    "product_id": rng.randint(40000, 49999),
                    "sku": f"SKU-{rng.randint(1, 999):03d}",
                    "brand": rng.choice(BRANDS),
                    "quantity": quantity,
                    "unit_price": price,
                }
            )
        status = rng.choice(list(STATUS_LABELS))
        yield (
            "orders",
            {
                "id": order_id,
                "customer_id": customer,
                "customer_email": f"guest{order_id}@example.net" if guest else None,
                "status": status,
                "status_label": STATUS_LABELS[status],
                "amount": amount.quantize(_CENT),
                "currency": "EUR",
                "delivery_province": rng.choice(PROVINCES),
                "created_at": _START + timedelta(seconds=since),
                "updated_at": _START + timedelta(seconds=since + rng.randint(0, 7 * 86400)),
            },
            items,
        )


def snapshot_records(
    size: ShopSize, *, prefix: str, seed: int = 7, batch: int = 5000
) -> Iterator[list[RawRecord]]:
    """The shop as Debezium's snapshot writes it (schemaless JSON), in batches of records
    with made-up partitions and offsets (they never were in Kafka)."""
    topics = topics_for(prefix)
    offsets: dict[tuple[str, int], int] = {}
    moment = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
    out: list[RawRecord] = []
    for table, row, items in _rows(size, seed):
        for name, image in ((table, row), *(("order_items", item) for item in items)):
            topic = topics[name]
            partition = image["id"] % _PARTITIONS
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            value = {
                "before": None,
                "after": encode_row(name, image),
                "source": {
                    "version": "3.6.1.Final",
                    "connector": "postgresql",
                    "name": prefix,
                    "ts_ms": moment,
                    "snapshot": "true",
                    "db": "shop",
                    "schema": "public",
                    "table": name,
                },
                "op": "r",
                "ts_ms": moment,
            }
            out.append(
                RawRecord(
                    topic,
                    partition,
                    offset,
                    orjson.dumps({"id": image["id"]}),
                    orjson.dumps(value),
                    timestamp_ms=moment,
                )
            )
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


# -- what Rfmcube must hold ---------------------------------------------------------------


@dataclass(slots=True)
class Digests:
    """A digest of every customer document (without its orders) by customer (its id, or
    ``@email`` for a guest), and of every order by id, with the customer it is under."""

    customers: dict[str, bytes]
    orders: dict[str, tuple[str, bytes]]
    items: int = 0

    def difference(self, other: Digests, show: int = 5) -> str:
        """'' when equal; else what differs (a few keys of each kind)."""
        lines = []
        for name, mine, theirs in (
            ("customers", self.customers, other.customers),
            ("orders", self.orders, other.orders),
        ):
            missing = sorted(set(theirs) - set(mine))
            extra = sorted(set(mine) - set(theirs))
            differ = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
            if missing or extra or differ:
                lines.append(
                    f"{name}: {len(missing)} missing {missing[:show]}, {len(extra)} not in"
                    f" the shop {extra[:show]}, {len(differ)} different {differ[:show]}"
                )
        return "; ".join(lines)


def _digest(doc: Any) -> bytes:
    canonical = orjson.dumps(doc, default=str, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).digest()


def _zoned(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_digests(size: ShopSize, seed: int = 7) -> Digests:
    """What Rfmcube must hold for the shop of this seed (``testkit.shop.expected_state``'s
    documents, digested one at a time)."""
    digests = Digests({}, {})
    for table, row, items in _rows(size, seed):
        if table == "customers":
            doc = {
                "id": str(row["id"]),
                "email": row["email"],
                "createdAt": _zoned(row["created_at"]),
                "updatedAt": _zoned(row["updated_at"]),
                "firstName": row["first_name"],
                "lastName": row["last_name"],
                "phone": row["phone"],
                "newsletter": row["newsletter"],
            }
            digests.customers[doc["id"]] = _digest(doc)
            continue
        order = {
            "id": str(row["id"]),
            "createdAt": _zoned(row["created_at"]),
            "updatedAt": _zoned(row["updated_at"]),
            "amount": row["amount"],
            "status": row["status"],
            "statusLabel": row["status_label"],
            "currency": row["currency"],
            "delivery": {"province": row["delivery_province"]},
            "items": [
                {
                    "item_id": i["id"],
                    "product_id": i["product_id"],
                    "brand": i["brand"],
                    "sku": i["sku"],
                    "quantity": i["quantity"],
                    "price": i["unit_price"],
                }
                for i in items
            ],
        }
        if row["customer_id"] is not None:
            owner = str(row["customer_id"])
        else:  # a guest checkout: a guest customer of its own, dated by its one order
            owner = f"@{row['customer_email']}"
            guest = {
                "email": row["customer_email"],
                "createdAt": order["createdAt"],
                "updatedAt": order["updatedAt"],
            }
            digests.customers[owner] = _digest(guest)
        digests.orders[order["id"]] = (owner, _digest(order))
        digests.items += len(items)
    return digests


def state_digests(state: dict[str, Any]) -> Digests:
    """The same digests of what the emulator holds (``/_emulator/state``, exact numbers)."""
    digests = Digests({}, {})
    for customer in state["customers"]:
        owner = str(customer["id"]) if customer.get("id") is not None else f"@{customer['email']}"
        digests.customers[owner] = _digest({k: v for k, v in customer.items() if k != "orders"})
        for order in customer["orders"]:
            digests.orders[str(order["id"])] = (owner, _digest(order))
            digests.items += len(order.get("items") or ())
    return digests
