"""The mapping file: what a wrong file says, and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.changes.mapping import Mapping
from consumer.errors import ConfigError
from schemas.entities import Kind

VALID = """\
entities:
  customers:
    topic: shop.public.customers
    columns:
      id: id
      created_at: {field: createdAt, type: zoned_timestamp}
      updated_at: {field: updatedAt, type: zoned_timestamp}
    descriptors: [first_name]
  orders:
    topic: shop.public.orders
    columns:
      id: id
      created_at: createdAt
      updated_at: updatedAt
      amount: {field: amount, type: "decimal(2)"}
  items:
    topic: shop.public.order_items
    columns:
      id: item_id
"""


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Mapping.from_text(text, source="shop.yaml")
    return caught.value


def test_a_minimal_file_loads_with_defaults() -> None:
    mapping = Mapping.from_text(VALID)
    assert mapping.topics() == [
        "shop.public.customers",
        "shop.public.orders",
        "shop.public.order_items",
    ]
    assert mapping.kind_of("shop.public.order_items") is Kind.ITEM
    assert mapping.kind_of("shop.public.payments") is None
    assert mapping.hints_for("shop.public.orders") == {"amount": "decimal(2)"}
    assert mapping.order_delete.policy == "mark"
    assert mapping.order_delete.status == "deleted"


def test_unknown_key_is_named_with_the_keys_allowed_there() -> None:
    error = refused(VALID.replace("    columns:\n      id: item_id", "    colums:\n      id: x"))
    assert error.path == "entities.items.colums"
    assert "unknown key 'colums'" in error.problem
    assert "columns" in error.problem and "order_id" in error.problem
    assert str(error).startswith("shop.yaml: entities.items.colums: ")


def test_unknown_key_inside_a_column_spec() -> None:
    error = refused(
        VALID.replace("{field: item_id}", "").replace(
            "id: item_id", "id: {field: item_id, typ: int}"
        )
    )
    assert error.path == "entities.items.columns.id.typ"
    assert error.problem == "unknown key 'typ'; expected one of field, type"


def test_wrong_type_hint_names_the_vocabulary() -> None:
    error = refused(VALID.replace('type: "decimal(2)"', 'type: "decimal(x)"'))
    assert error.path == "entities.orders.columns.amount.type"
    assert error.problem.startswith("unknown type 'decimal(x)'; expected one of decimal(N), ")
    assert "zoned_timestamp" in error.problem


def test_mapping_that_forgets_a_required_field_is_refused() -> None:
    error = refused(VALID.replace('      amount: {field: amount, type: "decimal(2)"}\n', ""))
    assert error.path == "entities.orders.columns"
    assert "required field 'amount'" in error.problem


def test_customer_without_timestamps_is_refused() -> None:
    error = refused(
        VALID.replace("      updated_at: {field: updatedAt, type: zoned_timestamp}\n", "")
    )
    assert error.path == "entities.customers.columns"
    assert "'updatedAt'" in error.problem


def test_bad_order_delete_policy() -> None:
    error = refused(VALID + "order_delete: {policy: drop}\n")
    assert error.path == "order_delete.policy"
    assert "'mark' or 'ignore'" in error.problem and "'drop'" in error.problem


def test_ignore_policy_is_accepted() -> None:
    mapping = Mapping.from_text(VALID + "order_delete: {policy: ignore}\n")
    assert mapping.order_delete.policy == "ignore"


def test_yaml_syntax_error_gives_the_line() -> None:
    error = refused(VALID.replace("    descriptors: [first_name]", "    descriptors: [first_name"))
    assert error.path == "(file)"
    assert "YAML syntax error at line" in error.problem


def test_duplicate_key_is_refused_rather_than_silently_overwritten() -> None:
    error = refused(VALID.replace("      id: item_id\n", "      id: item_id\n      id: other\n"))
    assert error.path == "(file)"
    assert error.problem == "YAML syntax error at line 20, column 7: duplicate key 'id'"


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        Mapping.load(missing)
    assert caught.value.path == "(file)"
    assert caught.value.source == str(missing)
    assert "not found" in caught.value.problem


def test_loads_a_file_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(VALID)
    assert Mapping.load(path).kind_of("shop.public.customers") is Kind.CUSTOMER
    assert Mapping.load(str(path)).source == str(path)


def test_empty_or_non_mapping_file_is_refused() -> None:
    assert "empty" in refused("").problem
    assert "expected a mapping" in refused("- a\n- b\n").problem


def test_missing_entity_is_named() -> None:
    error = refused("entities:\n  customers: {topic: a, email: email}\n")
    assert error.path == "entities.orders"
    assert error.problem.startswith("required key is missing")


def test_a_field_fed_twice_is_refused() -> None:
    error = refused(VALID.replace("descriptors: [first_name]", "descriptors: [{first_name: id}]"))
    assert error.path == "entities.customers.descriptors.first_name"
    assert "field 'id' is already fed at entities.customers.columns.id" in error.problem


def test_a_field_nested_under_another_field_is_refused() -> None:
    text = VALID.replace(
        "      id: item_id\n", "      id: item_id\n      brand: meta\n      sku: meta.sku\n"
    )
    error = refused(text)
    assert error.path == "entities.items.columns.sku"
    assert "overlaps the field 'meta'" in error.problem


def test_document_keys_are_reserved() -> None:
    # an item may have a field named "items"...
    Mapping.from_text(VALID.replace("      id: item_id", "      id: item_id\n      x: items"))
    text = VALID.replace("      amount: {field", "      lines: items\n      amount: {field")
    error = refused(text)
    assert error.path == "entities.orders.columns.lines"  # ...an order may not
    assert "reserved" in error.problem


def test_id_must_come_from_a_key_column() -> None:
    error = refused(
        VALID.replace(
            "      id: id\n      created_at: createdAt",
            "      ref: id\n      created_at: createdAt",
        )
    )
    assert error.path == "entities.orders.columns.ref"
    assert "key column" in error.problem


def test_two_entities_on_one_topic_are_refused() -> None:
    error = refused(VALID.replace("topic: shop.public.order_items", "topic: shop.public.orders"))
    assert error.path == "entities.items.topic"
    assert "already the orders topic" in error.problem


def test_invalid_field_path() -> None:
    error = refused(VALID.replace("id: item_id", "id: item..id"))
    assert error.path == "entities.items.columns.id.field"
    assert "invalid field name 'item..id'" in error.problem


def test_type_hints_are_normalized_for_the_decoder() -> None:
    mapping = Mapping.from_text(VALID.replace('"decimal(2)"', '" decimal( 3 ) "'))
    assert mapping.hints_for("shop.public.orders") == {"amount": "decimal(3)"}


def test_descriptor_listed_twice() -> None:
    error = refused(VALID.replace("[first_name]", "[first_name, first_name]"))
    assert error.path == "entities.customers.descriptors"
    assert "listed twice" in error.problem


def test_wrong_value_type_says_what_it_got() -> None:
    error = refused(VALID.replace("topic: shop.public.orders", "topic: [a, b]"))
    assert error.path == "entities.orders.topic"
    assert "got ['a', 'b']" in error.problem


def test_all_errors_are_reported_the_first_as_path() -> None:
    text = (
        VALID.replace("colums", "")
        .replace('type: "decimal(2)"', 'type: "money"')
        .replace("    descriptors: [first_name]", "    descriptors: [first_name]\n    extra: 1")
    )
    error = refused(text)
    assert error.path == "entities.customers.extra"
    assert "entities.orders.columns.amount.type: unknown type 'money'" in error.problem


def test_order_needs_a_way_to_name_its_customer() -> None:
    text = VALID.replace(
        "    topic: shop.public.orders\n", "    topic: shop.public.orders\n    customer_id: null\n"
    )
    error = refused(text)
    assert error.path == "entities.orders.customer_id"


def test_default_mapping_ships_with_the_package() -> None:
    mapping = Mapping.load(None)
    assert mapping.kind_of("shop.public.customers") is Kind.CUSTOMER
    assert mapping.kind_of("shop.public.orders") is Kind.ORDER
    assert mapping.kind_of("shop.public.order_items") is Kind.ITEM
    assert mapping.hints_for("shop.public.orders")["amount"] == "decimal(2)"
    assert mapping.hints_for("shop.public.orders")["created_at"] == "zoned_timestamp"
    assert mapping.hints_for("shop.public.order_items")["unit_price"] == "decimal(2)"
    assert "password_hash" not in mapping.hints_for("shop.public.customers")
