"""docker-compose.yml: the whole chain, checked for structure and versions (this
machine has no Docker engine to run it)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest
import yaml

from consumer.changes.mapping import Mapping
from consumer.config import load_settings

REPO = Path(__file__).resolve().parents[3]
CHAIN = {"postgres", "kafka", "connect", "register-connector", "emulator", "rfmcube-cdc"}


def pom_property(pom: str, name: str) -> str:
    tree = ElementTree.parse(REPO / "scripts" / pom / "pom.xml")
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    found = tree.find(f"m:properties/m:{name}", namespace)
    assert found is not None and found.text
    return found.text


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    found: dict[str, Any] = compose["services"]
    return found


def mounts(service: dict[str, Any]) -> Iterator[tuple[Path, PurePosixPath]]:
    """(host path, container path) of the service's bind mounts."""
    for volume in service.get("volumes", []):
        host, target, *_ = volume.split(":")
        if host.startswith("./"):
            yield REPO / host, PurePosixPath(target)


def host_file(service: dict[str, Any], target: str) -> Path:
    wanted = PurePosixPath(target)
    for host, inside in mounts(service):
        if inside == wanted:
            return host
        if wanted.is_relative_to(inside):
            return host / wanted.relative_to(inside)
    raise AssertionError(f"{target} is not mounted")


def test_the_chain_is_complete_and_every_mount_exists(services: dict[str, Any]) -> None:
    assert set(services) == CHAIN
    for service in services.values():
        for host, _ in mounts(service):
            assert host.exists(), host


def test_the_versions_are_those_of_the_scripts(services: dict[str, Any]) -> None:
    assert services["kafka"]["image"] == "apache/kafka:" + pom_property(
        "kafka-jars", "kafka.version"
    )
    debezium = pom_property("connect-jars", "debezium.version")
    assert services["connect"]["image"] == f"quay.io/debezium/connect:{debezium}"
    assert services["register-connector"]["image"] == services["connect"]["image"]


def test_postgres_decodes_logically_and_loads_the_reference_shop(
    services: dict[str, Any],
) -> None:
    postgres = services["postgres"]
    assert "wal_level=logical" in postgres["command"]
    scripts = sorted(
        (target.name, host)
        for host, target in mounts(postgres)
        if target.parent == PurePosixPath("/docker-entrypoint-initdb.d")
    )
    # The schema first, then the rows (the entrypoint runs them in name order).
    assert [host for _, host in scripts] == [
        REPO / "testkit" / "e2e" / "shop.sql",
        REPO / "deploy" / "compose" / "seed.sql",
    ]


def test_every_dependency_waits_for_health_or_completion(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, condition in (service.get("depends_on") or {}).items():
            wanted = condition["condition"]
            if target == "register-connector":
                assert wanted == "service_completed_successfully"
            else:
                assert wanted == "service_healthy", (name, target)
                assert "test" in services[target]["healthcheck"], target
    assert set(services["rfmcube-cdc"]["depends_on"]) == {"kafka", "emulator", "register-connector"}
    assert set(services["register-connector"]["depends_on"]) == {"kafka", "connect"}
    assert services["register-connector"]["restart"] == "no"
    long_running = CHAIN - {"register-connector"}
    assert all("test" in services[name]["healthcheck"] for name in long_running)


def test_the_connector_has_the_settings_of_the_scripts(services: dict[str, Any]) -> None:
    postgres = services["postgres"]["environment"]
    connector = json.loads(
        host_file(services["register-connector"], "/compose/connector.json").read_text()
    )
    filled = {
        "name": "shop-connector",
        "port": "5432",
        "dbname": postgres["POSTGRES_DB"],
        "prefix": "shop",
        "slot": "rfmcube_shop",
        "decimals": "precise",
    }
    template = (REPO / "scripts" / "connect-jars" / "postgres-connector.properties").read_text()
    expected = {}
    for line in template.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            expected[key] = re.sub(r"\$\{(\w+)\}", lambda m: filled[m.group(1)], value)
    del expected["name"]  # the name is in the REST path, not the config
    expected["database.hostname"] = "postgres"  # the compose service, not 127.0.0.1
    assert connector == expected
    assert (connector["database.user"], connector["database.password"]) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    setup = host_file(services["register-connector"], "/compose/setup.sh").read_text()
    assert '"$connect/connectors/$name/config"' in setup and "name=shop-connector" in setup
    assert "--data @/compose/connector.json" in setup
    # The topics the service's mapping reads are created before it starts.
    tables = re.search(r"for table in ([\w ]+); do", setup)
    assert tables is not None
    created = {f"shop.public.{table}" for table in tables.group(1).split()}
    assert set(Mapping.load(None).topics()) == created


def test_the_service_configuration_is_accepted_and_points_into_the_chain(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("RFMCUBE_"):
            monkeypatch.delenv(name)
    service = services["rfmcube-cdc"]
    config = host_file(service, service["command"][service["command"].index("--config") + 1])
    # Inside the container, the key file is the compose secret api_key.
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert raw["api"]["key_file"] == "/run/secrets/api_key" and service["secrets"] == ["api_key"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    key_file = REPO / compose["secrets"]["api_key"]["file"]
    monkeypatch.setenv("RFMCUBE_CDC__API__KEY_FILE", str(key_file))
    settings = load_settings(config)
    emulator_key = services["emulator"]["environment"]["RFMCUBE_EMULATOR_API_KEY"]
    assert settings.api_key.get_secret_value() == emulator_key

    kafka = services["kafka"]["environment"]
    assert f"PLAINTEXT://{settings.kafka.bootstrap_servers}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    url = urlsplit(settings.api.base_url)
    assert (url.scheme, url.hostname, url.port) == ("http", "emulator", 8081)
    assert "127.0.0.1:8081:8081" in services["emulator"]["ports"]
    store = PurePosixPath(str(settings.store.path))
    assert f"rfmcube-cdc-state:{store.parent}" in service["volumes"]
    assert settings.service.health_port == 8080
    assert "127.0.0.1:8080/healthz" in " ".join(service["healthcheck"]["test"])


def test_the_images_are_built_from_the_dockerfiles_targets(services: dict[str, Any]) -> None:
    stages = re.findall(r"^FROM \S+ AS (\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert services["rfmcube-cdc"]["build"] == {"context": ".", "target": "runtime"}
    assert services["emulator"]["build"] == {"context": ".", "target": "emulator"}
    assert {"runtime", "emulator"} <= set(stages)
    # As in Kubernetes: read-only root, no capabilities, no privilege escalation.
    service = services["rfmcube-cdc"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
