"""Waiting that a stop request cuts short, and blocking work off the event loop.

Every loop of the service waits on something (records, a slot, a timer) and
must give up at once when the service is asked to stop; these helpers say it
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["first_of", "in_daemon_thread", "sleep_or_stop"]

T = TypeVar("T")


async def first_of(awaitable: Awaitable[T], stopping: asyncio.Event) -> T | None:
    """The awaitable's result, or None when ``stopping`` is set first."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            # It may still fail before the cancellation lands: nobody waits for it.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task.result() if task.done() and not task.cancelled() else None


async def sleep_or_stop(seconds: float, stopping: asyncio.Event) -> None:
    """Sleep ``seconds``, or less when ``stopping`` is set meanwhile."""
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)


def in_daemon_thread(work: Callable[[], T], name: str = "start-up") -> asyncio.Future[T]:
    """``work()`` in a daemon thread: unlike the loop's default executor, nothing
    waits for it at exit (a constructor blocked on an unreachable broker, say)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop may be closed
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
