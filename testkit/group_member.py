"""One member of a single-active group, as a child process the tests can SIGKILL or SIGSTOP.

    python -m testkit.group_member BOOTSTRAP GROUP TOPIC [TOPIC ...]

Writes one JSON object per line to stdout, each with ``t`` (the lease's clock,
the same clock in every process of the machine):

    {"event": "assigned" | "revoked" | "lost", "partitions": [[topic, p], ...]}
    {"event": "records", "records": [[topic, p, offset], ...]}
    {"event": "status", "active": bool, "active_until": float | null, "partitions": [...]}
    {"event": "commit", "ok": bool, "error": str | null, "offsets": [[topic, p, offset], ...]}

Reads commands from stdin, one a line: ``status``; ``commit`` (every partition
it owns, at the next offset after the last record it received there);
``commit TOPIC:P:OFFSET ...`` (exactly these). Closing stdin leaves the group.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Mapping
from typing import Any

from consumer.source.assignor import lease_clock
from consumer.source.base import SourceSettings, batch_bytes
from consumer.source.thread import KafkaSource
from schemas.debezium import PartitionId

# Short sessions so that failover fits in a test (6 s is the broker's minimum).
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

_print_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "t": lease_clock(), **fields})
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def pairs(partitions: list[PartitionId]) -> list[list[Any]]:
    return [[topic, p] for topic, p in sorted(partitions)]


async def main(bootstrap: str, group: str, topics: list[str]) -> None:
    loop = asyncio.get_running_loop()
    consumed: dict[PartitionId, int] = {}  # next offset to read

    def on_revoke(partitions: list[PartitionId]) -> Mapping[PartitionId, int]:
        emit("revoked", partitions=pairs(partitions))
        return {}

    def on_lost(partitions: list[PartitionId]) -> None:
        emit("lost", partitions=pairs(partitions))
        for tp in partitions:
            consumed.pop(tp, None)

    def on_assign(partitions: list[PartitionId]) -> None:
        emit("assigned", partitions=pairs(partitions))

    source = KafkaSource(
        SourceSettings(bootstrap, group, tuple(topics), extra=GROUP_TIMEOUTS, poll_timeout_ms=100),
        on_revoke=on_revoke,
        on_assign=on_assign,
        on_lost=on_lost,
    )
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "quit")  # stdin closed: leave the group

    threading.Thread(target=read_stdin, daemon=True).start()
    source.start(loop)

    async def pump() -> None:
        while True:
            batch = await source.get()
            source.release(batch_bytes(batch))
            for r in batch:
                consumed[(r.topic, r.partition)] = r.offset + 1
            emit("records", records=[[r.topic, r.partition, r.offset] for r in batch])

    async def serve() -> None:
        while True:
            words = (await commands.get()).split()
            if not words:
                continue
            command, *args = words
            if command == "status":
                emit(
                    "status",
                    active=source.is_active(),
                    active_until=source.active_until(),
                    partitions=pairs(list(source.assignment())),
                )
            elif command == "commit":
                if args:
                    offsets = {}
                    for arg in args:
                        topic, partition, offset = arg.rsplit(":", 2)
                        offsets[(topic, int(partition))] = int(offset)
                else:
                    offsets = {tp: consumed.get(tp, 0) for tp in source.assignment()}
                listed = [[t, p, o] for (t, p), o in sorted(offsets.items())]
                try:
                    await source.commit(offsets)
                except Exception as exc:
                    emit("commit", ok=False, error=repr(exc), offsets=listed)
                else:
                    emit("commit", ok=True, error=None, offsets=listed)
            elif command == "quit":
                return

    pumping = asyncio.create_task(pump())
    try:
        await serve()
    finally:
        pumping.cancel()
        await source.stop()
        emit("stopped")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
