"""The ``kafka`` section and its ``schema_registry``.

What kafka-python would only find when it connects is refused here: a security
protocol or SASL mechanism whose library is missing, an ``ssl_*file`` that does
not exist."""

from __future__ import annotations

import importlib.util
import os
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from consumer import kafka_options
from consumer.config.section import _Section
from consumer.kafka_options import KafkaOptions

_BOOL = TypeAdapter(bool)


def _auto_or_bool(value: Any) -> Any:
    """``auto``, or a boolean as pydantic reads one: one error, not one per branch."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        raise ValueError("should be true, false or auto") from None


def _no_use_without_url(value: Any, info: ValidationInfo) -> None:
    if value is not None and info.data.get("url") is None and "url" in info.data:
        raise PydanticCustomError(
            "registry_url", "has no use without kafka.schema_registry.url: set it, or remove this"
        )


def _refuse_in_clear(info: ValidationInfo) -> None:
    """Credentials for a registry reached over plain http:// are refused."""
    url = info.data.get("url")
    if (
        isinstance(url, str)
        and url.startswith("http://")
        and not info.data.get("allow_insecure_http")
    ):
        raise PydanticCustomError(
            "insecure_url",
            "would be sent in clear over http://: use https://, or set"
            " kafka.schema_registry.allow_insecure_http: true",
        )


class SchemaRegistryConfig(_Section):
    """``kafka.schema_registry``: where the schemas of Avro records come from.

    ``url`` null: no registry (Avro records are dead-lettered, saying so). The
    password and the token come from the environment or ``--secrets-dir``
    (``RFMCUBE_CDC__KAFKA__SCHEMA_REGISTRY__PASSWORD``) and print as stars."""

    # Before url and the credentials, which read it.
    allow_insecure_http: bool = Field(
        default=False,
        description="allow an http:// registry (credentials in clear): only on a trusted network",
    )
    # Confluent's API (framing confluent): Confluent Schema Registry's root URL,
    # Apicurio's .../apis/ccompat/v7, Redpanda's http://host:8081. Apicurio's own
    # (framing apicurio): .../apis/registry/v2.
    url: str | None = Field(
        default=None,
        description="the schema registry of Avro records (Confluent's API, or Apicurio's"
        " own with framing apicurio); null: no registry",
    )
    # confluent: magic byte 0 + a 4-byte id (Confluent, Apicurio's as-confluent,
    # Redpanda, Karapace); apicurio: the 8-byte globalId in the record headers.
    framing: Literal["confluent", "apicurio"] = Field(
        default="confluent",
        description="confluent: magic byte 0 and a 4-byte schema id; apicurio: the"
        " globalId in the record's headers",
    )
    username: str | None = Field(default=None, description="basic auth's user, if any")
    password: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="basic auth's password (from the environment or --secrets-dir)",
    )
    bearer_token: SecretStr | None = Field(
        default=None, description="a bearer token instead (from the environment or --secrets-dir)"
    )
    ca_file: Path | None = Field(
        default=None, description="PEM file of the CAs that sign the registry's certificate"
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="per request to the registry")
    max_schemas: int = Field(
        default=1000, ge=1, description="schemas kept in memory (each a few KB)"
    )

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise PydanticCustomError(
                "url",
                "must be an http(s):// URL such as {example}",
                {"example": "https://registry.example:8081"},
            )
        if parts.username is not None or parts.password is not None:
            raise PydanticCustomError(
                "url_credentials",
                "holds credentials, which would show in logs: set kafka.schema_registry.username"
                " and its password (from the environment or --secrets-dir) instead",
            )
        if parts.query or parts.fragment:
            raise PydanticCustomError("url", "must have no query or fragment")
        return url.rstrip("/")

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None, info: ValidationInfo) -> str | None:
        _no_use_without_url(value, info)
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        user = info.data.get("username")
        if value is None:
            if user is not None:
                raise PydanticCustomError(
                    "registry_password",
                    "missing beside username: set RFMCUBE_CDC__KAFKA__SCHEMA_REGISTRY__PASSWORD"
                    " (or that file in --secrets-dir)",
                )
            return None
        _no_use_without_url(value, info)
        if user is None and "username" in info.data:
            raise PydanticCustomError("registry_password", "needs kafka.schema_registry.username")
        _refuse_in_clear(info)
        return value

    @field_validator("bearer_token")
    @classmethod
    def _token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            return None
        _no_use_without_url(value, info)
        if info.data.get("username") is not None:
            raise PydanticCustomError(
                "registry_auth", "and username/password both set: use one or the other"
            )
        _refuse_in_clear(info)
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        _no_use_without_url(path, info)
        url = info.data.get("url")
        if isinstance(url, str) and not url.startswith("https://"):
            raise PydanticCustomError("ca_file", "is for an https:// url only")
        try:
            ssl.create_default_context(cafile=str(path))
        except ssl.SSLError:  # an OSError too: first
            raise PydanticCustomError("ca_file", "holds no PEM certificate") from None
        except OSError as exc:
            raise PydanticCustomError(
                "ca_file", "cannot be read: {reason}", {"reason": exc.strerror or str(exc)}
            ) from None
        return path


class KafkaConfig(_Section):
    bootstrap_servers: str = Field(
        default="127.0.0.1:29092",
        description="the Kafka brokers to start from, host:port[,host:port...]",
    )
    group_id: str = Field(
        default="rfmcube-cdc",
        description="the consumer group: every replica of one deployment joins it",
    )
    client_id: str = Field(
        default="rfmcube-cdc", description="the client name the brokers log and quota by"
    )
    dead_letter_topic: str = Field(
        default="rfmcube-cdc.dead-letters",
        description="where records and documents that cannot be delivered go (create it)",
    )
    max_pending_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="read records not yet applied, in bytes, above which reading pauses",
    )
    # The consumer in a child process of its own: 1.15-1.4x the records/s of a
    # catch-up where a second core is free (bench/README.md). "auto": when the
    # service may use 1.5 CPUs or more (its affinity and its cgroup's quota: a
    # pod's CPU limit); on one core the two processes only compete.
    consumer_process: Annotated[bool | Literal["auto"], BeforeValidator(_auto_or_bool)] = Field(
        default="auto",
        description="the Kafka consumer in a process of its own; auto: from 1.5 CPUs available",
    )
    # Passed to kafka-python (security_protocol, sasl_*, ssl_*...), checked
    # against its own option list; credentials print as stars.
    extra: KafkaOptions = Field(
        default_factory=dict,
        repr=False,
        description="kafka-python consumer options: security_protocol, sasl_*, ssl_*,"
        " session_timeout_ms... (the configuration reference lists them)",
    )
    schema_registry: SchemaRegistryConfig = Field(
        default_factory=SchemaRegistryConfig,
        description="where the schemas of Avro records come from (docs/debezium.md)",
    )

    @field_validator("extra")
    @classmethod
    def _options_work_together(cls, extra: dict[str, Any]) -> dict[str, Any]:
        problems = kafka_options.combination_problems(extra) + _usable_here(extra)
        if problems:
            # One error per option is unpacked by _problems().
            raise PydanticCustomError(
                "kafka_options",
                "{count} options do not work together",
                {"count": len(problems), "problems": problems},
            )
        return extra

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        yield from super().__repr_args__()
        yield "extra", kafka_options.masked(self.extra)


# Files kafka-python opens only when it first connects.
_SSL_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_crlfile")
# Python packages kafka-python imports only when it first authenticates.
_MECHANISM_PACKAGES = {"GSSAPI": "gssapi", "AWS_MSK_IAM": "botocore"}


def _usable_here(extra: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(option, problem) for security settings kafka-python accepts and then fails
    on at the first connection: a missing library, a missing file, a protocol
    that ignores the options set for it."""
    problems: list[tuple[str, str]] = []
    protocol = str(extra.get("security_protocol", "PLAINTEXT"))
    mechanism = extra.get("sasl_mechanism")
    tls = protocol in ("SSL", "SASL_SSL")
    if tls and importlib.util.find_spec("ssl") is None:
        problems.append(("security_protocol", f"{protocol} needs Python's ssl module"))
    if protocol.startswith("SASL_") and mechanism is None:
        problems.append(("sasl_mechanism", f"is required by security_protocol {protocol}"))
    if mechanism is not None and not protocol.startswith("SASL_"):
        problems.append(
            (
                "security_protocol",
                f"{protocol} does not authenticate: sasl_mechanism {mechanism} needs SASL_SSL"
                " (or SASL_PLAINTEXT)",
            )
        )
    package = _MECHANISM_PACKAGES.get(str(mechanism))
    if package is not None and importlib.util.find_spec(package) is None:
        problems.append(
            (
                "sasl_mechanism",
                f"{mechanism} needs the Python package {package}, which is not installed"
                f" here (pip install {package}, in the image too)",
            )
        )
    if mechanism == "AWS_MSK_IAM" and protocol != "SASL_SSL":
        problems.append(("security_protocol", "sasl_mechanism AWS_MSK_IAM needs SASL_SSL"))
    for name in _SSL_FILES:
        value = extra.get(name)
        if not value:
            continue
        if not tls:
            problems.append((name, f"is not used: security_protocol is {protocol}"))
        elif not Path(value).is_file():
            problems.append((name, f"no such file: {value}"))
        elif not os.access(value, os.R_OK):
            problems.append((name, f"cannot be read by this user: {value}"))
    return problems
