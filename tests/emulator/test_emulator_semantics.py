"""What the calls do to the account: matching, replacement, moves, deletes, exact numbers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from testkit.emulator import EmulatorProcess
from testkit.emulator_api import STAMP, Api, customer, import_body, order

LATER = "2021-06-01T08:00:00Z"


def _customers(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    customers: list[dict[str, Any]] = emulator.state()["customers"]
    return customers


def _orders_by_customer(emulator: EmulatorProcess) -> dict[str, list[str]]:
    return {
        str(c.get("id") or c["email"]): [o["id"] for o in c["orders"]] for c in _customers(emulator)
    }


async def test_merge_customer_stores_the_customer_as_sent(
    api: Api, emulator: EmulatorProcess
) -> None:
    sent = customer("a@example.com", "1", firstName="Ada", delivery={"province": "MI"})
    answer = await api.post("merge_customer", {"triggerIntegrations": False, "customer": sent})
    assert answer.status == 200
    assert answer.body == {"status": "ok"}
    assert _customers(emulator) == [{**sent, "orders": []}]


async def test_customers_are_matched_by_id_first(api: Api, emulator: EmulatorProcess) -> None:
    await api.post("merge_customer", {"customer": customer("old@example.com", "1")})
    await api.post("merge_customer", {"customer": customer("other@example.com", "2")})
    await api.post("merge_customer", {"customer": customer("new@example.com", "1")})
    assert [(c["id"], c["email"]) for c in _customers(emulator)] == [
        ("1", "new@example.com"),
        ("2", "other@example.com"),
    ]


async def test_a_guest_is_matched_by_email(api: Api, emulator: EmulatorProcess) -> None:
    await api.post("merge_customer", {"customer": customer("guest@example.com", tier="a")})
    await api.post("merge_customer", {"customer": customer("guest@example.com", tier="b")})
    assert [(c["email"], c["tier"]) for c in _customers(emulator)] == [("guest@example.com", "b")]


async def test_a_guest_who_registers_keeps_their_orders(
    api: Api, emulator: EmulatorProcess
) -> None:
    guest_order = order("o1", customerEmail="guest@example.com")
    await api.post("merge_order", {"order": guest_order})
    await api.post("merge_customer", {"customer": customer("guest@example.com", "42")})
    assert _orders_by_customer(emulator) == {"42": ["o1"]}


async def test_merge_customer_replaces_the_fields_and_keeps_the_orders(
    api: Api, emulator: EmulatorProcess
) -> None:
    first = customer("a@example.com", "1", firstName="Ada", city="Milano", orders=[order("o1")])
    await api.post("import", import_body(first))
    second = customer("a@example.com", "1", firstName="Ada L.", updatedAt=LATER)
    await api.post("merge_customer", {"customer": second})
    [stored] = _customers(emulator)
    assert "city" not in stored
    assert stored["firstName"] == "Ada L."
    assert stored["updatedAt"] == LATER
    assert [o["id"] for o in stored["orders"]] == ["o1"]


async def test_merge_customer_ignores_orders_in_its_body(
    api: Api, emulator: EmulatorProcess
) -> None:
    sent = customer("a@example.com", "1", orders=[order("o1")])
    await api.post("merge_customer", {"customer": sent})
    assert _orders_by_customer(emulator) == {"1": []}


async def test_import_upserts_listed_orders_and_leaves_others_alone(
    api: Api, emulator: EmulatorProcess
) -> None:
    await api.post("import", import_body(customer("a@x", "1", orders=[order("o1"), order("o2")])))
    changed = order("o2", amount=Decimal("10.00"))
    await api.post("import", import_body(customer("a@x", "1", orders=[changed, order("o3")])))
    [stored] = _customers(emulator)
    assert [(o["id"], o["amount"]) for o in stored["orders"]] == [
        ("o1", Decimal("85.85")),
        ("o2", Decimal("10.00")),
        ("o3", Decimal("85.85")),
    ]


async def test_an_order_sent_again_is_replaced_entirely_items_included(
    api: Api, emulator: EmulatorProcess
) -> None:
    first = order(
        "o1",
        customerEmail="a@x",
        status="10",
        note="gift",
        items=[{"item_id": 1, "brand": "nike"}, {"item_id": 2, "brand": "nike"}],
    )
    await api.post("merge_order", {"order": first})
    second = order("o1", customerEmail="a@x", items=[{"item_id": 2, "brand": "adidas"}])
    await api.post("merge_order", {"order": second})
    [stored] = _customers(emulator)[0]["orders"]
    assert stored == {
        "id": "o1",
        "createdAt": STAMP,
        "updatedAt": STAMP,
        "amount": Decimal("85.85"),
        "items": [{"item_id": 2, "brand": "adidas"}],
    }


async def test_an_order_moves_to_the_customer_it_is_sent_with(
    api: Api, emulator: EmulatorProcess
) -> None:
    await api.post("import", import_body(customer("a@x", "1", orders=[order("o1")])))
    await api.post("merge_customer", {"customer": customer("b@x", "2")})
    await api.post("merge_order", {"order": order("o1", customerId="2")})
    assert _orders_by_customer(emulator) == {"1": [], "2": ["o1"]}
    await api.post("import", import_body(customer("a@x", "1", orders=[order("o1")])))
    assert _orders_by_customer(emulator) == {"1": ["o1"], "2": []}


async def test_merge_order_finds_the_customer_by_id_then_email(
    api: Api, emulator: EmulatorProcess
) -> None:
    await api.post("merge_customer", {"customer": customer("a@x", "1")})
    await api.post("merge_customer", {"customer": customer("b@x", "2")})
    await api.post("merge_order", {"order": order("o1", customerId="1", customerEmail="b@x")})
    await api.post("merge_order", {"order": order("o2", customerEmail="b@x")})
    await api.post("merge_order", {"order": order("o3", customerId="9", customerEmail="a@x")})
    assert _orders_by_customer(emulator) == {"1": ["o1", "o3"], "2": ["o2"]}


async def test_merge_order_for_an_unknown_customer_creates_a_guest(
    api: Api, emulator: EmulatorProcess
) -> None:
    sent = order("o1", customerEmail="guest@x", createdAt=LATER, updatedAt=LATER)
    await api.post("merge_order", {"order": sent})
    [guest] = _customers(emulator)
    assert guest["email"] == "guest@x"
    assert "id" not in guest
    assert (guest["createdAt"], guest["updatedAt"]) == (LATER, LATER)
    assert [o["id"] for o in guest["orders"]] == ["o1"]
    assert "customerEmail" not in guest["orders"][0]


async def test_a_guests_dates_span_its_orders(api: Api, emulator: EmulatorProcess) -> None:
    middle = order("o1", customerEmail="g@x", createdAt="2021-01-01T00:00:00Z")
    middle["updatedAt"] = "2021-01-02T00:00:00Z"
    earlier = order("o2", customerEmail="g@x", createdAt="2020-06-01T00:00:00.5Z")
    earlier["updatedAt"] = "2020-06-01T00:00:00.5Z"
    later = order("o3", customerEmail="g@x", createdAt="2021-01-01T00:00:00.25Z")
    later["updatedAt"] = "2021-01-02T00:00:00.25Z"
    for sent in (middle, earlier, later):
        await api.post("merge_order", {"order": sent})
    [guest] = _customers(emulator)
    assert (guest["createdAt"], guest["updatedAt"]) == (
        "2020-06-01T00:00:00.5Z",
        "2021-01-02T00:00:00.25Z",
    )


async def test_a_registered_customers_dates_are_not_touched_by_orders(
    api: Api, emulator: EmulatorProcess
) -> None:
    await api.post("merge_customer", {"customer": customer("a@x", "1")})
    await api.post("merge_order", {"order": order("o1", customerId="1", updatedAt=LATER)})
    [stored] = _customers(emulator)
    assert stored["updatedAt"] == STAMP


async def test_delete_customer_removes_the_customer_and_all_its_orders(
    api: Api, emulator: EmulatorProcess
) -> None:
    await api.post("import", import_body(customer("a@x", "1", orders=[order("o1"), order("o2")])))
    await api.post("merge_customer", {"customer": customer("b@x", "2")})
    answer = await api.post("delete_customer", {"id": "1", "email": "a@x"})
    assert answer.body == {"status": "ok", "deleted": 1}
    assert _orders_by_customer(emulator) == {"2": []}
    # The deleted orders are gone for good: sending one again creates it afresh.
    await api.post("merge_order", {"order": order("o1", customerId="2")})
    assert _orders_by_customer(emulator) == {"2": ["o1"]}


async def test_delete_customer_looks_up_by_id_first_then_email(
    api: Api, emulator: EmulatorProcess
) -> None:
    await api.post("merge_customer", {"customer": customer("a@x", "1")})
    await api.post("merge_customer", {"customer": customer("b@x", "2")})
    await api.post("merge_customer", {"customer": customer("guest@x")})
    await api.post("delete_customer", {"id": "2", "email": "a@x"})
    assert _orders_by_customer(emulator).keys() == {"1", "guest@x"}
    await api.post("delete_customer", {"email": "guest@x"})
    await api.post("delete_customer", {"id": "404", "email": "a@x"})
    assert _customers(emulator) == []


async def test_deleting_an_unknown_customer_is_ok_and_deletes_nothing(
    api: Api, emulator: EmulatorProcess
) -> None:
    await api.post("merge_customer", {"customer": customer("a@x", "1")})
    answer = await api.post("delete_customer", {"id": "2"})
    assert (answer.status, answer.body) == (200, {"status": "ok", "deleted": 0})
    assert len(_customers(emulator)) == 1


async def test_amounts_and_descriptors_keep_their_exact_decimal_value(
    api: Api, emulator: EmulatorProcess
) -> None:
    # Sent as raw JSON text: 0.1 + 0.2 in binary floating point would be 0.30000000000000004.
    body = (
        b'{"customers": [{"email": "a@x", "id": "1", "createdAt": "2020-01-01T13:06:39Z",'
        b' "updatedAt": "2020-01-01T13:06:39Z", "score": 0.30, "orders": [{"id": "o1",'
        b' "createdAt": "2020-01-01T13:30:39Z", "updatedAt": "2020-01-01T13:30:39Z",'
        b' "amount": 85.85, "tax": 0.1, "discount": 0.2, "big": 12345678901234567890.123456789,'
        b' "items": [{"price": 19.99, "qty": 3}]}]}]}'
    )
    answer = await api.send("POST", "import", body)
    assert answer.status == 200
    [stored] = _customers(emulator)
    [stored_order] = stored["orders"]
    assert stored["score"] == Decimal("0.30")
    assert stored_order["amount"] == Decimal("85.85")
    assert stored_order["tax"] + stored_order["discount"] == Decimal("0.3")
    assert stored_order["big"] == Decimal("12345678901234567890.123456789")
    assert stored_order["items"] == [{"price": Decimal("19.99"), "qty": 3}]


async def test_state_text_carries_the_numbers_exactly_as_sent(
    api: Api, emulator: EmulatorProcess
) -> None:
    await api.post(
        "merge_order", {"order": order("o1", customerEmail="a@x", amount=Decimal("85.850"))}
    )
    async with api.session.get(f"{emulator.base}/_emulator/state") as response:
        text = await response.text()
    assert '"amount":85.850' in text
