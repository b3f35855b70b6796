"""The ``store``, ``privacy`` and ``service`` sections: the state store, the key of
the anonymizing hash, and the process itself (health server, logs, shutdown)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from consumer.config.section import _Section


class StoreConfig(_Section):
    path: Path = Field(
        default=Path("rfmcube-cdc.db"),
        description="the SQLite store: rows, and what is owed to the API (keep it on a volume)",
    )
    # How long an order whose customer is unknown holds its record for that customer.
    orphan_order_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description="how long an order's record waits for its customer before it is released",
    )
    # Above this many documents owed to the API, reading pauses (resumes at 90 %).
    max_owed_documents: int = Field(
        default=1_000_000,
        gt=0,
        description="documents owed to the API above which reading pauses (resumes at 90 %)",
    )


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


ANONYMIZE_KEY_ENV = "RFMCUBE_ANONYMIZE_KEY"


class PrivacyConfig(_Section):
    """The key of the mapping's ``customer_delete: {policy: anonymize}`` hash:
    ``$RFMCUBE_ANONYMIZE_KEY``, else this file (a mounted secret); never the YAML."""

    anonymize_key_file: Path | None = Field(
        default=None,
        description="a file holding the key of customer_delete: anonymize, read when"
        f" ${ANONYMIZE_KEY_ENV} is not set",
    )
    _key: SecretStr = PrivateAttr(default=SecretStr(""))

    @property
    def anonymize_key(self) -> SecretStr:
        return self._key

    @model_validator(mode="after")
    def _find_the_key(self) -> PrivacyConfig:
        key = os.environ.get(ANONYMIZE_KEY_ENV, "")
        if not key and self.anonymize_key_file is not None:
            try:
                key = self.anonymize_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise PydanticCustomError(
                    "anonymize_key", "cannot read the key file: {reason}", {"reason": exc.strerror}
                ) from None
        self._key = SecretStr(key)
        return self


class ServiceConfig(_Section):
    shutdown_grace_seconds: float = Field(
        default=20.0, ge=0, description="after SIGTERM, how long the last flush may take"
    )
    # /healthz, /readyz, /metrics; null turns the server off.
    health_host: str = Field(
        default="0.0.0.0", description="the address /healthz, /readyz and /metrics listen on"
    )
    health_port: int | None = Field(
        default=8080,
        ge=0,
        le=65535,
        description="their port, also asked by resync; null: no server",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="one JSON object per line, or plain text"
    )
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = (
        Field(default="INFO", description="the least severe level logged")
    )
