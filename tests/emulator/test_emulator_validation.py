"""400 for malformed bodies, naming the offending field's path; nothing is applied."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from testkit.emulator import EmulatorProcess
from testkit.emulator_api import Api, customer, import_body, order


def _without(document: dict[str, Any], field: str) -> dict[str, Any]:
    return {name: value for name, value in document.items() if name != field}


def _import_with_bad_fourth_customer(bad_customer: dict[str, Any]) -> dict[str, Any]:
    good = [customer(f"c{i}@example.com", str(i)) for i in range(3)]
    return import_body(*good, bad_customer)


@pytest.mark.parametrize("field", ["email", "createdAt", "updatedAt"])
async def test_import_names_a_missing_customer_field(
    api: Api, emulator: EmulatorProcess, field: str
) -> None:
    bad = _without(customer("d@example.com", "4"), field)
    answer = await api.post("import", _import_with_bad_fourth_customer(bad))
    assert answer.status == 400
    assert answer.body == {"status": 400, "message": f"customers[3].{field} is mandatory"}
    assert emulator.state() == {"customers": []}


@pytest.mark.parametrize("field", ["id", "createdAt", "updatedAt", "amount"])
async def test_import_names_a_missing_order_field(api: Api, field: str) -> None:
    orders = [order("o1"), _without(order("o2"), field)]
    bad = customer("d@example.com", "4", orders=orders)
    answer = await api.post("import", _import_with_bad_fourth_customer(bad))
    assert answer.status == 400
    assert answer.body["message"] == f"customers[3].orders[1].{field} is mandatory"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("email", "", "customers[0].email must be a non-empty string"),
        ("email", 12, "customers[0].email must be a non-empty string"),
        ("createdAt", "2020-01-01 13:06:39", "customers[0].createdAt must be an ISO-8601"),
        ("createdAt", "2020-01-01T13:06:39+02:00", "customers[0].createdAt must be an ISO-8601"),
        ("updatedAt", "2020-13-01T13:06:39Z", "customers[0].updatedAt must be an ISO-8601"),
        ("updatedAt", 1577884000, "customers[0].updatedAt must be an ISO-8601"),
        ("id", True, "customers[0].id must be a non-empty string or an integer"),
    ],
)
async def test_import_names_an_ill_typed_customer_field(
    api: Api, field: str, value: Any, expected: str
) -> None:
    bad = customer("a@example.com", "1")
    bad[field] = value
    answer = await api.post("import", import_body(bad))
    assert answer.status == 400
    assert answer.body["message"].startswith(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("85.85", "customers[0].orders[0].amount must be a number"),
        (True, "customers[0].orders[0].amount must be a number"),
        (None, "customers[0].orders[0].amount is mandatory"),
    ],
)
async def test_import_refuses_an_amount_that_is_not_a_number(
    api: Api, value: Any, expected: str
) -> None:
    bad_order = order("o1")
    bad_order["amount"] = value
    answer = await api.post("import", import_body(customer("a@x", "1", orders=[bad_order])))
    assert answer.status == 400
    assert answer.body["message"] == expected


async def test_timestamps_with_fractional_seconds_are_accepted(
    api: Api, emulator: EmulatorProcess
) -> None:
    document = customer("a@example.com", "1", createdAt="2011-12-03T10:15:30.123456Z")
    answer = await api.post("merge_customer", {"customer": document})
    assert answer.status == 200


async def test_malformed_json_is_400(api: Api) -> None:
    answer = await api.send("POST", "merge_customer", b'{"customer": {"email": ')
    assert answer.status == 400
    assert answer.body["status"] == 400
    assert "not valid JSON" in answer.body["message"]


async def test_a_body_that_is_not_an_object_is_400(api: Api) -> None:
    answer = await api.send("POST", "import", b"[1, 2]")
    assert answer.status == 400


async def test_import_needs_a_customer_list(api: Api) -> None:
    missing = await api.post("import", {"overwriteDescriptors": False})
    wrong = await api.post("import", {"customers": {"email": "a@x"}})
    assert (missing.body["message"], wrong.body["message"]) == (
        "customers is mandatory",
        "customers must be a list",
    )


async def test_overwrite_descriptors_without_any_order_is_400(api: Api) -> None:
    answer = await api.post("import", import_body(customer("a@x", "1"), overwrite=True))
    assert answer.status == 400
    assert "overwriteDescriptors" in answer.body["message"]


async def test_overwrite_descriptors_with_an_order_is_accepted(api: Api) -> None:
    body = import_body(customer("a@x", "1"), customer("b@x", orders=[order("1")]), overwrite=True)
    answer = await api.post("import", body)
    assert answer.status == 200


@pytest.mark.parametrize("field", ["email", "createdAt", "updatedAt"])
async def test_merge_customer_names_the_missing_field(api: Api, field: str) -> None:
    answer = await api.post("merge_customer", {"customer": _without(customer("a@x"), field)})
    assert answer.status == 400
    assert answer.body["message"] == f"customer.{field} is mandatory"


@pytest.mark.parametrize("field", ["id", "createdAt", "updatedAt", "amount"])
async def test_merge_order_names_the_missing_field(api: Api, field: str) -> None:
    document = _without(order("1", customerEmail="a@x"), field)
    answer = await api.post("merge_order", {"order": document})
    assert answer.status == 400
    assert answer.body["message"] == f"order.{field} is mandatory"


async def test_merge_order_needs_the_customer_email_or_id(
    api: Api, emulator: EmulatorProcess
) -> None:
    answer = await api.post("merge_order", {"order": order("1")})
    assert answer.status == 400
    assert answer.body["message"] == "order.customerEmail or order.customerId is mandatory"
    assert emulator.state() == {"customers": []}


async def test_merge_calls_need_their_document(api: Api) -> None:
    no_customer = await api.post("merge_customer", {"triggerIntegrations": False})
    no_order = await api.post("merge_order", {"triggerIntegrations": False})
    assert no_customer.body["message"] == "customer is mandatory"
    assert no_order.body["message"] == "order is mandatory"


async def test_delete_customer_needs_an_id_or_email(api: Api) -> None:
    answer = await api.post("delete_customer", {})
    assert answer.status == 400
    assert answer.body["message"] == "id or email is mandatory"


async def test_flags_must_be_booleans(api: Api) -> None:
    answer = await api.post("merge_customer", {"triggerIntegrations": "yes", "customer": {}})
    assert answer.status == 400
    assert answer.body["message"] == "triggerIntegrations must be a boolean"


async def test_items_must_be_a_list_of_objects(api: Api) -> None:
    document = order("1", customerEmail="a@x", items=[{"sku": "A"}, 3])
    answer = await api.post("merge_order", {"order": document})
    assert answer.status == 400
    assert answer.body["message"] == "order.items[1] must be a JSON object"


async def test_a_400_takes_a_rate_slot(api: Api, emulator: EmulatorProcess) -> None:
    emulator.reset(requests_per_minute=1, window_seconds=30)
    first = await api.post("merge_customer", {"customer": {}})
    second = await api.post("merge_customer", {"customer": customer("a@x", amount=Decimal(1))})
    assert (first.status, second.status) == (400, 429)
