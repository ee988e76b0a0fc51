"""The HTML report: one self-contained page with a summary row and a chart per feature."""

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

from shipway.monitoring import Profile, drift


class Page(HTMLParser):
    """Collects what the tests look at: summary rows, SVGs per section, anything fetched or run."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.rows: list[tuple[str, str]] = []  # (row class, first cell text) in the summary table
        self.svgs_by_section: dict[str, int] = {}
        self.external: list[str] = []
        self._section: str | None = None
        self._in_tbody = False
        self._row: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href"):
            if a.get(key) and not str(a[key]).startswith("#"):
                self.external.append(str(a[key]))
        if tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self._row = a.get("class") or ""
        elif tag == "td" and self._row is not None and self._cell is None:
            self._cell = []
        elif tag == "section":
            self._section = a.get("id") or ""
            self.svgs_by_section[self._section] = 0
        elif tag == "svg" and self._section is not None:
            self.svgs_by_section[self._section] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_tbody = False
        elif tag == "td" and self._cell is not None and self._row is not None:
            self.rows.append((self._row, "".join(self._cell)))
            self._row, self._cell = None, None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(21)

    def frame(n: int, shift: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "age": rng.normal(40 + 12 * shift, 12, n),
                "income <usd>": rng.lognormal(10, 1, n),  # a name that needs escaping
                "visits": rng.poisson(3, n),
                "plan": rng.choice(["basic", "plus", "pro"], n, p=[0.5 - shift, 0.3, 0.2 + shift]),
                "city": rng.choice([f"city-{i}" for i in range(40)], n),
            }
        )

    return frame(20_000, 0.0), frame(20_000, 0.3)


def test_the_report_is_one_page_with_a_row_and_a_chart_per_feature(tmp_path: Path) -> None:
    reference, current = frames()
    report = drift(reference, current)
    path = tmp_path / "drift.html"
    html = report.to_html(path)
    assert path.read_text(encoding="utf-8") == html
    page = parse(html)
    assert [text for _, text in page.rows] == list(reference.columns)
    assert [cls for cls, _ in page.rows] == ["drifted" if c.drifted else "stable" for c in report.columns]
    assert set(report.drifted_columns) == {"age", "plan"}
    assert list(page.svgs_by_section.values()) == [1] * len(reference.columns)
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert page.external == []  # nothing fetched: no CDN, no fonts, no network
    assert "income &lt;usd&gt;" in html and "<usd>" not in html


def test_a_report_from_profiles_renders_with_its_bounds() -> None:
    reference, current = frames()
    stored = Profile.from_frame(reference)
    report = drift(stored, Profile.from_frame(current, like=stored))
    page = parse(report.to_html())
    assert len(page.rows) == 5 and all(n == 1 for n in page.svgs_by_section.values())
    assert "±" in report.to_html()  # approximate statistics show their error bound


def test_a_column_without_values_still_renders() -> None:
    reference, current = frames()
    current["age"] = np.nan
    page = parse(drift(reference, current).to_html())
    assert page.svgs_by_section["f-age"] == 1
