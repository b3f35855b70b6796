"""``python -m emulator``: serve the Rfmcube API emulator until SIGTERM or SIGINT.

Once listening it prints one line, ``emulator listening on http://HOST:PORT``
(with the real port when started with ``--port 0``), and flushes it. The API
key may come from ``--api-key`` or the ``RFMCUBE_EMULATOR_API_KEY`` variable
(which keeps it out of process listings); it is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys

from aiohttp import web

from emulator.app import create_app
from emulator.config import EmulatorConfig

API_KEY_VARIABLE = "RFMCUBE_EMULATOR_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emulator", description="A faithful emulator of the Rfmcube REST API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--api-key", help=f"the connector's key (or ${API_KEY_VARIABLE})")
    parser.add_argument("--requests-per-minute", type=int, default=60)
    parser.add_argument("--window-seconds", type=float, default=60.0)
    parser.add_argument("--max-request-bytes", type=int, default=200_000_000)
    parser.add_argument("--wrong-platform", action="store_true", help="answer every call 406")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share answered 500/503")
    parser.add_argument("--latency-ms", type=int, default=0, help="delay of every /v1 answer")
    parser.add_argument("--process-delay-ms", type=int, default=200)
    parser.add_argument("--process-fail-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--access-log", action="store_true", help="log every request line")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE, "")
    if not api_key:
        raise ValueError(f"an API key is required: --api-key or ${API_KEY_VARIABLE}")
    return EmulatorConfig(
        api_key=api_key,
        requests_per_minute=args.requests_per_minute,
        window_seconds=args.window_seconds,
        max_request_bytes=args.max_request_bytes,
        wrong_platform=args.wrong_platform,
        fail_rate=args.fail_rate,
        latency_ms=args.latency_ms,
        process_delay_ms=args.process_delay_ms,
        process_fail_rate=args.process_fail_rate,
        seed=args.seed,
    )


async def serve(config: EmulatorConfig, host: str, port: int, access_log: bool) -> None:
    access_logger = logging.getLogger("aiohttp.access") if access_log else None
    runner = web.AppRunner(create_app(config), access_log=access_logger)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound_host, bound_port = runner.addresses[0][:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"emulator listening on http://{shown_host}:{bound_port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    # Large imports allocate millions of small objects; default GC thresholds make
    # parsing them several times slower. The emulator's data is not cyclic.
    gc.set_threshold(50_000, 20, 100)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(config, args.host, args.port, args.access_log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
