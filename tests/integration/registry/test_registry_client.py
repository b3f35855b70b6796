"""The registry client against a real Apicurio Registry: schemas by contentId through
the Confluent-compatible API and by globalId through Apicurio's own; what is the
record's fault (an unknown id) and what is not (no registry, a wrong URL); the
credentials and the CA file as a registry behind them sees them."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from consumer.config import SchemaRegistryConfig
from consumer.errors import RegistryUnavailable
from consumer.registry.client import RegistryClient, SchemaNotFound
from testkit.avro import ApicurioRegistry
from testkit.e2e.registry import apicurio_api
from testkit.workbench import free_port

SCHEMA = {"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def client(url: str, **options: Any) -> RegistryClient:
    return RegistryClient(SchemaRegistryConfig(url=url, allow_insecure_http=True, **options))


@pytest.fixture(scope="module")
def registered(schema_registry: str) -> tuple[int, int]:
    """(contentId, globalId) of a schema registered as the converter does."""
    subject = f"client-test-{free_port()}-key"
    content_id = ApicurioRegistry(schema_registry).register(subject, SCHEMA)
    versions = f"{apicurio_api(schema_registry)}/groups/default/artifacts/{subject}/versions/1/meta"
    with _LOOPBACK.open(versions, timeout=10) as answer:
        global_id = int(json.loads(answer.read())["globalId"])
    return content_id, global_id


def test_a_schema_comes_by_its_id_through_the_confluent_compatible_api(
    schema_registry: str, registered: tuple[int, int]
) -> None:
    text = client(schema_registry).fetch(registered[0])
    assert json.loads(text) == SCHEMA


def test_a_schema_comes_by_its_global_id_through_apicurios_api(
    schema_registry: str, registered: tuple[int, int]
) -> None:
    text = client(apicurio_api(schema_registry), framing="apicurio").fetch(registered[1])
    assert json.loads(text) == SCHEMA


@pytest.mark.parametrize("framing", ["confluent", "apicurio"])
def test_an_id_the_registry_does_not_know_is_the_records_fault(
    schema_registry: str, framing: str
) -> None:
    url = schema_registry if framing == "confluent" else apicurio_api(schema_registry)
    with pytest.raises(SchemaNotFound, match="schema 987654 is not in the registry"):
        client(url, framing=framing).fetch(987654)


def test_a_url_that_is_not_the_registrys_api_is_not_the_records_fault(
    schema_registry: str,
) -> None:
    root = schema_registry.removesuffix("/apis/ccompat/v7")
    with pytest.raises(RegistryUnavailable, match="Confluent-compatible base URL"):
        client(root).fetch(1)


def test_no_registry_is_unavailable_not_unknown() -> None:
    with pytest.raises(RegistryUnavailable, match="Connection refused"):
        client(f"http://127.0.0.1:{free_port()}").fetch(1)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        _Recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
        status = 401 if "fail" in self.path else 200
        body = json.dumps({"schema": json.dumps(SCHEMA)}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A registry stand-in over HTTPS with a certificate of its own CA: (url, CA file)."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_basic_auth_over_tls_with_the_ca_file(tls_registry: tuple[str, Path]) -> None:
    url, ca_file = tls_registry
    secret = SecretStr("pw-83ac")
    fetched = client(url, username="rfmcube", password=secret, ca_file=ca_file).fetch(5)
    assert json.loads(fetched) == SCHEMA
    expected = "Basic " + base64.b64encode(b"rfmcube:pw-83ac").decode()
    assert _Recorder.seen[-1]["authorization"] == expected


def test_a_bearer_token_and_a_refusal_that_names_what_to_check(
    tls_registry: tuple[str, Path],
) -> None:
    url, ca_file = tls_registry
    token = client(url, bearer_token=SecretStr("tok-19"), ca_file=ca_file)
    token.fetch(1)
    assert _Recorder.seen[-1]["authorization"] == "Bearer tok-19"
    refused = client(url + "/fail", bearer_token=SecretStr("tok-19"), ca_file=ca_file)
    with pytest.raises(RegistryUnavailable) as caught:
        refused.fetch(1)
    assert "401: the registry refuses our credentials" in str(caught.value)
    assert "tok-19" not in str(caught.value)


def test_a_certificate_of_an_unknown_ca_is_unavailable_and_says_so(
    tls_registry: tuple[str, Path],
) -> None:
    url, _ = tls_registry
    with pytest.raises(RegistryUnavailable, match=r"TLS: self-signed certificate \(kafka"):
        client(url).fetch(1)
