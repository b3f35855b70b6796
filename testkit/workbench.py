"""Kafka chores shared by the demo, the pipeline tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from consumer.source.replay import committed_offsets, end_offsets, partitions_of

__all__ = [
    "ServiceProcess",
    "caught_up",
    "committed_offsets",
    "descendants",
    "end_offsets",
    "free_port",
    "http_status",
    "listening_pid",
    "mapping_for_prefix",
    "produce",
    "read_topic",
    "recreate_topics",
    "start_broker",
    "wait_caught_up",
    "write_config",
]

REPO = Path(__file__).resolve().parents[1]
# Loopback only: never through a proxy from the environment.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start_broker() -> str:
    """$KAFKA_BOOTSTRAP_SERVERS, else the local broker of scripts/kafka (started if needed)."""
    preset = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if preset:
        return preset
    done = subprocess.run(
        [str(REPO / "scripts" / "kafka"), "start"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr.strip() or "scripts/kafka start failed")
    return done.stdout.strip().splitlines()[-1]


def recreate_topics(bootstrap: str, topics: Sequence[str], partitions: int = 3) -> None:
    """Delete the topics if they exist and create them empty."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rfmcube-workbench")
    try:
        existing = set(admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            with contextlib.suppress(UnknownTopicOrPartitionError):
                admin.delete_topics(doomed)
        for _ in range(100):
            try:
                admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
                break
            except TopicAlreadyExistsError:
                time.sleep(0.2)  # deletion still in progress
    finally:
        admin.close()


def produce(bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes | None]]) -> int:
    """Write (topic, key, value) records with the default partitioner (by key)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    count = 0
    try:
        for topic, key, value in records:
            producer.send(topic, key=key, value=value)
            count += 1
        producer.flush()
    finally:
        producer.close()
    return count


def read_topic(bootstrap: str, topic: str, timeout: float = 5.0) -> list[str]:
    """Every record of a (small) topic as one line of text, headers included."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout * 1000),
    )
    try:
        lines = []
        for record in consumer:
            headers = {k: (v or b"").decode(errors="replace") for k, v in record.headers}
            lines.append(
                f"{headers.get('rfmcube.reason', '?')} (from "
                f"{headers.get('rfmcube.source.topic')}[{headers.get('rfmcube.source.partition')}]"
                f"@{headers.get('rfmcube.source.offset')})"
            )
        return lines
    finally:
        consumer.close()


def mapping_for_prefix(prefix: str) -> str:
    """The default mapping, for topics named ``<prefix>.public.<table>``."""
    text = (REPO / "consumer" / "default_mapping.yaml").read_text(encoding="utf-8")
    return text.replace("shop.public.", f"{prefix}.public.")


def write_config(
    folder: Path,
    *,
    bootstrap: str,
    api_url: str,
    group: str,
    dead_letter_topic: str,
    mapping: str | None = None,
    sections: dict[str, dict[str, object]] | None = None,
    name: str = "rfmcube-cdc.yaml",
) -> Path:
    """A service configuration in ``folder`` (the store lives there too); ``name``
    apart for each instance, since a process reads it only once it runs."""
    config: dict[str, dict[str, object]] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "dead_letter_topic": dead_letter_topic,
        },
        # The emulator listens on plain HTTP on this machine.
        "api": {"base_url": api_url, "allow_insecure_http": api_url.startswith("http://")},
        "store": {"path": str(folder / "state.db")},
        "service": {"health_port": None, "log_format": "text"},
    }
    for section, values in (sections or {}).items():
        config.setdefault(section, {}).update(values)
    lines: list[str] = []
    for section, values in config.items():
        lines.append(f"{section}:")
        lines.extend(f"  {key}: {orjson.dumps(value).decode()}" for key, value in values.items())
    if mapping is not None:
        (folder / "mapping.yaml").write_text(mapping, encoding="utf-8")
        lines.append("mapping: mapping.yaml")
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (the consumer process, workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found.extend(descendants(int(child)))
    return found


class ServiceProcess:
    """``rfmcube-cdc run`` as a child process, as Kubernetes would run it."""

    def __init__(self, config: Path, api_key: str, log_path: Path) -> None:
        self.config = config
        self.api_key = api_key
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.health_port: int | None = None  # its service.health_port, when a test set one

    def start(self) -> ServiceProcess:
        env = {**os.environ, "RFMCUBE_API_KEY": self.api_key}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "consumer.cli.main", "run", "--config", str(self.config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pause(self, *, consumer_too: bool = True) -> None:
        """SIGSTOP to the service and its consumer process (a long GC, a frozen VM);
        without ``consumer_too``, the consumer process goes on (it stays in the group)."""
        assert self.process is not None
        children = descendants(self.process.pid) if consumer_too else []
        for pid in [self.process.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT to what :meth:`pause` stopped."""
        assert self.process is not None
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, as a crash or an OOM kill."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> bool:
        """Until ``text`` is in the log: False if the process ends or time runs out first."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if not self.running() or time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True


def listening_pid(port: int) -> int | None:
    """The process listening on a loopback TCP port (the broker, say), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # LISTEN
                    inodes.add(f"socket:[{inode}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
    return None


def free_port() -> int:
    """A loopback port nothing listens on now (for a service's health server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of a GET (None when nothing answers)."""
    try:
        with _LOOPBACK.open(url, timeout=timeout) as answer:
            status: int = answer.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def caught_up(bootstrap: str, group: str, topics: Sequence[str]) -> bool:
    """True when the group committed every record of the topics."""
    ends = end_offsets(bootstrap, partitions_of(bootstrap, topics))
    committed = committed_offsets(bootstrap, group, list(ends))
    return all((committed.get(p) or 0) >= end for p, end in ends.items())


def wait_caught_up(
    bootstrap: str, group: str, topics: Sequence[str], service: ServiceProcess, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.running():
            return False
        if caught_up(bootstrap, group, topics):
            return True
        time.sleep(0.5)
    return False
