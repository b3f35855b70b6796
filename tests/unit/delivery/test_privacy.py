"""Anonymizing a deleted customer: a stable keyed hash for an email, nothing that
identifies the person, the key never shown."""

from __future__ import annotations

import pytest

from consumer.changes.mapping.model import CustomerDelete
from consumer.delivery.privacy import Anonymizer
from schemas.entities import Kind, MappedRow

POLICY = CustomerDelete(policy="anonymize", email_domain="anon.example.com", keep=("newsletter",))


def _row() -> MappedRow:
    fields = {
        "id": "7",
        "email": "Ada@Example.com",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-02T00:00:00Z",
        "newsletter": True,
        "phone": "555",
    }
    return MappedRow(Kind.CUSTOMER, "7", fields, None, "Ada@Example.com")


def test_the_document_keeps_only_what_identifies_no_one() -> None:
    doc = Anonymizer(b"k", POLICY).document(_row())
    assert set(doc) == {"id", "email", "createdAt", "updatedAt", "newsletter"}
    assert doc["email"].endswith("@anon.example.com") and "ada" not in doc["email"].lower()


def test_the_same_email_always_hashes_alike_and_another_key_differently() -> None:
    one, same, other = Anonymizer(b"k", POLICY), Anonymizer(b"k", POLICY), Anonymizer(b"j", POLICY)
    assert one.email("ada@example.com", "7") == same.email(" ADA@example.com", "7")
    assert one.email("ada@example.com", "7") != other.email("ada@example.com", "7")
    assert one.email(None, "7") != one.email(None, "8")  # no email: the customer's key


def test_the_key_is_never_shown_and_is_required() -> None:
    assert "secret" not in repr(Anonymizer(b"secret", POLICY))
    with pytest.raises(ValueError, match="key"):
        Anonymizer(b"", POLICY)
