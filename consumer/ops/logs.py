"""Logging set-up: one JSON object per line (or plain text for a terminal)."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_CLOSED_SOCKET = "'NoneType' object has no attribute 'recv'"


class ClosedSocketRead(logging.Filter):
    """Drops kafka-python's report of a read on a socket it has just closed.

    kafka-python 3.0 closes a consumer's connections from the thread that closes
    the consumer while its I/O thread may be reading one of them: ``recv`` on the
    ``None`` the close left, logged with a traceback ("Error receiving network
    data") at every such stop. The connection was being closed on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, AttributeError) and _CLOSED_SOCKET in str(error))


def configure(fmt: str = "json", level: int | str = logging.INFO) -> None:
    """Log to stderr at ``level`` (a number or a name such as ``"DEBUG"``); kafka-python
    stays at WARNING or above, its DEBUG output being a flood."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
    transport = logging.getLogger("kafka.net.transport")
    if not any(isinstance(f, ClosedSocketRead) for f in transport.filters):
        transport.addFilter(ClosedSocketRead())
