"""The server-drawn trend charts: well-formed SVG, bands, points, escaping, edge cases."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from bot.web import charts
from bot.web.charts import HEIGHT, LEFT, RIGHT, SCALES, TOP, WIDTH, trend_svg

NS = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on anything not well-formed
    assert root.tag == f"{NS}svg"
    return root


def weekly(values: list[float]) -> list[tuple[datetime, float]]:
    return [(T0 + timedelta(days=7 * i), v) for i, v in enumerate(values)]


@pytest.mark.parametrize("name", ["phq9", "gad7"])
def test_well_formed_with_one_band_per_severity(name: str) -> None:
    svg = trend_svg(name, weekly([3, 12, 18, 7]))
    root = parse(svg)
    scale = SCALES[name]
    assert root.get("viewBox") == f"0 0 {WIDTH} {HEIGHT}"
    assert root.get("role") == "img"
    assert root.get("aria-label") == f"{scale.title} over time"
    assert root.findtext(f"{NS}title") == f"{scale.title} over time"
    rects = root.findall(f"{NS}rect")
    assert [r.get("class") for r in rects] == [f"band band-{i}" for i in range(len(scale.bands))]
    labels = [t.text for t in root.findall(f"{NS}text") if t.get("class") == "band-label"]
    assert labels == [b.label for b in scale.bands]
    # the bands tile the plot from the top to the bottom without gaps
    spans = sorted((float(r.get("y", 0)), float(r.get("height", 0))) for r in rects)
    assert spans[0][0] == pytest.approx(TOP)
    for (y, height), (next_y, _h) in itertools.pairwise(spans):
        assert y + height == pytest.approx(next_y, abs=0.11)
    bottom = spans[-1][0] + spans[-1][1]
    assert bottom == pytest.approx(HEIGHT - charts.BOTTOM, abs=0.11)
    for r in rects:
        assert float(r.get("x", 0)) == LEFT
        assert float(r.get("width", 0)) == WIDTH - LEFT - RIGHT


def test_points_line_and_dates() -> None:
    data = weekly([3, 12, 27, 30, -2])
    root = parse(trend_svg("phq9", data))
    circles = root.findall(f"{NS}circle")
    assert len(circles) == len(data)
    assert [c.findtext(f"{NS}title") for c in circles] == [
        "2026-01-05: 3",
        "2026-01-12: 12",
        "2026-01-19: 27",
        "2026-01-26: 30",
        "2026-02-02: -2",
    ]
    xs = [float(c.get("cx", 0)) for c in circles]
    ys = [float(c.get("cy", 0)) for c in circles]
    assert xs == sorted(xs) and xs[0] == LEFT and xs[-1] == WIDTH - RIGHT
    plot_bottom = HEIGHT - charts.BOTTOM
    assert ys[0] > ys[1] > ys[2]  # higher scores are drawn higher up
    assert ys[2] == ys[3] == pytest.approx(TOP)  # clamped to the scale's maximum
    assert ys[4] == pytest.approx(plot_bottom)  # and its minimum
    [line] = root.findall(f"{NS}polyline")
    points = line.get("points", "").split()
    assert len(points) == len(data)
    axis = [t.text for t in root.findall(f"{NS}text") if t.get("class") == "axis"]
    assert "2026-01-05" in axis and "2026-02-02" in axis
    assert [a for a in axis if a and a.isdigit()] == ["0", "5", "10", "15", "20", "25"]


def test_points_are_sorted_by_time() -> None:
    data = weekly([5, 10, 15])
    a = trend_svg("phq9", data)
    b = trend_svg("phq9", list(reversed(data)))
    assert a == b


def test_single_point_is_centred_and_has_no_line() -> None:
    root = parse(trend_svg("gad7", [(T0, 9)]))
    [circle] = root.findall(f"{NS}circle")
    assert float(circle.get("cx", 0)) == pytest.approx(LEFT + (WIDTH - LEFT - RIGHT) / 2)
    assert root.findall(f"{NS}polyline") == []


def test_same_moment_twice_does_not_divide_by_zero() -> None:
    root = parse(trend_svg("phq9", [(T0, 4), (T0, 9)]))
    assert len(root.findall(f"{NS}circle")) == 2


def test_empty_or_unknown_draws_nothing() -> None:
    assert trend_svg("phq9", []) == ""
    assert trend_svg("gad7", ()) == ""
    assert trend_svg("unknown_scale", weekly([1, 2])) == ""


def test_text_is_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = charts.Scale(
        '<script>alert("x")</script> & "quotes"',
        10,
        (charts.Band(0, 5, "<b>low</b> & co"), charts.Band(5, 10, "x\"'<y>")),
    )
    monkeypatch.setitem(charts.SCALES, "hostile", hostile)
    svg = trend_svg("hostile", weekly([1, 8]))
    assert "<script" not in svg and "<b>" not in svg and "<y>" not in svg
    root = parse(svg)
    assert root.get("aria-label") == '<script>alert("x")</script> & "quotes" over time'
    assert root.findtext(f"{NS}title") == '<script>alert("x")</script> & "quotes" over time'
    labels = [t.text for t in root.findall(f"{NS}text") if t.get("class") == "band-label"]
    assert labels == ["<b>low</b> & co", "x\"'<y>"]
    # nothing in it that a browser would run
    for element in root.iter():
        assert element.tag.split("}")[-1] != "script"
        assert not any(k.lower().startswith("on") for k in element.attrib)


def test_no_external_references() -> None:
    svg = trend_svg("phq9", weekly([1, 2, 3]))
    assert "href" not in svg and "http://" not in svg.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
