"""The whole configuration, :class:`Settings`: its sections, and which source of a
key wins (the environment, then the secret files, then the YAML file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from consumer.changes.limits import LimitsConfig
from consumer.config.api_sections import ApiConfig, PacingConfig
from consumer.config.kafka_sections import KafkaConfig
from consumer.config.service_sections import PrivacyConfig, ServiceConfig, StoreConfig

ENV_PREFIX = "RFMCUBE_CDC__"
NESTING = "__"


class Settings(BaseSettings):
    """The whole configuration; the API key is ``api_key`` (``api.key``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTING,
        extra="forbid",
        frozen=True,
        secrets_dir_missing="error",
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig, description="the Kafka cluster")
    # Validated even when absent: it finds the API key.
    api: ApiConfig = Field(
        default_factory=dict, validate_default=True, description="the Rfmcube API"
    )
    pacing: PacingConfig = Field(
        default_factory=PacingConfig, description="the request budget and how sends are paced"
    )
    store: StoreConfig = Field(default_factory=StoreConfig, description="the state store")
    service: ServiceConfig = Field(
        default_factory=ServiceConfig, description="the process: health server, logs, shutdown"
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,
        description="a record past one of these is dead-lettered, with the reason",
    )
    privacy: PrivacyConfig = Field(
        default_factory=dict,
        validate_default=True,
        description="the key of the anonymizing hash (customer_delete: anonymize)",
    )
    mapping: Path | None = Field(
        default=None,
        description="the mapping file, relative to this file; null: the reference shop's"
        " (consumer/default_mapping.yaml)",
    )

    @property
    def api_key(self) -> SecretStr:
        return self.api.key

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: environment, secret files, the YAML (given as init
        # arguments); nested sections are merged key by key.
        return env_settings, NestedSecretsSettingsSource(file_secret_settings), init_settings
