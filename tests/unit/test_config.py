"""The service's configuration: refused at start-up with the path of the wrong key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.cli import main
from consumer.config import API_KEY_ENV, load_settings
from consumer.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
KEY = {API_KEY_ENV: "k-123456"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_only_the_api_key() -> None:
    settings = load_settings(None, environ=KEY)
    assert settings.pacing.requests_per_minute == 60
    assert settings.api.base_url == "https://api.rfmcube.com/v1"
    assert settings.api_key.get_secret_value() == "k-123456"
    assert "k-123456" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "path", "problem"),
    [
        (
            "pacing:\n  min_window_seconds: -1\n",
            "pacing.min_window_seconds",
            "greater than or equal",
        ),
        ("kafka:\n  bootstrap: x\n", "kafka.bootstrap", "Extra inputs are not permitted"),
        ("api:\n  acceptance: sometimes\n", "api.acceptance", "'process_id' or 'completed'"),
        ("pacing: [1, 2]\n", "pacing", "valid dictionary"),
        ("api:\n  key: abc\n", "api.key", "must not be written in the file"),
    ],
)
def test_a_wrong_key_is_refused_with_its_path(
    tmp_path: Path, text: str, path: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=KEY)
    assert caught.value.path == path
    assert problem in caught.value.problem


def test_a_missing_api_key_says_where_to_put_it() -> None:
    with pytest.raises(ConfigError, match=API_KEY_ENV):
        load_settings(None, environ={})


def test_the_key_can_come_from_a_mounted_secret(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-secret\n", encoding="utf-8")
    settings = load_settings(write(tmp_path, f"api:\n  key_file: {secret}\n"), environ={})
    assert settings.api_key.get_secret_value() == "from-secret"


def test_the_command_refuses_a_bad_mapping_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("entities:\n  customers:\n    topic: t\n    colums: {}\n", encoding="utf-8")
    config = write(tmp_path, "mapping: mapping.yaml\n")
    monkeypatch.setenv(API_KEY_ENV, "k-123456")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "configuration refused" in err and "entities.customers.colums" in err


def _documents(path: Path) -> list[Any]:
    return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def test_the_kubernetes_configuration_is_accepted_by_the_service(tmp_path: Path) -> None:
    config_map, deployment = _documents(REPO / "deploy" / "kubernetes.yaml")
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    secret = tmp_path / "key"
    secret.write_text("k8s-key", encoding="utf-8")
    config["api"]["key_file"] = str(secret)
    settings = load_settings(write(tmp_path, yaml.safe_dump(config)), environ={})
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > settings.service.shutdown_grace_seconds
    assert deployment["spec"]["replicas"] == 1
    probe_port = pod["containers"][0]["ports"][0]["containerPort"]
    assert probe_port == settings.service.health_port


def test_the_compose_configuration_is_accepted_by_the_service() -> None:
    compose = _documents(REPO / "docker-compose.yml")[0]
    mounted = compose["services"]["rfmcube-cdc"]["volumes"][0].split(":")[0]
    settings = load_settings(REPO / mounted, environ=KEY)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
