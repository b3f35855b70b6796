"""``rfmcube-cdc dead-letters list`` and ``rfmcube-cdc dead-letters replay``.

``list`` reads the dead-letter topic and prints every letter (when, what, where
from, why, and whether a replay decided it), then the letters counted by
reason. ``replay`` sends letters back through the service's own path once
their cause is fixed (a mapping, a limit, the API, a new version): it chooses
the letters asked for (``--reason``: words of the reason; ``--since``: written
then or later) that no replay decided yet, looks in the source topics for a
later record of each record's key (which would make it obsolete), and writes
one marker per letter to the dead-letter topic; every running instance
applies the markers within seconds (:mod:`consumer.recovery.replays`), and the
active sends what they change. A letter is decided once: each is replayed at
most once. See :mod:`consumer.source.letters` for the markers.

Both run anywhere the configuration reaches Kafka (on Kubernetes, ``kubectl
exec`` into either pod); neither needs the service's port.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import IO

from consumer.config import Settings
from consumer.errors import EXIT_KAFKA, EXIT_OK, BrokerUnavailable
from consumer.source.letters import MARKER, Letter, read_letters, select, superseded, write_markers

__all__ = ["list_letters", "replay_letters"]


def _when(letter: Letter) -> str:
    if letter.timestamp_ms is None:
        return "?"
    moment = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _where(letter: Letter) -> str:
    source = letter.source
    if not source.topic:
        return "(no record)"
    return f"{source.topic}[{source.partition}]@{source.offset}"


def _letters(count: int) -> str:
    return f"{count} letter{'' if count == 1 else 's'}"


def _counts(counts: Counter[str], out: IO[str]) -> None:
    for reason, count in counts.most_common():
        print(f"  {count:6d}  {reason}", file=out)


def list_letters(settings: Settings, out: IO[str], err: IO[str], *, since_ms: int | None) -> int:
    kafka = settings.kafka
    try:
        letters = read_letters(
            kafka.bootstrap_servers, kafka.dead_letter_topic, extra=kafka.extra, since_ms=since_ms
        )
    except BrokerUnavailable as exc:
        print(f"rfmcube-cdc dead-letters: {exc}", file=err)
        return EXIT_KAFKA
    decided = {m.replay_of: m.outcome for m in letters if m.kind == MARKER}
    shown = [letter for letter in letters if letter.kind != MARKER]
    for letter in shown:
        state = "cut" if letter.truncated else decided.get(letter.id, "")
        label = {
            "replay": "replayed",
            "superseded": "superseded",
            "duplicate": "duplicate",
            "cut": "cut to fit",
        }.get(state, "-")
        print(
            f"{_when(letter)}  {letter.kind or '?':6}  {_where(letter)}  {label}  {letter.reason}",
            file=out,
        )
    replayed = sum(1 for letter in shown if decided.get(letter.id) == "replay")
    print(
        f"{len(shown)} dead letters in {kafka.dead_letter_topic} ({replayed} replayed), by reason:",
        file=out,
    )
    _counts(Counter(letter.reason for letter in shown), out)
    return EXIT_OK


def replay_letters(
    settings: Settings,
    out: IO[str],
    err: IO[str],
    *,
    reason: str | None,
    since_ms: int | None,
    dry_run: bool,
) -> int:
    kafka = settings.kafka
    topic = kafka.dead_letter_topic
    try:
        letters = read_letters(kafka.bootstrap_servers, topic, extra=kafka.extra, since_ms=since_ms)
        found = select(letters, reason=reason, since_ms=since_ms)
        print(
            f"asked for, and not decided yet: {_letters(len(found.chosen))}, by reason:", file=out
        )
        _counts(found.by_reason(), out)
        later, ends = superseded(kafka.bootstrap_servers, found.chosen, extra=kafka.extra)
        decisions = [
            (
                letter,
                "superseded" if letter.id in later else "replay",
                ends.get((letter.source.topic, letter.source.partition)),
            )
            for letter in found.chosen
        ] + [(letter, "duplicate", None) for letter in found.duplicates]
        if not dry_run:
            write_markers(kafka.bootstrap_servers, topic, decisions, extra=kafka.extra)
    except BrokerUnavailable as exc:
        print(f"rfmcube-cdc dead-letters replay: {exc}", file=err)
        return EXIT_KAFKA
    replayed = sum(1 for _, outcome, _ in decisions if outcome == "replay")
    would = "would be " if dry_run else ""
    print(
        f"{would}replayed: {_letters(replayed)} (every running instance applies them within"
        " seconds, through the mapping and configuration it runs now; the active sends what"
        " they change)",
        file=out,
    )
    if later:
        print(
            f"{would}not replayed, a later record of their key holds the row as it is now:"
            f" {_letters(len(later))}",
            file=out,
        )
    if found.duplicates:
        print(
            f"{would}not replayed, another letter of the same record is (a record read again"
            f" is dead-lettered again): {_letters(len(found.duplicates))}",
            file=out,
        )
    if found.decided:
        print(f"decided by an earlier replay, not again: {_letters(len(found.decided))}", file=out)
    if found.cut:
        print(
            f"cut to fit the dead-letter topic, cannot be replayed: {_letters(len(found.cut))}"
            " (their records are in the source topics: a resync --since sends their documents)",
            file=out,
        )
    if dry_run:
        print("dry run: nothing written", file=out)
    return EXIT_OK
