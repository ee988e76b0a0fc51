"""Terminal output shared by every command: one console, times and numbers formatted alike."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.text import Text

from shipway.core.clock import to_datetime

# Markup is off: run names, params and error messages are user data and may contain brackets.
console = Console(highlight=False, soft_wrap=False, markup=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def when(ms: int | None) -> str:
    """A millisecond timestamp as local-free UTC text, to the second."""
    dt = to_datetime(ms)
    return "-" if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S")


def duration(ms: int | None) -> str:
    """A duration in ms as 850ms, 12.3s, 4m05s or 2h03m."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def number(value: float | None) -> str:
    """A metric value, compact but exact enough to compare."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    return f"{value:.6g}"


def status_text(status: str) -> Text:
    """A run status with colour (STALE stands out)."""
    style = {"FINISHED": "green", "FAILED": "red", "KILLED": "red", "RUNNING": "cyan", "STALE": "yellow"}.get(
        status, ""
    )
    return Text(status, style=style)


def print_json(data: Any) -> None:
    """Machine-readable output for --json."""
    console.print_json(json.dumps(data, default=str))


def ok(passed: bool, good: str = "ok", bad: str = "FAIL") -> Text:
    """A green or red verdict cell."""
    return Text(good, style="green") if passed else Text(bad, style="red")
