"""A provider's Retry-After, read whatever it says."""

import email.utils
import time

import pytest

from providers.adapters._util import retry_after


def test_seconds_milliseconds_and_dates() -> None:
    assert retry_after({"retry-after": "7"}) == 7
    assert retry_after({"retry-after-ms": "1500", "retry-after": "7"}) == 1.5
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (retry_after({"retry-after": soon}) or 0) <= 31
    assert retry_after({"retry-after": "-3"}) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "Tue, 99 Foo 2026 99:99:99 GMT"},
        {"retry-after": "soon"},
        {"retry-after": "nan"},
        {"retry-after": "inf"},
        {"retry-after-ms": "nan"},
        {"retry-after-ms": "1e400"},
        {"retry-after": "Mon, 01 Jan 99999 00:00:00 GMT"},
        {},
    ],
)
def test_a_header_that_makes_no_sense_is_no_retry_after(headers: dict[str, str]) -> None:
    assert retry_after(headers) is None
