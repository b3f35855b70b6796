"""The ``rfmcube-cdc`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sqlite3
import sys
from typing import TYPE_CHECKING

from consumer import version
from consumer.config import CONFIG_ENV, SECRETS_DIR_ENV
from consumer.errors import ConfigError

if TYPE_CHECKING:
    from consumer.changes.mapping import Mapping
    from consumer.config import Settings

# Read by every command when its flag is absent, so that a second command in a pod
# (kubectl exec ... rfmcube-cdc resync) reads what `run` reads.


def _add_sources(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV) or None,
        help=f"the service's YAML configuration (defaults for every key); default ${CONFIG_ENV}",
    )
    command.add_argument(
        "--secrets-dir",
        default=os.environ.get(SECRETS_DIR_ENV) or None,
        help="a directory of secret files, one per key, named like its environment variable "
        f"(RFMCUBE_CDC__KAFKA__EXTRA__SASL_PLAIN_PASSWORD); default ${SECRETS_DIR_ENV}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rfmcube-cdc",
        description="Keep Rfmcube in step with a shop database from Debezium events in Kafka.",
        epilog="Any key can be set from the environment: RFMCUBE_CDC__<SECTION>__<KEY> "
        "(e.g. RFMCUBE_CDC__KAFKA__BOOTSTRAP_SERVERS). Precedence: environment, secret files, "
        "the YAML file, defaults. The API key: $RFMCUBE_API_KEY or api.key_file.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the streaming service until SIGTERM",
        description="Run the service. The API key comes from $RFMCUBE_API_KEY or api.key_file.",
    )
    _add_sources(run)
    check = sub.add_parser(
        "check-config",
        help="validate the configuration and mapping, report every problem, exit",
        description="Validate the configuration and the mapping offline; with --connect, also"
        " reach the Kafka cluster (topics, their retention, the dead-letter topic) and the"
        " API (the key), as the service would. Exit codes: README.md.",
    )
    _add_sources(check)
    check.add_argument(
        "--connect",
        action="store_true",
        help="also check the cluster, the topics and the API key (one request)",
    )
    resync = sub.add_parser(
        "resync",
        help="send every document again (or those changed since a time), resumable",
        description="Ask the running active instance, on this machine, to send every"
        " customer with its orders again, as imports packed near the size limit, within the"
        " key's budget; then follow its progress. Interrupting this command leaves the"
        " resync running. --dry-run says what it would cost and sends nothing.",
    )
    _add_sources(resync)
    resync.add_argument(
        "--since",
        help="only what changed after this time: 2026-11-27T18:00:00Z, or back from now: 24h",
    )
    what = resync.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="print the plan, send nothing")
    what.add_argument(
        "--status",
        action="store_true",
        help="follow the resync running (or report the last one), starting none",
    )
    letters = sub.add_parser(
        "dead-letters",
        help="list the dead letters, or replay them once their cause is fixed",
        description="list: every dead letter (when, what, where from, why), counted by reason."
        " replay: send the letters asked for back through the service's own path (each at most"
        " once): the running instances apply them within seconds.",
    )
    what_letters = letters.add_subparsers(dest="letters", required=True)
    listing = what_letters.add_parser("list", help="every dead letter, counted by reason")
    _add_sources(listing)
    listing.add_argument("--since", help="written then or later: 2026-11-27T18:00:00Z, or 24h")
    again = what_letters.add_parser("replay", help="replay dead letters whose cause is fixed")
    _add_sources(again)
    again.add_argument("--reason", help="only letters whose reason contains these words")
    again.add_argument("--since", help="written then or later: 2026-11-27T18:00:00Z, or 24h")
    again.add_argument("--dry-run", action="store_true", help="say what it would do, write nothing")
    reference = sub.add_parser(
        "config-reference",
        help="print every configuration key with its type, default and variable",
        description="The configuration reference of this version, made from its settings"
        " model: Markdown, or (--yaml) a configuration file with every key at its default.",
    )
    reference.add_argument("--yaml", action="store_true", help="a YAML file at the defaults")
    return parser


def _refuse(error: ConfigError) -> int:
    # Each line says where its value came from: the configuration merges a file, the
    # environment and secret files.
    print("rfmcube-cdc: configuration refused:", file=sys.stderr)
    for line in error.lines():
        print(f"  {line}", file=sys.stderr)
    return 2


def _resync(args: argparse.Namespace, settings: Settings, mapping: Mapping) -> int:
    from consumer.cli.resync import dry_run, request_resync
    from consumer.delivery.resync import parse_since

    try:
        since_ms = None if args.since is None else parse_since(args.since)
    except ValueError as exc:
        print(f"rfmcube-cdc resync: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        try:
            return dry_run(settings, mapping, since_ms, sys.stdout)
        except (OSError, sqlite3.Error) as exc:
            print(f"rfmcube-cdc resync: cannot read the store: {exc}", file=sys.stderr)
            return 6
    try:
        return request_resync(settings, since_ms, sys.stdout, start=not args.status)
    except KeyboardInterrupt:
        print("\nthe resync goes on in the service; run this command again to follow it")
        return 0


def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.cli.deadletters import list_letters, replay_letters
    from consumer.delivery.resync import parse_since

    try:
        since_ms = None if args.since is None else parse_since(args.since)
    except ValueError as exc:
        print(f"rfmcube-cdc dead-letters: {exc}", file=sys.stderr)
        return 2
    if args.letters == "list":
        return list_letters(settings, sys.stdout, sys.stderr, since_ms=since_ms)
    return replay_letters(
        settings,
        sys.stdout,
        sys.stderr,
        reason=args.reason,
        since_ms=since_ms,
        dry_run=args.dry_run,
    )


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    # Until the service installs its own handlers, SIGTERM means "nothing was
    # done yet, exit cleanly" rather than dying with -15.
    signal.signal(signal.SIGTERM, _exit_quietly)
    args = build_parser().parse_args(argv)
    if args.command == "config-reference":
        from consumer.cli import reference

        print(reference.yaml_sample() if args.yaml else reference.markdown(), end="")
        return 0
    from consumer.changes.mapping import Mapping
    from consumer.config import load_settings
    from consumer.ops.logs import configure

    try:
        settings = load_settings(args.config, secrets_dir=args.secrets_dir)
        mapping = Mapping.load(settings.mapping)
        from consumer.delivery.privacy import anonymizer_for

        anonymizer_for(settings, mapping)  # the anonymizing key, when the mapping needs it
    except ConfigError as exc:
        return _refuse(exc)
    if args.command == "check-config":
        print(f"configuration ok: topics {', '.join(mapping.topics())}")
        if args.connect:
            from consumer.cli.connect import connect_checks

            return connect_checks(settings, mapping, sys.stdout)
        return 0
    if args.command == "resync":
        return _resync(args, settings, mapping)
    if args.command == "dead-letters":
        return _dead_letters(args, settings)
    configure(settings.service.log_format, settings.service.log_level)
    from consumer.app.service import Service
    from consumer.errors import EXIT_STORE, StoreUnusable

    try:
        return asyncio.run(Service(settings, mapping).run())
    except StoreUnusable as exc:
        logging.getLogger("consumer.app.service").error("stopping: %s", exc)
        return EXIT_STORE


if __name__ == "__main__":
    raise SystemExit(main())
