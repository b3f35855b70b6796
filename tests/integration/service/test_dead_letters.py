"""Dead letters listed and replayed, through the running service on the real broker and
the emulator over HTTP: once their cause is fixed, they reach Rfmcube, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testkit.pipeline import API_KEY, Pipeline, until
from testkit.shop import Record


def dead_letters(pipeline: Pipeline, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rfmcube-cdc dead-letters <args>``, as an operator runs it beside the service."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RFMCUBE_")}
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli.main", "dead-letters", *args, "--config", str(config)],
        env={**env, "RFMCUBE_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def changed(record: Record, **after: Any) -> Record:
    value = json.loads(record.value or b"{}")
    value["after"].update(after)
    return Record(record.topic, record.key, json.dumps(value).encode())


def customer(pipeline: Pipeline, email: str) -> dict[str, Any] | None:
    found = [c for c in pipeline.api.state()["customers"] if c["email"] == email]
    return found[0] if found else None


def test_dead_letters_reach_rfmcube_once_their_cause_is_fixed_and_they_are_replayed(
    pipeline: Pipeline,
) -> None:
    # A shop without schemas: the mapping's types say how to read each column.
    shop = pipeline.shop(seed=5, schemas=False, live=True)
    for _ in range(3):
        shop.sign_up()
    shop.sign_up()
    # A mapping error: the mapping reads newsletter as a boolean; this shop says "maybe".
    mapped = changed(shop.records.pop(), newsletter="maybe")
    shop.sign_up()
    # A limit: this record is larger than limits.max_record_bytes allows here.
    large = changed(shop.records.pop(), last_name="N" * 9000)
    emails = {
        name: json.loads(record.value or b"{}")["after"]["email"]
        for name, record in (("mapped", mapped), ("large", large))
    }
    pipeline.write_with_positions([*shop.records, mapped, large])
    limits = {"limits": {"max_record_bytes": 8000}}

    first = pipeline.start(**limits)
    pipeline.wait_caught_up(first)
    assert customer(pipeline, emails["mapped"]) is None
    assert customer(pipeline, emails["large"]) is None
    listed = dead_letters(pipeline, first.config, "list")
    assert listed.returncode == 0, listed.stderr
    assert "2 dead letters" in listed.stdout and "(0 replayed)" in listed.stdout
    assert "column newsletter: boolean expects true/false" in listed.stdout
    assert "record" in listed.stdout and f"{pipeline.topics[0]}[" in listed.stdout
    assert first.stop() == 0

    # The mapping fixed: it reads newsletter as it comes. A changed mapping rebuilds the
    # store from the topics at start-up, the letter's record with it: its customer goes
    # out with no replay. The large record is dead-lettered again as it is read again.
    pipeline.mapping = pipeline.mapping.replace(
        "- newsletter: {field: newsletter, type: bool}", "- newsletter: newsletter"
    )
    second = pipeline.start(**limits)
    pipeline.wait_caught_up(second)
    until(lambda: customer(pipeline, emails["mapped"]) is not None, 30, "the mapped letter")
    assert customer(pipeline, emails["mapped"])["newsletter"] == "maybe"  # type: ignore[index]
    assert second.stop() == 0

    # The limit fixed (the default): a configuration change, which rebuilds nothing.
    third = pipeline.start()
    pipeline.wait_caught_up(third)
    assert customer(pipeline, emails["large"]) is None
    replayed = dead_letters(pipeline, third.config, "replay", "--since", "1h")
    assert replayed.returncode == 0, replayed.stderr
    # The mapped record's letter too: it changes nothing Rfmcube does not hold.
    assert "replayed: 2 letters" in replayed.stdout, replayed.stdout
    assert "another letter of the same record is" in replayed.stdout
    until(
        lambda: customer(pipeline, emails["large"]) is not None,
        30,
        "the replayed letter",
        third.log,
    )
    assert customer(pipeline, emails["large"])["lastName"] == "N" * 9000  # type: ignore[index]
    pipeline.wait_caught_up(third)

    # At most once: a second replay finds them decided, and each went out once.
    again = dead_letters(pipeline, third.config, "replay")
    assert "replayed: 0 letters" in again.stdout, again.stdout
    assert "decided by an earlier replay, not again: 3 letters" in again.stdout
    listed = dead_letters(pipeline, third.config, "list")
    assert "3 dead letters" in listed.stdout and "(2 replayed)" in listed.stdout
    time.sleep(2)  # what a replay would have sent twice would be on the wire by now
    for record in (mapped, large):
        cid = str(json.loads(record.key)["id"])
        carried = [
            r for r in pipeline.api.requests() if r["status"] == 200 and cid in r["customers"]
        ]
        assert len(carried) == 1, carried
    assert third.stop() == 0
