"""The ``limits:`` section: defaults no shop reaches, bounds the service can honour."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from consumer.changes.limits import LimitsConfig, RecordLimits


def test_the_section_defaults_are_the_record_limits_defaults() -> None:
    assert LimitsConfig().record_limits() == RecordLimits()
    assert RecordLimits().max_record_bytes == 16 * 1024 * 1024


def test_a_user_may_raise_a_limit() -> None:
    section = LimitsConfig.model_validate({"max_json_depth": 150, "max_number_digits": 4000})
    assert section.record_limits() == RecordLimits(max_json_depth=150, max_number_digits=4000)


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("max_json_depth", 300, "less than or equal to 200"),  # orjson writes 254 levels
        ("max_number_digits", 5000, "less than or equal to 4300"),  # Python's int/str limit
        ("max_decimal_scale", -1, "greater than or equal to 0"),
        ("max_record_bytes", 0, "greater than 0"),
        ("max_depth", 3, "Extra inputs are not permitted"),
    ],
)
def test_a_limit_the_service_cannot_honour_is_refused(key: str, value: int, why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LimitsConfig.model_validate({key: value})
    (error,) = caught.value.errors()
    assert error["loc"] == (key,) and why in error["msg"]
