"""The ``rfmcube-cdc`` command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rfmcube-cdc",
        description="Keep Rfmcube in step with a shop database from Debezium change events in Kafka.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the streaming service until SIGTERM")
    run.add_argument("--config", required=True, help="the service's YAML configuration file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"rfmcube-cdc: '{args.command}' is not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
