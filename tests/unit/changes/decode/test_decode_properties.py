"""Round trips of the decimal and timestamp decoders against Kafka Connect's encoding rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from consumer.changes.decode import parse_hint
from consumer.changes.decode.logical import (
    decimal_from_base64,
    epoch_micros,
    epoch_millis,
    epoch_nanos,
    fixed_scale_decimal,
    zoned_timestamp,
)
from testkit.debezium import EPOCH, encode_decimal, encode_micros, unscaled_bytes

unscaled_values = st.integers(min_value=-(10**40), max_value=10**40)
scales = st.integers(min_value=0, max_value=18)
moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@given(unscaled_values, scales)
def test_connect_decimal_round_trips_exactly(unscaled: int, scale: int) -> None:
    value = Decimal(f"{unscaled}E{-scale}")
    decoded = decimal_from_base64(encode_decimal(value, scale), scale)
    assert decoded == value
    assert decoded.as_tuple().exponent == -scale  # the scale survives, not only the value


@given(unscaled_values)
def test_unscaled_bytes_are_minimal_like_biginteger(unscaled: int) -> None:
    raw = unscaled_bytes(unscaled)
    assert int.from_bytes(raw, "big", signed=True) == unscaled
    # one byte fewer could not hold it: BigInteger.toByteArray() is minimal
    if len(raw) > 1:
        shorter = raw[1:]
        assert int.from_bytes(shorter, "big", signed=True) != unscaled


@given(unscaled_values, st.integers(min_value=1, max_value=18))
def test_fixed_scale_hint_reads_base64_and_numeric_text_alike(unscaled: int, scale: int) -> None:
    value = Decimal(f"{unscaled}E{-scale}")
    convert = fixed_scale_decimal(scale)
    assert convert(encode_decimal(value, scale)) == value
    assert convert(format(value, "f")) == value
    assert parse_hint(f"decimal({scale})").decode(value) == value


@given(moments)
def test_micro_timestamps_round_trip(moment: datetime) -> None:
    micros = encode_micros(moment)
    assert epoch_micros(micros) == moment
    assert epoch_nanos(micros * 1000 + 999) == moment  # nanoseconds truncate to µs


@given(moments)
def test_milli_timestamps_round_trip(moment: datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert epoch_millis(encode_micros(moment) // 1000) == moment


@given(moments, st.integers(min_value=-14 * 60, max_value=14 * 60), st.integers(0, 9))
def test_zoned_timestamps_in_any_offset_and_precision_land_on_the_utc_instant(
    moment: datetime, offset_minutes: int, digits: int
) -> None:
    zone_offset = timedelta(minutes=offset_minutes)
    local = (moment + zone_offset).replace(tzinfo=None)
    fraction = f"{moment.microsecond:06d}000"[:digits]
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = local.isoformat(timespec="seconds") + (f".{fraction}" if digits else "")
    text += "Z" if offset_minutes == 0 else f"{sign}{hours:02d}:{minutes:02d}"
    kept = int((fraction + "000000")[:6])
    assert zoned_timestamp(text) == moment.replace(microsecond=kept)
    assert zoned_timestamp(text).tzinfo is UTC


def test_epoch_is_zero() -> None:
    assert epoch_micros(0) == EPOCH
