"""deploy/components/prometheus: the alerts and the Grafana dashboard, as the example
overlay renders them. The rules pass promtool's checks and their unit tests
(tests/system/deploy/rules/: every alert seen firing and not firing); every query of the
rules and of the dashboard parses with Prometheus' own parser and names only metrics
that the service exports, that the rules record, or that the kubelet,
kube-state-metrics and Prometheus provide.

promtool (github.com/prometheus/prometheus/cmd/promtool) is built by scripts/promtool
from the Go module proxy on first use: several minutes, once per machine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.ops.metrics import Metrics, ServiceState

REPO = Path(__file__).resolve().parents[3]
OVERLAY = "deploy/overlays/example"
COMPONENT = REPO / "deploy" / "components" / "prometheus"
RULE_TESTS = sorted((Path(__file__).parent / "rules").glob("*.yaml"))
RULES_FILE = "rfmcube-cdc.rules.yaml"  # the name the rule tests load (rule_files)

Manifest = dict[str, Any]

# --- the metrics the service exports: read off its own registry ---------------------------


class _Scraped:
    """A service with every optional series set (they appear once there is something to
    say: the last acceptance and commit, a partition's lag)."""

    def metrics_state(self) -> ServiceState:
        return ServiceState(
            last_accepted_at=1.0, last_commit_at=1.0, lag={("t", 0): 0}, active=True
        )


# Metric families by (name, type), as prometheus_client names them (a counter without
# its _total): what the service's /metrics serves.
SERVICE_FAMILIES = {(family.name, family.type) for family in Metrics(_Scraped()).registry.collect()}

# Metrics of others that the rules and the dashboard read.
OTHERS = {
    "up": "Prometheus, per scraped target",
    "kubelet_volume_stats_available_bytes": "the kubelet",
    "kubelet_volume_stats_capacity_bytes": "the kubelet",
    "kube_pod_container_status_last_terminated_exitcode": "kube-state-metrics",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
}


def sample_names(name: str, kind: str) -> set[str]:
    """The series names PromQL sees for a family (prometheus_client's exposition)."""
    return {
        "counter": {f"{name}_total", f"{name}_created"},
        "gauge": {name},
        "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"},
        "summary": {name, f"{name}_sum", f"{name}_count", f"{name}_created"},
        "info": {f"{name}_info"},
    }[kind]


SERVICE_SERIES = {s for name, kind in SERVICE_FAMILIES for s in sample_names(name, kind)}


# --- rendering and promtool ---------------------------------------------------------------


def run(
    command: list[str], cwd: Path = REPO, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def rendered() -> list[Manifest]:
    done = run([str(REPO / "scripts" / "kustomize"), "build", OVERLAY], timeout=900)
    assert done.returncode == 0, done.stderr
    return [document for document in yaml.safe_load_all(done.stdout) if document]


@pytest.fixture(scope="session")
def promtool() -> str:
    """scripts/promtool, built on first use (several minutes: Prometheus is large)."""
    script = str(REPO / "scripts" / "promtool")
    done = run([script, "--version"], timeout=3600)
    assert done.returncode == 0, done.stderr
    return script


def only(rendered: list[Manifest], kind: str, prefix: str = "") -> Manifest:
    found = [m for m in rendered if m["kind"] == kind and m["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"{len(found)} {kind} named {prefix}*"
    return found[0]


@pytest.fixture(scope="module")
def groups(rendered: list[Manifest]) -> list[dict[str, Any]]:
    rule = only(rendered, "PrometheusRule")
    found: list[dict[str, Any]] = rule["spec"]["groups"]
    return found


def rules_of(groups: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for group in groups:
        yield from group["rules"]


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules_of(groups) if "alert" in rule}


@pytest.fixture
def rules_dir(groups: list[dict[str, Any]], tmp_path: Path) -> Path:
    """The rendered rules as a plain Prometheus rules file, beside the rule tests."""
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    for test in RULE_TESTS:
        shutil.copy(test, tmp_path / test.name)
    return tmp_path


@pytest.fixture(scope="module")
def dashboard(rendered: list[Manifest]) -> dict[str, Any]:
    config_map = only(rendered, "ConfigMap", "rfmcube-cdc-grafana-dashboard")
    (text,) = config_map["data"].values()
    found: dict[str, Any] = json.loads(text)
    return found


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # inside collapsed rows


# --- the alerts -----------------------------------------------------------------------


# What a cluster gets: every alert the issue asks for, by what it catches.
ALERTS = {
    "RfmcubeCdcNotKeepingUp": "the consumer lag grows or does not shrink",
    "RfmcubeCdcApiFailing": "the API accepts nothing (from the first request on)",
    "RfmcubeCdcApiRefused": "the API refuses the key: the service exits with code 3",
    "RfmcubeCdcDeadLetters": "records or documents were dead-lettered",
    "RfmcubeCdcNotExactlyOneActive": "sum(rfmcube_cdc_active) != 1",
    "RfmcubeCdcOwedDocumentsAgeing": "owed documents wait too long",
    "RfmcubeCdcFreshnessSlow": "freshness p99 above 5 minutes",
    "RfmcubeCdcStoreVolumeFillingUp": "the store's volume fills within a day",
    "RfmcubeCdcStoreVolumeAlmostFull": "the store's volume is almost full",
}


def test_the_overlay_renders_the_alerts(groups: list[dict[str, Any]]) -> None:
    found = alerts(groups)
    assert set(found) == set(ALERTS)
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_promtool_checks_the_rules(
    promtool: str, groups: list[dict[str, Any]], rules_dir: Path
) -> None:
    done = run([promtool, "check", "rules", RULES_FILE], cwd=rules_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(list(rules_of(groups)))} rules found" in done.stdout


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda path: path.stem)
def test_promtool_runs_the_rule_tests(promtool: str, rules_dir: Path, test_file: Path) -> None:
    done = run([promtool, "test", "rules", test_file.name], cwd=rules_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_not_firing(groups: list[dict[str, Any]]) -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for test_file in RULE_TESTS:
        spec = yaml.safe_load(test_file.read_text(encoding="utf-8"))
        assert spec["rule_files"] == [RULES_FILE], test_file.name
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = set(alerts(groups))
    assert names - firing == set(), "never seen firing"
    assert names - quiet == set(), "never seen quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


# --- the dashboard --------------------------------------------------------------------


# Every panel the issue asks for, by its title, and a metric it must show.
PANELS = {
    "Throughput": "rfmcube_cdc_records_total",
    "Requests a minute, by call and status": "rfmcube_cdc_requests_total",
    "Consumer lag": "rfmcube_cdc_consumer_lag_records",
    "Owed documents": "rfmcube_cdc_owed_documents",
    "Age of the oldest owed document": "rfmcube_cdc_owed_age_seconds",
    "Freshness p50 and p99, by call": "rfmcube_cdc_freshness_seconds_bucket",
    "Rate limit free slots": "rfmcube_cdc_rate_limit_free_slots",
    "Dead letters": "rfmcube_cdc_dead_letters_total",
    "Active replicas": "rfmcube_cdc_active",
    "Import processes, by outcome": "rfmcube_cdc_import_processes_total",
}


def test_the_dashboard_is_a_config_map_grafana_loads(rendered: list[Manifest]) -> None:
    config_map = only(rendered, "ConfigMap", "rfmcube-cdc-grafana-dashboard")
    # Grafana's dashboard sidecar loads ConfigMaps with this label (from the namespaces
    # its searchNamespace names: this one must be among them).
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    # A fixed name: a hash suffix would leave every old copy for the sidecar to load.
    assert config_map["metadata"]["name"] == "rfmcube-cdc-grafana-dashboard"
    ((key, text),) = config_map["data"].items()
    assert key.endswith(".json")
    assert text == (COMPONENT / "grafana-dashboard.json").read_text(encoding="utf-8")


def test_the_dashboard_has_a_panel_for_each_question(
    promtool: str, dashboard: dict[str, Any]
) -> None:
    assert dashboard["uid"] == "rfmcube-cdc"
    by_title = {panel["title"]: panel for panel in panels(dashboard)}
    for title, metric in PANELS.items():
        assert title in by_title, f"no panel {title!r}"
        names = {n for t in by_title[title]["targets"] for n in selector_names(t["expr"])}
        assert metric in names, f"{title!r} does not show {metric}"
    # Every query goes to the data source picked in the dashboard's variable.
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


# --- every query names metrics that exist ---------------------------------------------

MARK = "rfmcube_probe"
GRAFANA_DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def promql(expr: str) -> str:
    """A dashboard query as Prometheus gets it: Grafana's variables replaced."""

    def value(match: re.Match[str]) -> str:
        return GRAFANA_DURATIONS.get(match[1], "grafana-variable")

    return re.sub(r"\$\{?(\w+)\}?", value, expr)


_PARSED: dict[str, list[str]] = {}
# A selector as promtool prints it, marked: name{matchers,rfmcube_probe="1"}, where
# a matcher's quoted value may hold any character.
SELECTOR = re.compile(
    r"([A-Za-z_:][A-Za-z0-9_:]*)?\{(?:\"(?:[^\"\\]|\\.)*\"|[^{}\"])*?\b" + MARK + r'="1"\}'
)


def selector_names(expr: str) -> list[str]:
    """The metric name of every selector in expr, found by Prometheus' parser
    (promtool sets a marker label on each selector, then we read them back)."""
    expr = promql(expr)
    if expr not in _PARSED:
        script = str(REPO / "scripts" / "promtool")
        done = run([script, "--experimental", "promql", "label-matchers", "set", expr, MARK, "1"])
        assert done.returncode == 0, f"{expr!r} does not parse: {done.stderr.strip()}"
        found = SELECTOR.findall(done.stdout)
        assert found, f"no selector found in {expr!r}: {done.stdout}"
        _PARSED[expr] = found
    return _PARSED[expr]


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # Grafana's label_values(selector, label): the selector is PromQL.
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert match, variable["query"]
            yield f"variable {variable['name']}", match[1]


def test_every_query_names_only_metrics_that_exist(
    promtool: str, groups: list[dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    recorded = {rule["record"] for rule in rules_of(groups) if "record" in rule}
    queries = [(f"rule {r.get('alert') or r['record']}", r["expr"]) for r in rules_of(groups)]
    queries += list(dashboard_queries(dashboard))
    unknown = []
    for where, expr in queries:
        for name in selector_names(expr):
            if not name:
                unknown.append((where, "a selector without a metric name"))
            elif name.startswith("rfmcube_cdc"):
                if name not in SERVICE_SERIES | recorded:
                    unknown.append((where, name))
            elif name not in OTHERS:
                unknown.append((where, name))
    assert unknown == []


def test_the_metrics_check_catches_a_metric_the_service_lacks(promtool: str) -> None:
    """The check above would fail on a misspelt or missing metric."""
    names = selector_names("sum(rate(rfmcube_cdc_request_total[$__rate_interval])) > 0")
    assert names == ["rfmcube_cdc_request_total"]
    assert "rfmcube_cdc_request_total" not in SERVICE_SERIES
    assert "rfmcube_cdc_requests_total" in SERVICE_SERIES
    assert selector_names('histogram_quantile(0.9, x_bucket{a="{b}"}) + on (c) y') == [
        "x_bucket",
        "y",
    ]
