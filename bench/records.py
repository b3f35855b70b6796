"""What the record safety net costs: ``change_of`` against decode + map alone.

    .venv/bin/python -m bench.records [--records 3000] [--passes 31]

The rows of ``bench.decode`` (a PostgreSQL orders update), mapped by the
reference shop's mapping. Passes of the two paths alternate, and the medians
of CPU time per record are compared, so that a shared machine's noise falls
on both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.decode import build_records
from consumer.changes.decode import decode_record, parse_hint
from consumer.changes.mapping import Mapping
from consumer.changes.records import change_of
from schemas.debezium import ChangeEvent, RawRecord

TOPIC = "shop.public.orders"


def _micros_per_record(records: list[RawRecord], work: Callable[[RawRecord], Any]) -> float:
    started = time.process_time()
    for record in records:
        work(record)
    return (time.process_time() - started) / len(records) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--passes", type=int, default=31)
    args = parser.parse_args()
    mapping = Mapping.load(None)
    hints = {column: parse_hint(hint) for column, hint in mapping.hints_for(TOPIC).items()}

    def decode_and_map(record: RawRecord) -> Any:
        decoded = decode_record(record, hints)
        return mapping.map_event(decoded) if isinstance(decoded, ChangeEvent) else decoded

    def safety_net(record: RawRecord) -> Any:
        return change_of(record, hints, mapping)

    print(f"{'form':12s} {'decode + map':>14s} {'change_of':>12s}")
    for form in ("schemaless", "schemas", "numeric"):
        records = [
            RawRecord(TOPIC, r.partition, r.offset, r.key, r.value)
            for r in build_records(args.records, form)
        ]
        _micros_per_record(records, decode_and_map)
        _micros_per_record(records, safety_net)
        pairs = [
            (_micros_per_record(records, decode_and_map), _micros_per_record(records, safety_net))
            for _ in range(args.passes)
        ]
        plain = statistics.median(p[0] for p in pairs)
        checked = statistics.median(p[1] for p in pairs)
        print(
            f"{form:12s} {plain:>11.2f} µs {checked:>9.2f} µs"
            f"   (+{checked - plain:.2f} µs, {100 * (checked / plain - 1):+.1f}%)"
        )
    print(f"(CPU µs per record, medians of {args.passes} alternating passes of {args.records})")


if __name__ == "__main__":
    main()
