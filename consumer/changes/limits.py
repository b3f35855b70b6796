"""Limits on one record: what turns a pathological record into a dead letter.

The defaults are far beyond what a shop's database holds (a price has a
dozen digits, a JSON column a few levels), and far below what would cost the
service its memory or its store: a number of a billion digits, JSON nested a
thousand levels deep. :class:`RecordLimits` is the plain object the hot path
reads; :class:`LimitsConfig` is the ``limits:`` section of the configuration.

Hard bounds, not configurable (the reasons say so):
- integers must fit in 64 bits (signed, or unsigned up to 2^64 - 1): the
  store and the API bodies are written with orjson, which refuses others;
- a decimal has at most 4300 digits: Python's own limit on int/str
  conversions (``sys.get_int_max_str_digits``), which the decoder meets;
- JSON deeper than ~1000 levels cannot be parsed at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64
DEFAULT_MAX_NUMBER_DIGITS = 1000
DEFAULT_MAX_DECIMAL_SCALE = 1000

# orjson writes at most 254 nested levels; a document adds a few around a field
# (body, customers, customer, orders, order, items, item): keep well below.
MAX_JSON_DEPTH = 200
MAX_NUMBER_DIGITS = 4300  # Python's int/str conversion limit, met by decoding
MAX_DECIMAL_SCALE = 16383  # PostgreSQL's largest numeric scale


@dataclass(frozen=True, slots=True)
class RecordLimits:
    """What one record may hold; a record past a limit is dead-lettered.

    ``max_record_bytes``: key + value bytes of the Kafka record.
    ``max_json_depth``: nesting of a sent column's value (a list or object is one level).
    ``max_number_digits``: significant digits of a sent decimal.
    ``max_decimal_scale``: digits after the decimal point of a sent decimal.
    """

    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_number_digits: int = DEFAULT_MAX_NUMBER_DIGITS
    max_decimal_scale: int = DEFAULT_MAX_DECIMAL_SCALE


class LimitsConfig(BaseModel):
    """The ``limits:`` section of the configuration file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Each description is the key's line in the configuration reference.
    max_record_bytes: int = Field(
        default=DEFAULT_MAX_RECORD_BYTES, gt=0, description="a record's key + value, in bytes"
    )
    max_json_depth: int = Field(
        default=DEFAULT_MAX_JSON_DEPTH,
        ge=1,
        le=MAX_JSON_DEPTH,
        description="nesting of a sent JSON column (a list or an object is one level)",
    )
    max_number_digits: int = Field(
        default=DEFAULT_MAX_NUMBER_DIGITS,
        ge=1,
        le=MAX_NUMBER_DIGITS,
        description="significant digits of a sent number",
    )
    max_decimal_scale: int = Field(
        default=DEFAULT_MAX_DECIMAL_SCALE,
        ge=0,
        le=MAX_DECIMAL_SCALE,
        description="digits after the decimal point of a sent number",
    )

    def record_limits(self) -> RecordLimits:
        return RecordLimits(
            max_record_bytes=self.max_record_bytes,
            max_json_depth=self.max_json_depth,
            max_number_digits=self.max_number_digits,
            max_decimal_scale=self.max_decimal_scale,
        )
