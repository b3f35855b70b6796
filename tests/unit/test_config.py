"""The service's configuration: every source, every problem at once, no secret shown."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.cli.main import main
from consumer.config import API_KEY_ENV, load_settings
from consumer.errors import ConfigError
from consumer.ops.logs import JsonFormatter

KAFKA_PASSWORD = "kafka-pw-7d1f0c"
API_KEY = "k-123456-secret"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only what a test sets: nothing from the developer's shell."""
    for name in list(os.environ):
        if name.upper().startswith("RFMCUBE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    yield


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, secrets_dir: Path | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, secrets_dir=secrets_dir)
    return dict(caught.value.problems)


def test_defaults_need_only_the_api_key() -> None:
    settings = load_settings(None)
    assert settings.pacing.requests_per_minute == 60
    assert settings.api.base_url == "https://api.rfmcube.com/v1"
    assert settings.service.log_level == "INFO"
    assert settings.api_key.get_secret_value() == API_KEY
    assert API_KEY not in repr(settings) and API_KEY not in str(settings)


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
        ("api:\n  key: abc\n", "api.key", "never part of the configuration"),
        ("api_key: abc\n", "api_key", "never part of the configuration"),
        ("pacnig: {}\n", "pacnig", "no such section"),
        ("service:\n  log_level: loud\n", "service.log_level", "'DEBUG', 'INFO'"),
        ("api:\n  base_url: api.rfmcube.com/v1\n", "api.base_url", "https:// URL"),
        ("api:\n  base_url: http://api.rfmcube.com/v1\n", "api.base_url", "in clear"),
        (
            "kafka:\n  extra:\n    sasl_plain_pasword: x\n",
            "kafka.extra.sasl_plain_pasword",
            "did you mean sasl_plain_password?",
        ),
        ("kafka:\n  extra:\n    linger_ms: 5\n", "kafka.extra.linger_ms", "producer option"),
        ("kafka:\n  extra:\n    group_id: g\n", "kafka.extra.group_id", "kafka.group_id"),
        (
            "kafka:\n  extra:\n    enable_auto_commit: true\n",
            "kafka.extra.enable_auto_commit",
            "set by the service",
        ),
        ("kafka:\n  extra:\n    ssl_context: x\n", "kafka.extra.ssl_context", "Python object"),
        (
            "kafka:\n  extra:\n    session_timeout_ms: soon\n",
            "kafka.extra.session_timeout_ms",
            "valid integer",
        ),
        (
            "kafka:\n  extra:\n    security_protocol: TLS\n",
            "kafka.extra.security_protocol",
            "'SASL_SSL'",
        ),
        (
            "kafka:\n  extra:\n    heartbeat_interval_ms: 9000\n    session_timeout_ms: 6000\n",
            "kafka.extra.heartbeat_interval_ms",
            "lower than session_timeout_ms",
        ),
        (
            "kafka:\n  extra:\n    security_protocol: SASL_SSL\n    sasl_mechanism: SCRAM-SHA-512\n"
            "    sasl_plain_username: u\n",
            "kafka.extra.sasl_plain_password",
            "required by sasl_mechanism SCRAM-SHA-512",
        ),
    ],
)
def test_a_wrong_key_is_refused_with_its_path(
    tmp_path: Path, text: str, path: str, problem: str
) -> None:
    problems = problems_of(write(tmp_path, text))
    assert list(problems) == [path]
    assert problem in problems[path]


def test_every_problem_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(
        tmp_path,
        "kafka:\n  extra:\n    fetch_max_byte: 1\n    acks: all\n"
        "pacing:\n  requests_per_minute: 0\n  min_window_seconds: -1\n"
        "store:\n  path: [a]\n",
    )
    monkeypatch.setenv("RFMCUBE_CDC__SERVICE__LOG_FORMAT", "xml")
    monkeypatch.setenv("RFMCUBE_CDC__PACKING__X", "1")
    assert set(problems_of(config)) == {
        "kafka.extra.fetch_max_byte",
        "kafka.extra.acks",
        "pacing.requests_per_minute",
        "pacing.min_window_seconds",
        "store.path",
        "service.log_format",
        "RFMCUBE_CDC__PACKING__X",
    }


def test_the_command_lists_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path, "kafka:\n  extra:\n    fetch_max_byte: 1\npacing:\n  window_seconds: 0\n"
    )
    for command in ("check-config", "run"):
        assert main([command, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert "configuration refused" in err and "Traceback" not in err
        assert "  kafka.extra.fetch_max_byte: is not a kafka-python consumer option" in err
        assert "did you mean fetch_max_bytes?" in err
        assert "  pacing.window_seconds: Input should be greater than 0" in err


def test_the_environment_overrides_secret_files_which_override_the_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path,
        "kafka:\n  bootstrap_servers: yaml:9092\n  group_id: yaml-group\n"
        "  client_id: yaml-client\n  extra:\n    security_protocol: SSL\n",
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "RFMCUBE_CDC__KAFKA__GROUP_ID").write_text("file-group\n", encoding="utf-8")
    (secrets / "RFMCUBE_CDC__KAFKA__CLIENT_ID").write_text("file-client\n", encoding="utf-8")
    monkeypatch.setenv("RFMCUBE_CDC__KAFKA__CLIENT_ID", "env-client")
    monkeypatch.setenv("RFMCUBE_CDC__KAFKA__EXTRA__SESSION_TIMEOUT_MS", "6000")
    kafka = load_settings(config, secrets_dir=secrets).kafka
    assert kafka.client_id == "env-client"  # environment over secret file
    assert kafka.group_id == "file-group"  # secret file over YAML
    assert kafka.bootstrap_servers == "yaml:9092"  # YAML over default
    assert kafka.dead_letter_topic == "rfmcube-cdc.dead-letters"  # default
    # Nested sections merge key by key; a number from the environment is a number.
    assert kafka.extra == {"security_protocol": "SSL", "session_timeout_ms": 6000}


def test_a_kafka_password_comes_from_a_secret_file_and_is_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    password_file = secrets / "RFMCUBE_CDC__KAFKA__EXTRA__SASL_PLAIN_PASSWORD"
    password_file.write_text(KAFKA_PASSWORD + "\n", encoding="utf-8")
    config = write(
        tmp_path,
        "kafka:\n  extra:\n    security_protocol: SASL_SSL\n    sasl_mechanism: PLAIN\n"
        "    sasl_plain_username: shop\n",
    )
    settings = load_settings(config, secrets_dir=secrets)
    assert settings.kafka.extra["sasl_plain_password"] == KAFKA_PASSWORD
    for shown in (repr(settings), str(settings), repr(settings.kafka), str(settings.kafka)):
        assert KAFKA_PASSWORD not in shown and API_KEY not in shown
        assert "sasl_plain_password" in shown  # set, but shown as stars

    # A log line that carries the settings, as a careless debug line would.
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("rfmcube-test").debug("settings %s", settings, extra={"s": settings})
    formatted = [JsonFormatter().format(record) for record in caplog.records]
    assert formatted and not any(KAFKA_PASSWORD in line for line in formatted)

    # With another key wrong, the refusal names keys, never the secret values.
    broken = write(tmp_path, config.read_text() + "    sasl_kerberos_nam: x\n")
    assert main(["check-config", "--config", str(broken), "--secrets-dir", str(secrets)]) == 2
    out = capsys.readouterr()
    assert "kafka.extra.sasl_kerberos_nam" in out.err
    assert KAFKA_PASSWORD not in out.err + out.out and API_KEY not in out.err + out.out


def test_a_kafka_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFMCUBE_CDC__KAFKA__EXTRA__SASL_PLAIN_PASSWORD", KAFKA_PASSWORD)
    settings = load_settings(None)
    assert settings.kafka.extra == {"sasl_plain_password": KAFKA_PASSWORD}
    assert KAFKA_PASSWORD not in repr(settings)


def test_a_misspelt_variable_or_secret_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "RFMCUBE_CDC__KAFK__GROUP_ID").write_text("g", encoding="utf-8")
    (secrets / "unrelated-file").write_text("ignored", encoding="utf-8")
    monkeypatch.setenv("RFMCUBE_CDC__API__KEY", "in-the-wrong-place")
    monkeypatch.setenv("RFMCUBE_CDC__API_KEY", "in-the-wrong-place")
    problems = problems_of(None, secrets)
    assert set(problems) == {"RFMCUBE_CDC__KAFK__GROUP_ID", "api.key", "RFMCUBE_CDC__API_KEY"}
    assert "names no section" in problems["RFMCUBE_CDC__KAFK__GROUP_ID"]
    assert API_KEY_ENV in problems["api.key"] and API_KEY_ENV in problems["RFMCUBE_CDC__API_KEY"]
    assert "in-the-wrong-place" not in str(problems)


def test_the_secrets_directory_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "RFMCUBE_CDC__PACING__REQUESTS_PER_MINUTE").write_text("0", encoding="utf-8")
    monkeypatch.setenv("RFMCUBE_CDC_SECRETS_DIR", str(secrets))
    assert main(["check-config"]) == 2
    assert "pacing.requests_per_minute: Input should be greater than 0" in capsys.readouterr().err


def test_a_missing_secrets_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        load_settings(None, secrets_dir=tmp_path / "absent")


def test_a_missing_api_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV)
    problems = problems_of(None)
    assert list(problems) == ["api.key_file"]
    assert API_KEY_ENV in problems["api.key_file"]


def test_the_key_can_come_from_a_mounted_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_KEY_ENV)
    secret = tmp_path / "key"
    secret.write_text("from-secret\n", encoding="utf-8")
    settings = load_settings(write(tmp_path, f"api:\n  key_file: {secret}\n"))
    assert settings.api_key.get_secret_value() == "from-secret"
    assert "from-secret" not in repr(settings)
    problems = problems_of(write(tmp_path, f"api:\n  key_file: {tmp_path / 'nope'}\n"))
    assert problems == {"api.key_file": "cannot read the key file: No such file or directory"}


def test_plain_http_needs_an_explicit_allowance(tmp_path: Path) -> None:
    text = "api:\n  base_url: http://127.0.0.1:8081/v1/\n  allow_insecure_http: true\n"
    assert load_settings(write(tmp_path, text)).api.base_url == "http://127.0.0.1:8081/v1"


def test_the_log_level_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(write(tmp_path, "service:\n  log_level: debug\n")).service.log_level == (
        "DEBUG"
    )
    monkeypatch.setenv("RFMCUBE_CDC__SERVICE__LOG_LEVEL", "warning")
    assert load_settings(None).service.log_level == "WARNING"


def test_the_command_prints_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    name, version = capsys.readouterr().out.split()
    assert name == "rfmcube-cdc" and version[0].isdigit()


def test_the_command_refuses_a_bad_mapping_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("entities:\n  customers:\n    topic: t\n    colums: {}\n", encoding="utf-8")
    config = write(tmp_path, "mapping: mapping.yaml\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "configuration refused" in err and "entities.customers.colums" in err


def test_the_configuration_in_readme_is_accepted(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("## Running it", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "rfmcube-cdc.yaml"
    config.write_text(example, encoding="utf-8")
    settings = load_settings(config)
    assert settings.pacing.requests_per_minute == 60
    assert settings.limits.max_json_depth == 64


@pytest.mark.parametrize(("text", "value"), [("auto", "auto"), ("true", True), ("false", False)])
def test_the_consumer_process_is_auto_true_or_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, value: object
) -> None:
    assert load_settings(None).kafka.consumer_process == "auto"
    assert (
        load_settings(
            write(tmp_path, f"kafka:\n  consumer_process: {text}\n")
        ).kafka.consumer_process
        == value
    )
    monkeypatch.setenv("RFMCUBE_CDC__KAFKA__CONSUMER_PROCESS", text)
    assert load_settings(None).kafka.consumer_process == value


def test_a_wrong_consumer_process_is_refused_with_its_path(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "kafka:\n  consumer_process: sometimes\n"))
    assert list(problems) == ["kafka.consumer_process"], problems


@pytest.mark.parametrize(
    ("text", "path", "meant"),
    [
        ("kafka:\n  bootstrap_server: x\n", "kafka.bootstrap_server", "bootstrap_servers"),
        ("pacnig: {}\n", "pacnig", "pacing"),
        ("limits:\n  max_json_dept: 3\n", "limits.max_json_dept", "max_json_depth"),
        ("service:\n  helth_port: 1\n", "service.helth_port", "health_port"),
        ("api:\n  acceptence: completed\n", "api.acceptence", "acceptance"),
        ("kafka:\n  extra:\n    sasl_plain_pasword: x\n", "kafka.extra.sasl_plain_pasword", None),
    ],
)
def test_a_misspelt_key_gets_a_did_you_mean_at_every_level(
    tmp_path: Path, text: str, path: str, meant: str | None
) -> None:
    problems = problems_of(write(tmp_path, text))
    assert list(problems) == [path]
    assert f"(did you mean {meant or 'sasl_plain_password'}?)" in problems[path]


def test_a_misspelt_variable_gets_a_did_you_mean_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFMCUBE_CDC__KAFKA__BOOTSTRAP_SERVER", "kafka:9092")
    monkeypatch.setenv("RFMCUBE_CDC__PACNIG__MIN_WINDOW_SECONDS", "1")
    problems = problems_of(None)
    assert "(did you mean bootstrap_servers?)" in problems["kafka.bootstrap_server"]
    assert "(did you mean pacing?)" in problems["RFMCUBE_CDC__PACNIG__MIN_WINDOW_SECONDS"]


def test_every_problem_says_where_its_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "pacing:\n  min_window_seconds: -1\nservice:\n  log_level: INFO\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "RFMCUBE_CDC__PACING__REQUESTS_PER_MINUTE").write_text("0", encoding="utf-8")
    # The environment wins over the file: its wrong value is the one refused.
    monkeypatch.setenv("RFMCUBE_CDC__SERVICE__LOG_LEVEL", "loud")
    monkeypatch.setenv("RFMCUBE_CDC__KAFKA__BOOTSTRAP_SERVER", "kafka:9092")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, secrets_dir=secrets)
    assert caught.value.origins == {
        "pacing.min_window_seconds": str(config),
        "pacing.requests_per_minute": f"secret file {secrets}/"
        "RFMCUBE_CDC__PACING__REQUESTS_PER_MINUTE",
        "service.log_level": "environment variable RFMCUBE_CDC__SERVICE__LOG_LEVEL",
        "kafka.bootstrap_server": "environment variable RFMCUBE_CDC__KAFKA__BOOTSTRAP_SERVER",
    }
    assert main(["check-config", "--config", str(config), "--secrets-dir", str(secrets)]) == 2
    err = capsys.readouterr().err
    assert (
        "  kafka.bootstrap_server: Extra inputs are not permitted (did you mean"
        " bootstrap_servers?) [environment variable RFMCUBE_CDC__KAFKA__BOOTSTRAP_SERVER]"
    ) in err
    assert (
        f"  pacing.min_window_seconds: Input should be greater than or equal to 0 [{config}]" in err
    )


@pytest.mark.parametrize(
    ("extra", "path", "problem"),
    [
        (
            "security_protocol: SASL_SSL\n    sasl_mechanism: GSSAPI\n",
            "kafka.extra.sasl_mechanism",
            "needs the Python package gssapi, which is not installed",
        ),
        (
            "security_protocol: SASL_SSL\n    sasl_mechanism: AWS_MSK_IAM\n",
            "kafka.extra.sasl_mechanism",
            "needs the Python package botocore, which is not installed",
        ),
        ("security_protocol: SASL_SSL\n", "kafka.extra.sasl_mechanism", "is required by"),
        (
            "sasl_mechanism: PLAIN\n    sasl_plain_username: u\n    sasl_plain_password: p\n",
            "kafka.extra.security_protocol",
            "PLAINTEXT does not authenticate",
        ),
        (
            "security_protocol: SSL\n    ssl_cafile: /nonexistent/ca.pem\n",
            "kafka.extra.ssl_cafile",
            "no such file: /nonexistent/ca.pem",
        ),
        ("ssl_certfile: {here}\n", "kafka.extra.ssl_certfile", "security_protocol is PLAINTEXT"),
    ],
)
def test_what_would_fail_at_the_first_connection_is_refused_at_start_up(
    tmp_path: Path, extra: str, path: str, problem: str
) -> None:
    extra = extra.format(here=write(tmp_path, "pem", "cert.pem"))
    problems = problems_of(write(tmp_path, f"kafka:\n  extra:\n    {extra}"))
    assert list(problems) == [path]
    assert problem in problems[path]


def test_tls_files_that_exist_are_accepted(tmp_path: Path) -> None:
    ca = write(tmp_path, "pem", "ca.pem")
    text = f"kafka:\n  extra:\n    security_protocol: SSL\n    ssl_cafile: {ca}\n"
    assert load_settings(write(tmp_path, text)).kafka.extra["ssl_cafile"] == str(ca)
