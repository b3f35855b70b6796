"""The service's configuration, validated once at start-up.

Every key has a default except the API key, and each key can come from four
places; the first that sets it wins:

1. the environment: ``RFMCUBE_CDC__<SECTION>__<KEY>``, a double underscore
   per level (``RFMCUBE_CDC__KAFKA__BOOTSTRAP_SERVERS``,
   ``RFMCUBE_CDC__KAFKA__EXTRA__SASL_PLAIN_PASSWORD``);
2. the secrets directory (``--secrets-dir``): one file per key, named like
   the variable and holding the value, as a mounted Kubernetes Secret is;
3. the YAML file (``--config``);
4. the defaults below.

The API key is apart: ``$RFMCUBE_API_KEY``, else the file ``api.key_file`` (a
mounted secret), and never the YAML, so the file can live in a ConfigMap.
Every problem is reported at once, each with the path of its key, what was
probably meant where a name is wrong, and where the value came from
(``kafka.bootstrap_server: Extra inputs are not permitted (did you mean
bootstrap_servers?) [environment variable RFMCUBE_CDC__KAFKA__BOOTSTRAP_SERVER]``);
no message, repr or log line holds a secret. What kafka-python would only find
when it connects is refused here too: a security protocol or SASL mechanism
whose library is missing, an ``ssl_*file`` that does not exist.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import ssl
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from consumer import kafka_options
from consumer.changes.limits import LimitsConfig
from consumer.errors import ConfigError
from consumer.kafka_options import KafkaOptions

API_KEY_ENV = "RFMCUBE_API_KEY"
# What every command reads when it has no --config / --secrets-dir (a second command
# in a pod reads what `run` does: deploy/ sets them).
CONFIG_ENV = "RFMCUBE_CDC_CONFIG"
SECRETS_DIR_ENV = "RFMCUBE_CDC_SECRETS_DIR"
ENV_PREFIX = "RFMCUBE_CDC__"
NESTING = "__"
_API_KEY_HINT = f"the API key is never part of the configuration: set {API_KEY_ENV} or api.key_file"


_BOOL = TypeAdapter(bool)


def _auto_or_bool(value: Any) -> Any:
    """``auto``, or a boolean as pydantic reads one: one error, not one per branch."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        raise ValueError("should be true, false or auto") from None


class _Section(BaseModel):
    # Every key's description is its line in the configuration reference
    # (docs/configuration.md and README.md's sample, made by consumer/cli/reference.py).
    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _problems(error: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One pydantic error as (path, problem) pairs, explained where pydantic's words are not."""
    loc = tuple(str(part) for part in error["loc"])
    kind, message = error["type"], error["msg"]
    if kind == "kafka_options":
        return [(".".join((*loc, name)), problem) for name, problem in error["ctx"]["problems"]]
    if kind == "api_key":
        loc = (*loc, "key_file")
    elif loc == ("api", "key"):
        message = _API_KEY_HINT
    elif kind == "extra_forbidden" and len(loc) == 3 and loc[:2] == ("kafka", "extra"):
        message = kafka_options.why_not_settable(loc[2])
    elif kind == "extra_forbidden":
        message += _did_you_mean(loc[-1], _keys_at(loc[:-1]))
    return [(".".join(loc) or "(top level)", message)]


def _keys_at(section: tuple[str, ...]) -> list[str]:
    """The keys a section of the configuration takes (none where it is no section)."""
    model: type[BaseModel] = Settings
    for name in section:
        field = model.model_fields.get(name)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name.lower(), list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _prefixed(name: str) -> bool:
    return name.upper().startswith(ENV_PREFIX)


def _unknown_names(names: Iterable[str], where: str) -> list[tuple[str, str]]:
    """Variables or secret files with our prefix that name no section: pydantic
    would skip them silently, and a typo would go unnoticed."""
    sections = set(Settings.model_fields)
    problems = []
    for name in names:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        head = name[len(ENV_PREFIX) :].split(NESTING, 1)[0].lower()
        if head == "api_key":
            problems.append((name, _API_KEY_HINT))
        elif head not in sections:
            hint = _did_you_mean(head, sections)
            problems.append(
                (name, f"{where} names no section ({', '.join(sorted(sections))}){hint}")
            )
    return problems


class _Origins:
    """Where each value came from, to say it beside a problem: the environment
    variable, the secret file or the YAML file that set it, in the order the
    configuration's precedence takes them."""

    def __init__(self) -> None:
        self._set: list[tuple[tuple[str, ...], str]] = []  # (path, where), highest first

    def add(self, entries: Iterable[tuple[tuple[str, ...], str]]) -> None:
        self._set.extend(entries)

    def of(self, path: str) -> str | None:
        loc = tuple(path.split("."))
        for where_set, where in self._set:
            common = min(len(where_set), len(loc))
            # The value itself, a whole section it is in (a variable holding JSON),
            # or a value inside the section the problem is about.
            if where_set[:common] == loc[:common]:
                return where
        return None


def _named(names: Iterable[str], where: str) -> Iterator[tuple[tuple[str, ...], str]]:
    """The paths that variables (or secret files) named RFMCUBE_CDC__... set."""
    for name in names:
        if name.upper().startswith(ENV_PREFIX):
            path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(NESTING))
            yield path, where.format(name=name)


def _yaml_values(
    raw: Mapping[Any, Any], source: str, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str]]:
    """The paths of the values (not the sections) the YAML file sets."""
    for key, value in raw.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            yield from _yaml_values(value, source, path)
        else:
            yield path, source


def _read_yaml(path: Path, source: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError("(file)", "no such file", source=source) from None
    except OSError as exc:
        raise ConfigError("(file)", f"cannot be read: {exc.strerror}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError("(file)", f"not valid YAML: {exc}", source=source) from None
    if not isinstance(raw, dict):
        raise ConfigError("(top level)", "expected a mapping of sections", source=source)
    return raw


def load_settings(path: str | Path | None, *, secrets_dir: str | Path | None = None) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError listing every fault.

    ``path`` is the YAML file (None: defaults only); ``secrets_dir`` holds one
    file per key, named like its environment variable.
    """
    source = str(path) if path is not None else None
    raw = _read_yaml(Path(path), str(path)) if path is not None else {}
    in_file = list(_yaml_values(raw, source)) if source is not None else []
    origins = _Origins()
    problems: list[tuple[str, str]] = []
    # Top-level names pydantic-settings would take as its own init options.
    for name in [name for name in raw if name not in Settings.model_fields]:
        hint = _did_you_mean(str(name), Settings.model_fields)
        problems.append(
            (str(name), _API_KEY_HINT if name == "api_key" else f"no such section{hint}")
        )
        del raw[name]
    problems += _unknown_names(os.environ, "the environment variable")
    # Highest precedence first: a value set in two places came from the first.
    origins.add(_named(os.environ, "environment variable {name}"))
    options: dict[str, Any] = {}
    if secrets_dir is not None:
        folder = Path(secrets_dir)
        if not folder.is_dir():
            raise ConfigError("(secrets directory)", f"{folder} is not a directory")
        options["_secrets_dir"] = folder
        files = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
        problems += _unknown_names(files, "the secret file")
        origins.add(_named(files, f"secret file {folder}/{{name}}"))
    origins.add(in_file)
    settings: Settings | None = None
    try:
        settings = Settings(**options, **raw)
    except ValidationError as exc:
        problems += [p for error in exc.errors() for p in _problems(error)]
    except SettingsError as exc:
        problems.append(("(environment or secrets)", str(exc)))
    if problems or settings is None:
        first, *more = problems or [("(top level)", "invalid")]
        # A variable or secret file naming no section says so itself.
        found = {name: origins.of(name) for name, _ in problems if not _prefixed(name)}
        raise ConfigError(
            *first, more=more, origins={name: o for name, o in found.items() if o is not None}
        )
    if settings.mapping is not None and path is not None and not settings.mapping.is_absolute():
        settings = settings.model_copy(update={"mapping": Path(path).parent / settings.mapping})
    return settings
