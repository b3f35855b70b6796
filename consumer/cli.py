"""The ``rfmcube-cdc`` command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from consumer.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rfmcube-cdc",
        description="Keep Rfmcube in step with a shop database from Debezium events in Kafka.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the streaming service until SIGTERM",
        description="Run the service. The API key comes from $RFMCUBE_API_KEY or api.key_file.",
    )
    run.add_argument("--config", help="the service's YAML configuration (defaults for every key)")
    check = sub.add_parser("check-config", help="validate the configuration and mapping, then exit")
    check.add_argument("--config", help="the service's YAML configuration")
    return parser


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    # Until the service installs its own handlers, SIGTERM means "nothing was
    # done yet, exit cleanly" rather than dying with -15.
    signal.signal(signal.SIGTERM, _exit_quietly)
    args = build_parser().parse_args(argv)
    from consumer.config import load_settings
    from consumer.logs import configure
    from consumer.mapping import Mapping

    try:
        settings = load_settings(args.config)
        mapping = Mapping.load(settings.mapping)
    except ConfigError as exc:
        print(f"rfmcube-cdc: configuration refused: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"configuration ok: topics {', '.join(mapping.topics())}")
        return 0
    configure(settings.service.log_format)
    from consumer.service import Service

    return asyncio.run(Service(settings, mapping).run())


if __name__ == "__main__":
    raise SystemExit(main())
