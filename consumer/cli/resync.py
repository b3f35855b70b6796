"""``rfmcube-cdc resync``: ask the active instance for a resync, and follow it.

The resync itself runs in the service (:mod:`consumer.delivery.resync`); this command
asks for it on the service's own port, from the same machine (pod), and shows
its progress: a bar on a terminal, JSON lines otherwise. Interrupting the
command leaves the resync running; running the command again follows it.
``--dry-run`` reads the store and says what a resync would cost, sending
nothing.
"""

from __future__ import annotations

import json
import math
import sys
import time
import urllib.error
import urllib.request
from typing import IO, Any

from consumer.changes.mapping import Mapping
from consumer.config import Settings
from consumer.delivery.resync import estimate
from consumer.errors import EXIT_NOT_HERE
from consumer.state.store import StateStore

__all__ = ["dry_run", "request_resync"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def dry_run(settings: Settings, mapping: Mapping, since_ms: int | None, out: IO[str]) -> int:
    store = StateStore.open_read_only(settings.store.path)
    try:
        found = estimate(
            store,
            since_ms=since_ms,
            max_request_bytes=settings.api.max_request_bytes,
            requests_per_minute=settings.pacing.requests_per_minute,
            mark_deleted=mapping.mark_deleted if mapping.order_delete.policy == "mark" else None,
        )
    finally:
        store.close()
    print("resync plan (nothing sent):", file=out)
    for line in found.lines():
        print(f"  {line}", file=out)
    return 0


def _call(url: str, payload: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("content-type", "application/json")
    try:
        with _OPENER.open(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def request_resync(
    settings: Settings,
    since_ms: int | None,
    out: IO[str],
    *,
    interval: float = 1.0,
    starting_wait: float = 60.0,
    start: bool = True,
) -> int:
    """Ask for a resync (``start``) or only follow the current one, until it is done."""
    port = settings.service.health_port
    if port is None:
        print(
            "rfmcube-cdc resync: service.health_port is null: the running service takes"
            " resync requests on that port",
            file=sys.stderr,
        )
        return EXIT_NOT_HERE
    url = f"http://127.0.0.1:{port}/resync"
    deadline = time.monotonic() + starting_wait
    while True:
        try:
            status, answer = _call(url, {"since_ms": since_ms} if start else None)
        except OSError as exc:
            print(
                f"rfmcube-cdc resync: no service answers on port {port} here ({exc}): the"
                " resync is carried out by the running active instance; run this command"
                " beside it",
                file=sys.stderr,
            )
            return EXIT_NOT_HERE
        if status != 503 or time.monotonic() > deadline:
            break
        time.sleep(interval)  # the instance starts: it knows its role in a moment
    if status in (404, 409):
        print(f"rfmcube-cdc resync: {answer.get('message')}", file=sys.stderr)
        return EXIT_NOT_HERE if status == 409 else 1
    if status >= 300:
        print(f"rfmcube-cdc resync: refused ({status}): {answer.get('message')}", file=sys.stderr)
        return 1
    said = "started" if answer.get("started") else answer.get("state", "running")
    print(f"resync {answer['id']}: {said}, {answer['documents']} documents", file=out)
    return _follow(url, out, interval)


def _follow(url: str, out: IO[str], interval: float) -> int:
    bar = out.isatty()
    last_line = 0.0
    while True:
        try:
            _, state = _call(url)
        except OSError as exc:
            print(
                f"\nrfmcube-cdc resync: the service stopped answering ({exc}); the resync"
                " goes on when it runs again: run this command again to follow it",
                file=sys.stderr,
            )
            return EXIT_NOT_HERE
        now = time.monotonic()
        if bar:
            print("\r" + _bar(state), end="", file=out, flush=True)
        elif now - last_line >= 10 or state["state"] == "done":
            last_line = now
            print(json.dumps(_progress(state)), file=out, flush=True)
        if state["state"] == "done":
            if bar:
                print(file=out)
            print(
                f"resync {state['id']} done: {state['documents']} documents,"
                f" {state['requests']} requests, {state['bytes_sent']} bytes",
                file=out,
            )
            return 0
        time.sleep(interval)


def _progress(state: dict[str, Any]) -> dict[str, Any]:
    documents, remaining = state["documents"], state["remaining"]
    elapsed = max(time.time() - state["started_at"], 1e-3)
    done = documents - remaining
    rate = done / elapsed
    eta = None if rate <= 0 else remaining / rate
    return {
        "resync": state["id"],
        "state": state["state"],
        "documents": documents,
        "sent": done,
        "bytes": state["bytes_sent"],
        "requests": state["requests"],
        "eta_seconds": None if eta is None else math.ceil(eta),
    }


def _bar(state: dict[str, Any], width: int = 30) -> str:
    progress = _progress(state)
    documents = max(progress["documents"], 1)
    share = progress["sent"] / documents
    filled = int(width * share)
    eta = progress["eta_seconds"]
    left = "" if eta is None else f", about {eta // 60} min {eta % 60:02d} s left"
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {share:4.0%}"
        f" {progress['sent']}/{progress['documents']} documents,"
        f" {progress['bytes'] / 1e6:.1f} MB, {progress['requests']} requests{left}"
    )
