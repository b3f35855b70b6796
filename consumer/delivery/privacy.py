"""Anonymizing a deleted customer instead of deleting it (``customer_delete: anonymize``).

Rfmcube's own documentation suggests it for consent withdrawals: the customer
stays, with its orders, so the global statistics do not change; what
identifies the person goes. The email becomes a keyed hash (HMAC-SHA-256 of
the lower-cased email, so the same customer always gets the same address and
nobody without the key can tell whose it was) at the domain the mapping sets;
the names and every descriptor not listed in ``keep`` are dropped. Only
Rfmcube's own fields (id, createdAt, updatedAt) and the kept descriptors are
sent.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from consumer.changes.mapping import Mapping
from consumer.changes.mapping.model import CustomerDelete
from consumer.config import ANONYMIZE_KEY_ENV, Settings
from consumer.errors import ConfigError
from schemas.entities import MappedRow
from schemas.rfmcube import customer_document

__all__ = ["Anonymizer", "anonymizer_for"]

_KEPT_ALWAYS = ("id", "createdAt", "updatedAt")


class Anonymizer:
    def __init__(self, key: bytes, policy: CustomerDelete) -> None:
        if not key:
            raise ValueError("anonymizing needs a key")
        self._key = key
        self._domain = policy.email_domain
        self._keep = frozenset(policy.keep)

    def __repr__(self) -> str:
        return f"Anonymizer(domain={self._domain!r})"  # never the key

    def email(self, email: str | None, fallback: str) -> str:
        """The stable keyed hash of the email (of the customer's key, without one)."""
        source = (email or f"customer:{fallback}").strip().lower()
        digest = hmac.new(self._key, source.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{digest[:32]}@{self._domain}"

    def document(self, row: MappedRow) -> dict[str, Any]:
        """The customer as sent once it asked to be forgotten."""
        full = customer_document(row)
        kept = {name: full[name] for name in _KEPT_ALWAYS if name in full}
        kept["email"] = self.email(row.email, row.key)
        kept.update({name: value for name, value in full.items() if name in self._keep})
        return customer_document(MappedRow(row.kind, row.key, kept, row.parent, kept["email"]))


def anonymizer_for(settings: Settings, mapping: Mapping) -> Anonymizer | None:
    """The mapping's anonymizer, with the key of the configuration (checked at start-up)."""
    if mapping.customer_delete.policy != "anonymize":
        return None
    key = settings.privacy.anonymize_key.get_secret_value()
    if not key:
        raise ConfigError(
            "privacy.anonymize_key_file",
            f"the mapping anonymizes deleted customers: set ${ANONYMIZE_KEY_ENV} or"
            " privacy.anonymize_key_file (a mounted secret) to the hash's key",
        )
    return Anonymizer(key.encode("utf-8"), mapping.customer_delete)
