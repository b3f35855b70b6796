"""The ceiling: a bare kafka-python consumer that reads the topics and does nothing.

    .venv/bin/python -m bench.ceiling --bootstrap HOST:PORT --group G --records N TOPIC...

Run as a child process by ``bench.pipeline throughput`` beside the service, so
that both pay for an interpreter start, the imports and a group join. The
client configuration is the service's own (``consumer.source.thread``: the same
``consumer_config``, ``max_poll_records``, ``auto_offset_reset``, native
CRC-32C checks on), and the consumer joins a fresh group with ``subscribe``
as the service does. It polls until it has seen ``N`` records, touching
nothing in them, and prints one JSON line: the wall-clock time (``time.time``,
comparable with the parent's) of the first and the last record, and its own
CPU seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import orjson
from kafka import KafkaConsumer

from consumer.source.base import SourceSettings, consumer_config


def read_all(bootstrap: str, group: str, topics: list[str], records: int) -> dict[str, float]:
    defaults = SourceSettings(bootstrap_servers=bootstrap, group_id=group, topics=tuple(topics))
    consumer = KafkaConsumer(
        **consumer_config(
            bootstrap,
            group,
            {},
            client_id=defaults.client_id,
            auto_offset_reset="earliest",
            max_poll_records=defaults.max_poll_records,
            allow_auto_create_topics=False,
        )
    )
    consumer.subscribe(topics=topics)
    consumer.topics()  # the metadata refresh the service does before its first join
    seen = 0
    first = 0.0
    try:
        while seen < records:
            polled = consumer.poll(timeout_ms=defaults.poll_timeout_ms)
            for messages in polled.values():
                seen += len(messages)
            if seen and not first:
                first = time.time()
        last = time.time()
    finally:
        consumer.close(autocommit=False)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "records": seen,
        "first_record_at": first,
        "last_record_at": last,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("topics", nargs="+")
    args = parser.parse_args(argv)
    result = read_all(args.bootstrap, args.group, args.topics, args.records)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
