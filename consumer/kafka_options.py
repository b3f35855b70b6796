"""The kafka-python options ``kafka.extra`` accepts, with their types.

Everything under ``kafka.extra`` goes to kafka-python's ``KafkaConsumer`` (and
the options a producer shares, to the dead-letter producer). kafka-python
refuses an unknown name only when the consumer is built, with a traceback. So
the names and types here come from kafka-python's own
``KafkaConsumer.DEFAULT_CONFIG``, and ``check-config`` refuses a typo with its
path before anything connects. Options are checked, not converted: what passes
reaches kafka-python as written (an environment variable's ``"6000"`` becomes
6000).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

from kafka import KafkaConsumer, KafkaProducer
from kafka.net.sasl import SASL_MECHANISMS
from pydantic import ConfigDict
from typing_extensions import TypedDict  # pydantic needs it below Python 3.12

CONSUMER_DEFAULTS: Final[Mapping[str, Any]] = KafkaConsumer.DEFAULT_CONFIG
PRODUCER_ONLY: Final = frozenset(KafkaProducer.DEFAULT_CONFIG) - set(CONSUMER_DEFAULTS)

# Options the service sets itself, and why ``kafka.extra`` may not change them.
SERVICE_OWNED: Final[Mapping[str, str]] = {
    "bootstrap_servers": "set kafka.bootstrap_servers instead",
    "group_id": "set kafka.group_id instead",
    "client_id": "set kafka.client_id instead",
    "enable_auto_commit": "the service commits only what the API accepted",
    "auto_offset_reset": "the service reads every partition from its earliest offset",
    "allow_auto_create_topics": "Debezium creates its topics (compacted)",
    "key_deserializer": "the service decodes raw bytes itself",
    "value_deserializer": "the service decodes raw bytes itself",
    "partition_assignment_strategy": "the service chooses how partitions are assigned",
}

# Options holding credentials (a proxy URL may carry user:password@): never printed.
SECRET_OPTIONS: Final = frozenset(
    name
    for name in CONSUMER_DEFAULTS
    if "password" in name or name in ("proxy_url", "socks5_proxy")
)

# Types of the options whose default (None, or a float infinity) says nothing.
_STR_OR_NONE: Final = (
    "group_instance_id",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_crlfile",
    "ssl_password",
    "ssl_ciphers",
    "sasl_plain_username",
    "sasl_plain_password",
    "sasl_kerberos_name",
    "sasl_kerberos_domain_name",
    "proxy_url",
    "socks5_proxy",
)
_EXPLICIT_TYPES: Final[Mapping[str, Any]] = {
    **dict.fromkeys(_STR_OR_NONE, str | None),
    "receive_buffer_bytes": int | None,
    "send_buffer_bytes": int | None,
    "consumer_timeout_ms": float,
    "api_version": tuple[int, ...] | None,
    "socket_options": list[tuple[int, int, int]],
    "security_protocol": Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
    "sasl_mechanism": Literal[tuple(sorted(SASL_MECHANISMS))] | None,
    "isolation_level": Literal["read_uncommitted", "read_committed"],
}
# Options whose values are Python objects (a token provider, an SSLContext...).
_OBJECT_VALUED: Final = frozenset({"ssl_context", "sasl_oauth_token_provider", "metric_reporters"})


def _is_object_valued(name: str, default: Any) -> bool:
    if name in _OBJECT_VALUED or callable(default):
        return True
    return isinstance(default, tuple | list) and any(isinstance(item, type) for item in default)


def _option_type(default: Any) -> Any:
    if isinstance(default, bool):
        return bool
    if isinstance(default, int | float | str):
        return type(default)
    return Any  # an option of a newer kafka-python: its name is still checked


def _settable_options() -> Iterator[tuple[str, Any]]:
    for name, default in CONSUMER_DEFAULTS.items():
        if name in SERVICE_OWNED or _is_object_valued(name, default):
            continue
        yield name, _EXPLICIT_TYPES.get(name) or _option_type(default)


def settable() -> list[str]:
    """The names ``kafka.extra`` accepts (the configuration reference lists them)."""
    return [name for name, _ in _settable_options()]


if TYPE_CHECKING:
    KafkaOptions = dict[str, Any]
else:
    # A TypedDict validates to a plain dict (what kafka-python takes), while
    # pydantic reports each wrong option at its own path.
    KafkaOptions = TypedDict(  # noqa: UP013 (the fields are computed)
        "KafkaOptions", dict(_settable_options()), total=False
    )
    KafkaOptions.__pydantic_config__ = ConfigDict(extra="forbid")


def why_not_settable(name: str) -> str:
    """Why ``kafka.extra.<name>`` is refused (for a name KafkaOptions does not hold)."""
    if name in SERVICE_OWNED:
        return f"is set by the service: {SERVICE_OWNED[name]}"
    if name in CONSUMER_DEFAULTS:
        return "takes a Python object, which a configuration file cannot hold"
    if name in PRODUCER_ONLY:
        return (
            "is a producer option: kafka.extra configures the consumer "
            "(the dead-letter producer takes the options both share)"
        )
    known = [n for n, _ in _settable_options()]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"is not a kafka-python consumer option{hint}"


def _value(options: Mapping[str, Any], name: str) -> Any:
    return options.get(name, CONSUMER_DEFAULTS[name])


def combination_problems(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(option, problem) for combinations kafka-python refuses when the consumer starts."""
    problems: list[tuple[str, str]] = []
    wait, request, idle = (
        _value(options, name)
        for name in ("fetch_max_wait_ms", "request_timeout_ms", "connections_max_idle_ms")
    )
    if not wait < request < idle:
        problems.append(
            (
                "request_timeout_ms",
                f"must lie between fetch_max_wait_ms and connections_max_idle_ms "
                f"({wait} < {request} < {idle} does not hold)",
            )
        )
    heartbeat, session = (
        _value(options, "heartbeat_interval_ms"),
        _value(options, "session_timeout_ms"),
    )
    if heartbeat >= session:
        problems.append(
            (
                "heartbeat_interval_ms",
                f"must be lower than session_timeout_ms ({heartbeat} >= {session})",
            )
        )
    mechanism = _value(options, "sasl_mechanism")
    if mechanism == "PLAIN" or (isinstance(mechanism, str) and mechanism.startswith("SCRAM")):
        for name in ("sasl_plain_username", "sasl_plain_password"):
            if not _value(options, name):
                problems.append((name, f"is required by sasl_mechanism {mechanism}"))
    if mechanism == "OAUTHBEARER":
        problems.append(
            (
                "sasl_mechanism",
                "OAUTHBEARER needs sasl_oauth_token_provider, a Python object "
                "that a configuration file cannot hold",
            )
        )
    return problems


def masked(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` fit to print: credentials replaced by stars."""
    return {k: "**********" if k in SECRET_OPTIONS and v else v for k, v in options.items()}
