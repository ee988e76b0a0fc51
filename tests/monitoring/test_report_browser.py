"""The monitoring report, opened in a real headless Chromium: it renders, its charts are drawn, the
drifted features and the data-quality issues are marked, and the page logs no error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipway.monitoring import live_drift, live_quality, record_feedback

CHROMIUM = Path("/usr/bin/chromium")
RED = "rgb(217, 45, 32)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        # The report must be seen working in a browser; without one the suite is incomplete, not green.
        pytest.fail("Chromium is not installed: run ./scripts/test, which installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield browser
        browser.close()


def _open(browser: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    page = browser.new_page()
    errors: list[str] = []
    fetched: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors, fetched


def _texts(page: Any, xpath: str) -> list[str]:
    return [t.strip() for t in page.locator(f"xpath={xpath}").all_inner_texts()]


def test_the_drift_and_quality_report_renders_its_charts_and_marks_what_drifted(
    browser, customers, churn, serve, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"))
    frame = customers(1_500, 31, shift=0.6)
    ids = served.predict(frame)
    served.send([{"tenure": 3, "charges": 80.0, "plan": "gold"}])  # refused: an unseen category
    served.flush()
    record_feedback("churn", [{"request_id": ids[0], "row": r, "label": r % 2} for r in range(100)])
    report = live_drift("churn@prod", window="1h")
    quality = live_quality("churn@prod", window="1h")
    assert report.drifted_columns == ["charges"]
    path = tmp_path / "drift.html"
    report.to_html(path, quality=quality)

    page, errors, fetched = _open(browser, path)
    assert page.title() == "Monitoring: churn"
    # The summary marks the drifted feature, in red, and only it.
    drifted = "//h2[@id='feature-drift']/following-sibling::table[1]//tr[contains(@class, 'drifted')]/td[1]"
    assert _texts(page, drifted) == ["charges"]
    cell = page.locator(f"xpath={drifted}").first
    assert cell.evaluate("td => getComputedStyle(td).borderLeftColor") == RED
    # A drawn chart per feature: reference and current overlaid, with a real size on the page.
    for feature in ("tenure", "charges", "plan"):
        chart = page.locator(f"section#f-{feature} svg")
        assert chart.count() == 1
        box = chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 50
        shapes = page.locator(f"section#f-{feature} svg polyline, section#f-{feature} svg rect").count()
        assert shapes >= 2, feature
    assert page.locator("section#f-charges .badge.drifted").inner_text() == "drifted"
    assert page.locator("section#f-tenure .badge.stable").inner_text() == "stable"
    # Data quality: the unseen category of the refused request is flagged.
    flagged = _texts(
        page, "//h2[@id='data-quality']/following-sibling::table[1]//tr[contains(@class, 'flagged')]/td[1]"
    )
    assert "plan" in flagged
    # Live quality: the metrics table and one chart per metric.
    assert page.locator("#live-quality").is_visible()
    for metric in quality.metrics:
        assert page.locator(f"section#q-{metric} svg circle").count() >= 1
    assert page.locator("text=labelled predictions").count() >= 1
    assert errors == []
    assert fetched == [path.as_uri()]  # nothing fetched but the page itself
    page.close()


def test_the_quality_page_alone_renders(browser, customers, churn, serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"))
    ids = served.predict(customers(200, 32))
    served.flush()
    record_feedback("churn", [{"request_id": i, "row": 0, "label": 1} for i in ids])
    path = tmp_path / "quality.html"
    live_quality("churn@prod", window="24h").to_html(path)
    page, errors, _ = _open(browser, path)
    assert page.title() == "Live quality: churn"
    rows = _texts(page, "//table//tbody/tr/td[1]")
    assert rows[:3] == ["window", "arm", "version"]
    assert page.locator("section#q-accuracy svg").bounding_box() is not None
    assert errors == []
    page.close()
