"""The schema registry over HTTP: one schema by id, or why not.

Blocking (urllib), so it runs in a worker thread, never on the event loop
(:mod:`consumer.registry.schemas` sees to it). What an answer means:

- 200: the schema's text. Confluent's API (``GET {url}/schemas/ids/{id}``,
  served by Confluent Schema Registry, Apicurio's ccompat, Redpanda,
  Karapace) wraps it in ``{"schema": ..., "schemaType": ...}``; Apicurio's own
  (``GET {url}/ids/globalIds/{id}``) serves it bare.
- 404 that says the schema does not exist (Confluent's ``error_code`` 40403,
  Apicurio's ``*NotFoundException``): :class:`SchemaNotFound`, the record's
  fault. Any other 404 (an empty page: the URL misses ``/apis/ccompat/v7``) is
  a registry we cannot use yet, not bad input.
- Everything else (no connection, a timeout, TLS, 5xx, 401/403, a redirect):
  :class:`consumer.errors.RegistryUnavailable` with a reason an operator can
  act on. Nothing is dead-lettered for it; reading waits.

Credentials travel in the ``authorization`` header only, and no reason ever
holds them (the URL cannot: the configuration refuses credentials in it).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.request
from http.client import HTTPException
from typing import Any

from consumer.config import SchemaRegistryConfig
from consumer.errors import RegistryUnavailable

__all__ = ["RegistryClient", "SchemaNotFound"]

# A Debezium envelope's schema is a few KB; a schema past this is no table's.
MAX_SCHEMA_BYTES = 8 * 1024 * 1024
_ACCEPT = "application/vnd.schemaregistry.v1+json, application/json;q=0.9"


class SchemaNotFound(Exception):
    """The registry says it has no schema of this id: the record naming it is bad input."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the authorization header to wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class RegistryClient:
    def __init__(self, config: SchemaRegistryConfig) -> None:
        assert config.url is not None
        self._base = config.url
        self._apicurio = config.framing == "apicurio"
        self._timeout = config.timeout_seconds
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.ProxyHandler({}),  # the URL as configured, never an env proxy
            _NoRedirects(),
        ]
        if config.ca_file is not None:
            context = ssl.create_default_context(cafile=str(config.ca_file))
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)
        self._headers = {"accept": _ACCEPT, "user-agent": "rfmcube-cdc"}
        if config.bearer_token is not None:
            self._headers["authorization"] = f"Bearer {config.bearer_token.get_secret_value()}"
        elif config.username is not None and config.password is not None:
            pair = f"{config.username}:{config.password.get_secret_value()}".encode()
            self._headers["authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")

    def url_of(self, schema_id: int) -> str:
        if self._apicurio:
            return f"{self._base}/ids/globalIds/{schema_id}"
        return f"{self._base}/schemas/ids/{schema_id}"

    def fetch(self, schema_id: int) -> str:
        """The Avro schema's text; raises SchemaNotFound or RegistryUnavailable."""
        url = self.url_of(schema_id)
        request = urllib.request.Request(url, headers=self._headers)
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                body = response.read(MAX_SCHEMA_BYTES + 1)
        except urllib.error.HTTPError as error:
            with error:
                raise self._refusal(schema_id, error) from None
        except (urllib.error.URLError, HTTPException, OSError) as exc:
            raise RegistryUnavailable(f"GET {url}: {_why(exc)}") from None
        if len(body) > MAX_SCHEMA_BYTES:
            raise SchemaNotFound(f"schema {schema_id} is larger than {MAX_SCHEMA_BYTES} bytes")
        return self._schema_text(schema_id, url, body)

    def _schema_text(self, schema_id: int, url: str, body: bytes) -> str:
        if self._apicurio:
            return body.decode("utf-8", errors="replace")
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            raise RegistryUnavailable(
                f"GET {url}: the answer is not JSON: is kafka.schema_registry.url the"
                " registry's Confluent-compatible API?"
            ) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("schema"), str):
            raise RegistryUnavailable(f"GET {url}: the answer holds no schema")
        kind = answer.get("schemaType") or "AVRO"
        if kind != "AVRO":
            raise SchemaNotFound(f"schema {schema_id} is a {str(kind)[:20]} schema, not Avro")
        if answer.get("references"):
            raise SchemaNotFound(
                f"schema {schema_id} refers to other subjects' schemas, which is not supported"
            )
        text: str = answer["schema"]
        return text

    def _refusal(self, schema_id: int, error: urllib.error.HTTPError) -> Exception:
        status = error.code
        url = self.url_of(schema_id)
        if status == 404:
            detail = _error_body(error)
            code, name = detail.get("error_code"), str(detail.get("name") or "")
            apicurio_not_found = code == 404 and name.endswith("NotFoundException")
            if code == 40403 or (self._apicurio and apicurio_not_found):
                return SchemaNotFound(f"schema {schema_id} is not in the registry")
            return RegistryUnavailable(
                f"GET {url}: 404 without a schema-not-found answer: is kafka.schema_registry.url"
                + (
                    " Apicurio's /apis/registry/v2 (framing: apicurio)?"
                    if self._apicurio
                    else " the registry's Confluent-compatible base URL?"
                )
            )
        if status in (401, 403):
            return RegistryUnavailable(
                f"GET {url}: {status}: the registry refuses our credentials: check"
                " kafka.schema_registry.username and password, or bearer_token"
            )
        if 300 <= status < 400:
            return RegistryUnavailable(
                f"GET {url}: {status} redirect, not followed: set kafka.schema_registry.url"
                " to where it points"
            )
        return RegistryUnavailable(f"GET {url}: HTTP {status}")


def _error_body(error: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        answer = json.loads(error.read(65536) or b"{}")
    except (ValueError, OSError, HTTPException):
        return {}
    return answer if isinstance(answer, dict) else {}


def _why(exc: BaseException) -> str:
    """What went wrong, in a few words and without a body's content."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.URLError) and isinstance(reason, BaseException):
        exc = reason
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {exc.verify_message} (kafka.schema_registry.ca_file)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or type(exc).__name__}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out (kafka.schema_registry.timeout_seconds)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
