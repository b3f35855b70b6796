"""The mapping file and the mapper: Debezium rows → Rfmcube fields.

    mapping = Mapping.load(path)          # None: the shipped default_mapping.yaml
    mapping.topics(); mapping.kind_of(topic); mapping.hints_for(topic)
    change = mapping.map_event(event)     # EntityChange | None; raises BadRecord

Modules: :mod:`.model` (the file's shape, pydantic), :mod:`.loading` (YAML and
errors), :mod:`.rules` (whole-file checks, compiled rules), :mod:`.values`
(value conversions), :mod:`.mapper` (the hot path).
"""

from consumer.changes.mapping.mapper import KEY_SEPARATOR, Mapping, fill_unavailable
from consumer.changes.mapping.rules import OrderDeletePolicy
from consumer.changes.mapping.values import check_hint, iso_utc

__all__ = [
    "KEY_SEPARATOR",
    "Mapping",
    "OrderDeletePolicy",
    "check_hint",
    "fill_unavailable",
    "iso_utc",
]
