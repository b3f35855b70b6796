"""The service's configuration: one YAML file, validated once at start-up.

Every key has a default except the API key, which comes from the environment
(``RFMCUBE_API_KEY``) or a mounted secret file (``api.key_file``), never from
the YAML itself, so the file can live in a ConfigMap. A wrong key is refused
with its path (``pacing.min_window_seconds: Input should be greater than 0``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from consumer.errors import ConfigError

API_KEY_ENV = "RFMCUBE_API_KEY"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:29092"
    group_id: str = "rfmcube-cdc"
    client_id: str = "rfmcube-cdc"
    dead_letter_topic: str = "rfmcube-cdc.dead-letters"
    max_pending_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Passed to kafka-python as is (security_protocol, sasl_*, ssl_*...).
    extra: dict[str, Any] = Field(default_factory=dict)


class ApiConfig(_Section):
    base_url: str = "https://api.rfmcube.com/v1"
    key_file: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_request_bytes: int = Field(default=200_000_000, gt=1000)
    acceptance: Literal["process_id", "completed"] = "process_id"
    trigger_integrations: bool = False


class PacingConfig(_Section):
    requests_per_minute: int = Field(default=60, gt=0)
    # The length of the API's sliding window; only tests shorten it.
    window_seconds: float = Field(default=60.0, gt=0)
    min_window_seconds: float = Field(default=1.0, ge=0)


class StoreConfig(_Section):
    path: Path = Path("rfmcube-cdc.db")
    # How long an order whose customer is unknown waits for that customer.
    orphan_order_wait_seconds: float = Field(default=30.0, ge=0)


class ServiceConfig(_Section):
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    # /healthz, /readyz, /metrics; null turns the server off.
    health_host: str = "0.0.0.0"
    health_port: int | None = Field(default=8080, ge=0, le=65535)
    log_format: Literal["json", "text"] = "json"


class Settings(_Section):
    """The whole configuration; ``api_key`` is filled from the environment."""

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    pacing: PacingConfig = Field(default_factory=PacingConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    mapping: Path | None = None  # None: the reference shop mapping shipped with the package
    api_key: SecretStr = SecretStr("")


def _error_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_settings(path: str | Path | None, *, environ: dict[str, str] | None = None) -> Settings:
    """Read, validate and complete the configuration; raise ConfigError on any fault."""
    env = dict(os.environ if environ is None else environ)
    source = str(path) if path is not None else None
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError("(file)", "no such file", source=source) from None
        except yaml.YAMLError as exc:
            raise ConfigError("(file)", f"not valid YAML: {exc}", source=source) from None
        if not isinstance(raw, dict):
            raise ConfigError("(top level)", "expected a mapping of sections", source=source)
        if "api_key" in raw or "key" in (raw.get("api") or {}):
            raise ConfigError(
                "api.key",
                f"the API key must not be written in the file: set {API_KEY_ENV} "
                "or api.key_file (a mounted secret)",
                source=source,
            )
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(_error_path(first["loc"]), first["msg"], source=source) from None

    key = env.get(API_KEY_ENV, "")
    if not key and settings.api.key_file is not None:
        try:
            key = settings.api.key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                "api.key_file", f"cannot read the key file: {exc.strerror}", source=source
            ) from None
    if not key:
        raise ConfigError(
            "api.key_file",
            f"no API key: set the environment variable {API_KEY_ENV} or api.key_file",
            source=source,
        )
    if settings.mapping is not None and path is not None and not settings.mapping.is_absolute():
        settings = settings.model_copy(update={"mapping": Path(path).parent / settings.mapping})
    return settings.model_copy(update={"api_key": SecretStr(key)})
