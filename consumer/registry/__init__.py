"""The schema registry: where the schemas of Avro records come from.

``client`` asks the registry over HTTP for one schema (blocking: run in a
worker thread); ``cache`` keeps what was fetched, bounded; ``schemas`` gives
each batch of records the schemas it names before it is decoded, waiting
out a registry that cannot answer. Decoding itself is
:mod:`consumer.changes.decode.avro` (pure).
"""

from __future__ import annotations

from .schemas import Registry

__all__ = ["Registry"]
