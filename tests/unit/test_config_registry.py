"""kafka.schema_registry: refused at start-up with the key's path when wrong; its
password and token from the environment or --secrets-dir, never shown."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.cli.main import main
from consumer.config import API_KEY_ENV, load_settings
from consumer.errors import ConfigError

PASSWORD = "registry-pw-51c9e2"
TOKEN = "registry-token-a07d44"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("RFMCUBE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(API_KEY_ENV, "k-1")
    yield


def config(tmp_path: Path, registry: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("kafka:\n  schema_registry:\n" + registry, encoding="utf-8")
    return path


def problems_of(path: Path, secrets_dir: Path | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, secrets_dir=secrets_dir)
    assert PASSWORD not in str(caught.value) and TOKEN not in str(caught.value)
    return dict(caught.value.problems)


@pytest.mark.parametrize(
    ("yaml", "path", "problem"),
    [
        ("    url: registry:8081\n", "url", "http(s):// URL"),
        (
            f"    url: https://user:{PASSWORD}@registry:8081\n",
            "url",
            "holds credentials, which would show in logs",
        ),
        ("    url: https://registry:8081/?x=1\n", "url", "no query"),
        ("    framing: avro\n", "framing", "'confluent' or 'apicurio'"),
        ("    username: rfmcube\n", "username", "has no use without kafka.schema_registry.url"),
        ("    url: https://r:8081\n    username: u\n", "password", "missing beside username"),
        (
            f"    url: https://r:8081\n    password: {PASSWORD}\n",
            "password",
            "needs kafka.schema_registry.username",
        ),
        (
            f"    url: http://r:8081\n    username: u\n    password: {PASSWORD}\n",
            "password",
            "would be sent in clear over http://",
        ),
        (
            f"    url: https://r:8081\n    username: u\n    password: {PASSWORD}\n"
            f"    bearer_token: {TOKEN}\n",
            "bearer_token",
            "use one or the other",
        ),
        (f"    url: http://r:8081\n    bearer_token: {TOKEN}\n", "bearer_token", "in clear"),
        (
            "    url: https://r:8081\n    ca_file: /nonexistent/ca.pem\n",
            "ca_file",
            "cannot be read",
        ),
        ("    url: http://r:8081\n    ca_file: /etc/hostname\n", "ca_file", "https:// url only"),
        ("    url: https://r:8081\n    timeout_seconds: 0\n", "timeout_seconds", "greater than 0"),
        ("    url: https://r:8081\n    max_schemas: 0\n", "max_schemas", "greater than or equal"),
        ("    url: https://r:8081\n    schema_ids: 3\n", "schema_ids", "Extra inputs"),
    ],
)
def test_a_wrong_registry_key_is_refused_with_its_path(
    tmp_path: Path, yaml: str, path: str, problem: str
) -> None:
    problems = problems_of(config(tmp_path, yaml))
    assert list(problems) == [f"kafka.schema_registry.{path}"]
    assert problem in problems[f"kafka.schema_registry.{path}"]


def test_a_ca_file_that_holds_no_certificate_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n", encoding="utf-8")
    problems = problems_of(config(tmp_path, f"    url: https://r:8081\n    ca_file: {bogus}\n"))
    assert problems == {"kafka.schema_registry.ca_file": "holds no PEM certificate"}


def test_a_real_ca_file_is_taken(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    settings = load_settings(config(tmp_path, f"    url: https://r:8081\n    ca_file: {cert}\n"))
    assert settings.kafka.schema_registry.ca_file == cert


def test_the_password_comes_from_the_environment_or_a_secret_file_and_never_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config(tmp_path, "    url: https://registry:8081/\n    username: rfmcube\n")
    monkeypatch.setenv("RFMCUBE_CDC__KAFKA__SCHEMA_REGISTRY__PASSWORD", PASSWORD)
    settings = load_settings(path)
    registry = settings.kafka.schema_registry
    assert registry.url == "https://registry:8081"
    assert registry.password is not None and registry.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    monkeypatch.delenv("RFMCUBE_CDC__KAFKA__SCHEMA_REGISTRY__PASSWORD")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "RFMCUBE_CDC__KAFKA__SCHEMA_REGISTRY__BEARER_TOKEN").write_text(TOKEN)
    path = config(tmp_path, "    url: https://registry:8081\n")
    token = load_settings(path, secrets_dir=secrets).kafka.schema_registry.bearer_token
    assert token is not None and token.get_secret_value() == TOKEN


def test_check_config_names_the_registry_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, "    url: registry:8081\n")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "kafka.schema_registry.url: must be an http(s):// URL" in capsys.readouterr().err
