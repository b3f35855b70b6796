"""Debezium's connectors on the Kafka Connect worker of ``scripts/connect``.

Standard library only: the worker's REST API through urllib, the connectors'
settings from the templates of ``scripts/connect-jars`` (PostgreSQL's,
MariaDB's, and the Avro converter's for a schema registry).

    python -m testkit.e2e.debezium register --dbname shop --prefix shop   # the demo's connector
    python -m testkit.e2e.debezium delete shop-connector
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from string import Template
from typing import Any

from testkit.e2e.scripts import start_script

REPO = Path(__file__).resolve().parents[2]
JARS = REPO / "scripts" / "connect-jars"
TEMPLATE = JARS / "postgres-connector.properties"
MARIADB_TEMPLATE = JARS / "mariadb-connector.properties"
AVRO_TEMPLATE = JARS / "avro-converter.properties"
# Loopback only: never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start_connect(bootstrap: str | None = None) -> str:
    """``scripts/connect start`` on ``bootstrap`` (default: $KAFKA_BOOTSTRAP_SERVERS, else
    the broker of scripts/kafka), which must run: the worker's REST URL."""
    if bootstrap:
        return start_script("connect", KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    return start_script("connect")


def connector_config(
    name: str,
    *,
    port: int,
    dbname: str,
    prefix: str,
    slot: str,
    decimals: str = "precise",
    **overrides: str,
) -> dict[str, str]:
    """The template's settings with its ``${...}`` filled in, plus ``overrides``."""
    values = {"name": name, "port": port, "dbname": dbname, "prefix": prefix, "slot": slot}
    values["decimals"] = decimals
    return {**template(TEMPLATE, values), **overrides}


def mariadb_connector_config(
    name: str,
    *,
    port: int,
    dbname: str,
    prefix: str,
    server_id: int,
    bootstrap: str,
    decimals: str = "precise",
    **overrides: str,
) -> dict[str, str]:
    """MariaDB's template filled in: the tables of ``testkit/e2e/mariadb-shop.sql``."""
    tables = ",".join(f"{dbname}.{t}" for t in ("customers", "orders", "order_lines"))
    values = {
        "name": name,
        "port": port,
        "dbname": dbname,
        "prefix": prefix,
        "tables": tables,
        "server_id": server_id,
        "bootstrap": bootstrap,
        "decimals": decimals,
    }
    return {**template(MARIADB_TEMPLATE, values), **overrides}


def avro_converter_config(registry: str) -> dict[str, str]:
    """Keys and values in Avro through Apicurio's converter, Confluent framing; ``registry``
    is Apicurio's v2 API (``testkit.e2e.registry.apicurio_api``)."""
    return template(AVRO_TEMPLATE, {"registry": registry})


def template(path: Path, values: dict[str, object]) -> dict[str, str]:
    """A ``.properties`` template of scripts/connect-jars with its ``${...}`` filled in."""
    config: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            config[key.strip()] = Template(value.strip()).substitute(values)
    return config


class ConnectWorker:
    """A Kafka Connect worker's REST API."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        with _OPENER.open(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def register(self, config: dict[str, str]) -> None:
        """Creates (or reconfigures) the connector ``config["name"]``."""
        settings = {k: v for k, v in config.items() if k != "name"}
        self._call("PUT", f"/connectors/{config['name']}/config", settings)

    def status(self, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", f"/connectors/{name}/status")
        return answer

    def wait_running(self, name: str, timeout: float = 60.0) -> None:
        """Until the connector and its task report RUNNING; a FAILED task raises at once."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                status = self.status(name)
            except urllib.error.HTTPError as error:
                if error.code != 404:
                    raise
                time.sleep(0.3)
                continue
            tasks = status.get("tasks") or []
            for task in tasks:
                if task.get("state") == "FAILED":
                    raise RuntimeError(f"connector {name} failed: {task.get('trace', '')[:3000]}")
            if (
                status["connector"]["state"] == "RUNNING"
                and tasks
                and all(t["state"] == "RUNNING" for t in tasks)
            ):
                return
            time.sleep(0.3)
        raise TimeoutError(f"connector {name} is not RUNNING after {timeout} s: {status}")

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Restarts the connector and its task (it resumes from its stored offsets)."""
        self._call("POST", f"/connectors/{name}/restart?includeTasks=true&onlyFailed=false")
        self.wait_running(name, timeout)

    def delete(self, name: str) -> None:
        try:
            self._call("DELETE", f"/connectors/{name}")
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Debezium's connector on scripts/connect")
    parser.add_argument("--url", default="http://127.0.0.1:28083")
    sub = parser.add_subparsers(dest="command", required=True)
    register = sub.add_parser("register", help="create the shop's connector and wait for it")
    register.add_argument("--dbname", default="shop")
    register.add_argument("--port", type=int, default=25432)
    register.add_argument("--prefix", default="shop")
    register.add_argument("--slot", default="rfmcube_shop")
    register.add_argument("--decimals", choices=["precise", "string"], default="precise")
    delete = sub.add_parser("delete", help="delete a connector (its slot stays)")
    delete.add_argument("name")
    args = parser.parse_args(argv)
    worker = ConnectWorker(args.url)
    if args.command == "register":
        name = f"{args.prefix}-connector"
        worker.register(
            connector_config(
                name,
                port=args.port,
                dbname=args.dbname,
                prefix=args.prefix,
                slot=args.slot,
                decimals=args.decimals,
            )
        )
        worker.wait_running(name)
        print(f"{name} RUNNING: topics {args.prefix}.public.{{customers,orders,order_items}}")
    else:
        worker.delete(args.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
