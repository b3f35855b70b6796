"""The ``api`` and ``pacing`` sections: the Rfmcube API, its key (never from the
YAML), and the budget of requests to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from consumer.config.section import _Section

API_KEY_ENV = "RFMCUBE_API_KEY"


class ApiConfig(_Section):
    # Before base_url, which reads it: http:// sends the key in clear.
    allow_insecure_http: bool = Field(
        default=False,
        description="allow an http:// base_url, which sends the key in clear (a local emulator)",
    )
    base_url: str = Field(
        default="https://api.rfmcube.com/v1", description="the Rfmcube API, up to its /v1"
    )
    key_file: Path | None = Field(
        default=None,
        description=f"a file holding the API key (a mounted secret), read when ${API_KEY_ENV}"
        " is not set",
    )
    timeout_seconds: float = Field(
        default=30.0, gt=0, description="how long a request may take, before its body's upload"
    )
    # A request's timeout grows with its body: timeout_seconds + bytes / this rate.
    upload_bytes_per_second: int = Field(
        default=1_000_000,
        gt=0,
        description="the slowest upload accepted: a request's timeout grows by its bytes / this",
    )
    # A Retry-After beyond this is logged and cut to it.
    max_retry_after_seconds: float = Field(
        default=600.0, gt=0, description="the longest Retry-After obeyed; a longer one is cut"
    )
    max_request_bytes: int = Field(
        default=200_000_000,
        gt=1000,
        description="imports are packed below this many bytes (the API refuses 200 MB)",
    )
    acceptance: Literal["process_id", "completed"] = Field(
        default="process_id",
        description="when an import counts as accepted for commits: its processId, or its"
        " process completed",
    )
    trigger_integrations: bool = Field(
        default=False,
        description="the API's triggerIntegrations flag, sent with every upsert",
    )
    _key: SecretStr = PrivateAttr(default=SecretStr(""))

    @property
    def key(self) -> SecretStr:
        return self._key

    @field_validator("base_url")
    @classmethod
    def _url_keeps_the_key_private(cls, url: str, info: ValidationInfo) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise PydanticCustomError(
                "url",
                "must be an https:// URL such as {example}",
                {"example": "https://api.rfmcube.com/v1"},
            )
        if parts.scheme == "http" and not info.data.get("allow_insecure_http"):
            raise PydanticCustomError(
                "insecure_url",
                "http:// would send the API key in clear: use https://, or set "
                "api.allow_insecure_http: true for a local emulator",
            )
        return url.rstrip("/")

    @model_validator(mode="after")
    def _find_the_key(self) -> ApiConfig:
        key = os.environ.get(API_KEY_ENV, "")
        if not key and self.key_file is not None:
            try:
                key = self.key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise PydanticCustomError(
                    "api_key", "cannot read the key file: {reason}", {"reason": exc.strerror}
                ) from None
        if not key:
            raise PydanticCustomError(
                "api_key",
                f"no API key: set the environment variable {API_KEY_ENV} or api.key_file",
            )
        self._key = SecretStr(key)
        return self


class PacingConfig(_Section):
    requests_per_minute: int = Field(
        default=60,
        gt=0,
        description="the API key's whole budget, whatever the number of replicas; requests"
        " are spaced 60 / this seconds apart",
    )
    # The length of the API's sliding window; only tests shorten it.
    window_seconds: float = Field(
        default=60.0, gt=0, description="the API's rate-limit window (only tests change it)"
    )
    min_window_seconds: float = Field(
        default=1.0,
        ge=0,
        description="changes are kept together this long before a send (bursts coalesce)",
    )
