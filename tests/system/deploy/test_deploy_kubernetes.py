"""deploy/: the example overlay rendered by a real kustomize, as a cluster would get it,
and its configuration loaded by the service's own loader."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from consumer.app.shutdown import SHUTDOWN_MARGIN_SECONDS
from consumer.changes.mapping import Mapping
from consumer.config import Settings, load_settings
from consumer.state.store import StateStore

REPO = Path(__file__).resolve().parents[3]
OVERLAY = "deploy/overlays/example"
MOUNTS = ("config", "api-key", "kafka-credentials", "state")

Manifest = dict[str, Any]


def kustomize_build(folder: str) -> list[Manifest]:
    # scripts/kustomize builds kustomize from the Go module proxy when missing
    # (about a minute, once per machine).
    done = subprocess.run(
        [str(REPO / "scripts" / "kustomize"), "build", folder],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [document for document in yaml.safe_load_all(done.stdout) if document]


@pytest.fixture(scope="module")
def rendered() -> list[Manifest]:
    return kustomize_build(OVERLAY)


def only(rendered: list[Manifest], kind: str) -> Manifest:
    found = [m for m in rendered if m["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def service_config_map(rendered: list[Manifest]) -> Manifest:
    """The service's configuration (the other ConfigMap is Grafana's dashboard)."""
    found = [
        m
        for m in rendered
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("rfmcube-cdc-config")
    ]
    assert len(found) == 1, f"{len(found)} configuration ConfigMaps"
    return found[0]


def secret_data(rendered: list[Manifest], prefix: str) -> dict[str, str]:
    secrets = [m for m in rendered if m["kind"] == "Secret"]
    found = [s for s in secrets if s["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1
    return {k: base64.b64decode(v).decode() for k, v in found[0]["data"].items()}


def pod(rendered: list[Manifest]) -> Manifest:
    spec: Manifest = only(rendered, "StatefulSet")["spec"]["template"]["spec"]
    return spec


def container(rendered: list[Manifest]) -> Manifest:
    (main,) = pod(rendered)["containers"]
    return dict(main)


def mount_of(rendered: list[Manifest], volume: str) -> PurePosixPath:
    (path,) = [m["mountPath"] for m in container(rendered)["volumeMounts"] if m["name"] == volume]
    return PurePosixPath(path)


def volume_source(rendered: list[Manifest], volume: str) -> Manifest:
    (source,) = [v for v in pod(rendered)["volumes"] if v["name"] == volume]
    return dict(source)


def environment(rendered: list[Manifest]) -> dict[str, str]:
    """The container's environment variables that have a value."""
    return {e["name"]: e["value"] for e in container(rendered).get("env", []) if "value" in e}


def config_path(rendered: list[Manifest]) -> PurePosixPath:
    """Where every command in the container reads its configuration."""
    return PurePosixPath(environment(rendered)["RFMCUBE_CDC_CONFIG"])


def load_as_the_pod_would(
    rendered: list[Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The ConfigMap and Secrets written where the pod mounts them (under tmp_path)."""
    for name in list(os.environ):
        if name.startswith("RFMCUBE_"):
            monkeypatch.delenv(name)

    def materialize(volume: str, files: dict[str, str]) -> Path:
        folder = tmp_path / str(mount_of(rendered, volume)).lstrip("/")
        folder.mkdir(parents=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        return folder

    config_map = service_config_map(rendered)
    materialize("config", config_map["data"])
    materialize("api-key", secret_data(rendered, "rfmcube-cdc-api-key-"))
    secrets = materialize("kafka-credentials", secret_data(rendered, "rfmcube-cdc-kafka-"))
    # The key file's absolute path, moved under tmp_path as the mounts were.
    raw = yaml.safe_load(config_map["data"]["config.yaml"])
    key_file = tmp_path / raw["api"]["key_file"].lstrip("/")
    monkeypatch.setenv("RFMCUBE_CDC__API__KEY_FILE", str(key_file))
    config = tmp_path / str(config_path(rendered)).lstrip("/")
    secrets_dir = PurePosixPath(environment(rendered)["RFMCUBE_CDC_SECRETS_DIR"])
    assert secrets_dir == mount_of(rendered, "kafka-credentials")
    return load_settings(config, secrets_dir=secrets)


def test_the_rendered_configuration_is_accepted_by_the_service(
    rendered: list[Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_as_the_pod_would(rendered, tmp_path, monkeypatch)
    api_key = secret_data(rendered, "rfmcube-cdc-api-key-")["key"].strip()
    kafka = secret_data(rendered, "rfmcube-cdc-kafka-")
    assert settings.api_key.get_secret_value() == api_key
    assert settings.api.base_url.startswith("https://")
    assert settings.kafka.extra == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": kafka["RFMCUBE_CDC__KAFKA__EXTRA__SASL_PLAIN_USERNAME"].strip(),
        "sasl_plain_password": kafka["RFMCUBE_CDC__KAFKA__EXTRA__SASL_PLAIN_PASSWORD"].strip(),
        # a failover within about ten seconds
        "session_timeout_ms": 10000,
        "heartbeat_interval_ms": 3000,
    }
    # The mapping beside it in the ConfigMap is the reference shop's, and loads.
    assert settings.mapping is not None
    assert Mapping.load(settings.mapping).topics() == Mapping.load(None).topics()


def test_the_paths_in_the_configuration_are_the_pods_mounts(rendered: list[Manifest]) -> None:
    raw = yaml.safe_load(service_config_map(rendered)["data"]["config.yaml"])
    key_file = PurePosixPath(raw["api"]["key_file"])
    assert key_file.parent == mount_of(rendered, "api-key")
    assert key_file.name in secret_data(rendered, "rfmcube-cdc-api-key-")
    assert PurePosixPath(raw["store"]["path"]).parent == mount_of(rendered, "state")
    assert config_path(rendered).parent == mount_of(rendered, "config")


def test_two_replicas_each_keep_their_store_on_their_own_volume(
    rendered: list[Manifest],
) -> None:
    assert not [m for m in rendered if m["kind"] == "Deployment"]
    stateful_set = only(rendered, "StatefulSet")
    assert stateful_set["spec"]["replicas"] == 2
    (claim,) = stateful_set["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "state" not in [v["name"] for v in pod(rendered)["volumes"]]


def test_the_pod_meets_the_restricted_security_profile(rendered: list[Manifest]) -> None:
    spec, main = pod(rendered), container(rendered)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    context = main["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    # The root is read-only: SQLite's temporary files go to a bounded emptyDir.
    assert mount_of(rendered, "tmp") == PurePosixPath("/tmp")
    assert volume_source(rendered, "tmp")["emptyDir"]["sizeLimit"]
    assert {"cpu", "memory"} <= set(main["resources"]["requests"])
    assert {"cpu", "memory"} <= set(main["resources"]["limits"])
    namespace = only(rendered, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_probes_use_the_health_server(
    rendered: list[Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_as_the_pod_would(rendered, tmp_path, monkeypatch)
    main = container(rendered)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"http": settings.service.health_port}
    paths = {
        probe: (main[probe]["httpGet"]["path"], main[probe]["httpGet"]["port"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": ("/healthz", "http"),
        "livenessProbe": ("/healthz", "http"),
        "readinessProbe": ("/readyz", "http"),
    }
    # Ordinary liveness values (Kubernetes' defaults): /healthz answers within a second
    # whatever the service does, so no shop size needs a tolerant probe (issue 20).
    liveness = main["livenessProbe"]
    assert liveness.get("timeoutSeconds", 1) <= 1
    assert liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3) <= 30


def test_kubernetes_waits_longer_than_the_service_takes_to_stop(
    rendered: list[Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM ends the process within the grace plus the shutdown margin (a watchdog
    sees to it): the pod's grace must cover that, with room for the process to exit,
    or Kubernetes SIGKILLs a service that was still committing."""
    settings = load_as_the_pod_would(rendered, tmp_path, monkeypatch)
    stop_takes = settings.service.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS
    assert pod(rendered)["terminationGracePeriodSeconds"] >= stop_takes + 5


def test_a_disruption_takes_one_replica_at_a_time(rendered: list[Manifest]) -> None:
    budget = only(rendered, "PodDisruptionBudget")
    labels = only(rendered, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_configuration_edits_roll_the_pods(rendered: list[Manifest]) -> None:
    config_map = service_config_map(rendered)
    name = config_map["metadata"]["name"]
    # A content hash in the name: an edit makes a new ConfigMap and a new pod template.
    assert name.startswith("rfmcube-cdc-config-") and len(name) > len("rfmcube-cdc-config-")
    assert volume_source(rendered, "config")["configMap"]["name"] == name
    assert set(config_map["data"]) == {"config.yaml", "mapping.yaml"}
    assert not [m for m in container(rendered)["volumeMounts"] if "subPath" in m]


def test_secrets_stay_out_of_config_maps_and_the_environment(rendered: list[Manifest]) -> None:
    secrets = [m for m in rendered if m["kind"] == "Secret"]
    assert len(secrets) == 2
    values = [
        base64.b64decode(v).decode().strip()
        for s in secrets
        for v in (s.get("data") or {}).values()
    ]
    config_maps = yaml.safe_dump([m for m in rendered if m["kind"] == "ConfigMap"])
    for value in values:
        assert value not in config_maps
    raw = yaml.safe_load(service_config_map(rendered)["data"]["config.yaml"])
    assert "sasl_plain_password" not in raw["kafka"]["extra"]
    assert "key" not in raw["api"]
    # Only where the configuration is: paths of mounts, no value of a secret.
    for name, value in environment(rendered).items():
        assert name in ("RFMCUBE_CDC_CONFIG", "RFMCUBE_CDC_SECRETS_DIR"), name
        assert any(PurePosixPath(value).is_relative_to(mount_of(rendered, v)) for v in MOUNTS)
    for name in ("api-key", "kafka-credentials"):
        assert volume_source(rendered, name)["secret"]["defaultMode"] == 0o440


def test_prometheus_scrapes_every_replica(rendered: list[Manifest]) -> None:
    monitor = only(rendered, "PodMonitor")
    labels = only(rendered, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


def test_the_bases_own_configuration_is_accepted_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An overlay that keeps the base's config.yaml gets a working one."""
    base = kustomize_build("deploy/base")
    config = tmp_path / "config.yaml"
    config.write_text(only(base, "ConfigMap")["data"]["config.yaml"], encoding="utf-8")
    monkeypatch.setenv("RFMCUBE_API_KEY", "k")  # wins over api.key_file, absent here
    settings = load_settings(config)
    assert settings.api.key_file == Path("/etc/rfmcube-cdc/api-key/key")
    assert settings.store.path.parent == Path("/var/lib/rfmcube-cdc")


def test_a_second_command_in_the_pod_reads_what_run_reads(
    rendered: list[Manifest], tmp_path: Path
) -> None:
    """README.md's `kubectl exec <pod> -- rfmcube-cdc resync --dry-run`: a command with
    no arguments, in the container's environment, on the pod's mounts (re-rooted
    under tmp_path: every mount path in the files and the variables moves with it)."""
    root = tmp_path / "pod"
    mounts = {v: str(mount_of(rendered, v)) for v in MOUNTS}

    def rerooted(text: str) -> str:
        for path in mounts.values():
            text = text.replace(path, f"{root}{path}")
        return text

    def materialize(volume: str, files: dict[str, str]) -> None:
        folder = root / mounts[volume].lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(rerooted(text), encoding="utf-8")

    materialize("config", service_config_map(rendered)["data"])
    materialize("api-key", secret_data(rendered, "rfmcube-cdc-api-key-"))
    materialize("kafka-credentials", secret_data(rendered, "rfmcube-cdc-kafka-"))
    materialize("state", {})
    config = yaml.safe_load(service_config_map(rendered)["data"]["config.yaml"])
    StateStore(rerooted(config["store"]["path"])).close()  # what `run` left there

    assert container(rendered)["args"] == ["run"]  # nothing only `run` would know
    env = {name: rerooted(value) for name, value in environment(rendered).items()}
    done = subprocess.run(
        [sys.executable, "-m", "consumer.cli.main", "resync", "--dry-run"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "resync plan (nothing sent)" in done.stdout
