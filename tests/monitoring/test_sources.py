"""What live monitoring reads: windows, model references, and the log read ahead in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shipway import InvalidInput
from shipway.monitoring.sources import Window, parse_instant, parse_window, prefetched


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        (timedelta(seconds=90), timedelta(seconds=90)),
    ],
)
def test_windows(text: str | timedelta, length: timedelta) -> None:
    assert parse_window(text) == length


@pytest.mark.parametrize("text", ["1y", "an hour", "0h", "-1h", "500d", "", "1.5h"])
def test_bad_windows_say_what_to_write(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"15m, 1h|longer than 0"):
        parse_window(text)


def test_a_window_ends_at_until_and_the_one_before_ends_where_it_starts() -> None:
    until = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    window = Window.ending("1h", "2024-05-01T12:00")
    assert (window.start, window.end) == (until - timedelta(hours=1), until)
    before = window.before()
    assert (before.start, before.end) == (until - timedelta(hours=2), window.start)
    assert parse_instant("2024-05-01T14:00+02:00") == until
    assert parse_instant(datetime(2024, 5, 1, 12)) == until  # naive: UTC
    with pytest.raises(InvalidInput, match="ISO 8601"):
        parse_instant("yesterday")


def test_prefetched_keeps_order_raises_where_the_error_was_and_stops_with_the_reader() -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise ValueError("unreadable file")

    seen = []
    with pytest.raises(ValueError, match="unreadable file"):
        for item in prefetched(items(), 2):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]

    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    for item in prefetched(endless(), 2):
        if item == 3:
            break
    assert closed.wait(2), "the reader was not stopped"
    time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "shipway-log-reader"]
