"""A dead letter is cut to fit a size: the value first, then its headers, then its key."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.source.deadletter import ORIGINAL_BYTES, TRUNCATED, fit, record_size

OWN = [("rfmcube.reason", b"column amount: too many digits"), ("rfmcube.kind", b"record")]


def test_a_letter_that_fits_is_sent_as_it_is() -> None:
    carried = [("trace", b"abc")]
    assert fit(b"k", b"v" * 100, carried, OWN, 10_000) == (b"k", b"v" * 100, carried + OWN)


def test_the_value_is_cut_first_and_the_headers_say_so() -> None:
    fitted = fit(b"k" * 10, b"v" * 5000, [("trace", b"abc")], OWN, 1000)
    assert fitted is not None
    key, value, headers = fitted
    assert key == b"k" * 10 and value is not None and 600 < len(value) < 1000
    assert dict(headers)[TRUNCATED] == b"value"
    assert dict(headers)[ORIGINAL_BYTES] == b"5010"
    assert dict(headers)["trace"] == b"abc"
    assert record_size(key, value, headers) <= 1000


def test_then_the_records_own_headers_then_the_key() -> None:
    fitted = fit(b"k" * 3000, b"v" * 100, [("trace", b"x" * 3000)], OWN, 1000)
    assert fitted is not None
    key, value, headers = fitted
    assert value == b"" and "trace" not in dict(headers)
    assert dict(headers)[TRUNCATED] == b"value,headers,key"
    assert key is not None and b"k" * 10 in key


def test_nothing_fits_when_our_own_headers_do_not() -> None:
    assert fit(b"k", b"v", [], OWN, 100) is None


@given(
    st.none() | st.binary(max_size=3000),
    st.none() | st.binary(max_size=3000),
    st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=500)), max_size=3),
    st.integers(0, 8000),
)
def test_a_fitted_letter_never_exceeds_its_limit(
    key: bytes | None, value: bytes | None, carried: list[tuple[str, bytes]], limit: int
) -> None:
    fitted = fit(key, value, carried, OWN, limit)
    if fitted is None:
        bare = [*OWN, (TRUNCATED, b"value,headers,key"), (ORIGINAL_BYTES, b"0")]
        assert record_size(b"", b"" if value is not None else None, bare) > limit - 20
    else:
        assert record_size(*fitted) <= limit
