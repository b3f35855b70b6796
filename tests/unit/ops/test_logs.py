"""The service's log set-up (consumer/ops/logs.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from consumer.ops.logs import configure


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    root, transport = logging.getLogger(), logging.getLogger("kafka.net.transport")
    handlers, level, filters = root.handlers[:], root.level, transport.filters[:]
    yield
    root.handlers[:], transport.filters[:] = handlers, filters
    root.setLevel(level)


def test_a_read_on_a_socket_kafka_python_just_closed_leaves_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """kafka-python 3.0 closes a consumer's sockets under its I/O thread: the read
    that follows is reported with a traceback at every such stop (a Traceback in the
    log of a clean stop). A real read error still is."""
    configure("json")
    configure("json")  # configured again (a child process, a test): one filter
    transport = logging.getLogger("kafka.net.transport")
    closed: Any = None  # what a close leaves in the transport's socket
    try:
        closed.recv(4096)
    except AttributeError:
        transport.exception("%s: Error receiving network data closing socket", "<conn 1>")
    try:
        raise ConnectionResetError("connection reset by peer")
    except OSError:
        transport.exception("%s: Error receiving network data closing socket", "<conn 2>")
    logged = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [entry["message"] for entry in logged] == [
        "<conn 2>: Error receiving network data closing socket"
    ]
    assert "connection reset by peer" in logged[0]["exception"]
    assert len(transport.filters) == 1
