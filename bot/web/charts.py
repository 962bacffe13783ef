"""Score trend charts as inline SVG, drawn on the server (no scripts, CSP-safe)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape


@dataclass(frozen=True, slots=True)
class Band:
    low: float
    high: float
    label: str


@dataclass(frozen=True, slots=True)
class Scale:
    title: str
    maximum: float
    bands: tuple[Band, ...]


SCALES = {
    "phq9": Scale(
        "PHQ-9",
        27,
        (
            Band(0, 5, "minimal"),
            Band(5, 10, "mild"),
            Band(10, 15, "moderate"),
            Band(15, 20, "moderately severe"),
            Band(20, 27, "severe"),
        ),
    ),
    "gad7": Scale(
        "GAD-7",
        21,
        (
            Band(0, 5, "minimal"),
            Band(5, 10, "mild"),
            Band(10, 15, "moderate"),
            Band(15, 21, "severe"),
        ),
    ),
}

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 40, 110, 16, 28


def trend_svg(
    name: str, points: Sequence[tuple[datetime, float]], markers: Sequence[datetime] = ()
) -> str:
    """One score over time with its severity bands shaded and ``markers`` (treatments) as
    dashed vertical lines; empty string if nothing to draw."""
    scale = SCALES.get(name)
    if scale is None or not points:
        return ""
    pts = sorted(points)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    stamps = [t.timestamp() for t, _ in pts]
    t0 = stamps[0]
    span = max(stamps[-1] - t0, 1.0)
    top_y, maximum = TOP + plot_h, scale.maximum

    def y(v: float) -> float:
        return top_y - min(max(v, 0), maximum) / maximum * plot_h

    # each point's position and label worked out once (a chart has up to ~100 points)
    if len(pts) == 1:
        xs = [f"{LEFT + plot_w / 2:.1f}"]
    else:
        xs = [f"{LEFT + (s - t0) / span * plot_w:.1f}" for s in stamps]
    ys = [f"{y(v):.1f}" for _, v in pts]
    days = [t.date().isoformat() for t, _ in pts]

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(scale.title)} over time">',
        f"<title>{escape(scale.title)} over time</title>",
    ]
    for i, band in enumerate(scale.bands):
        top, bottom = y(band.high), y(band.low)
        parts.append(
            f'<rect class="band band-{i}" x="{LEFT}" y="{top:.1f}" width="{plot_w}" '
            f'height="{bottom - top:.1f}"/>'
        )
        parts.append(
            f'<text class="band-label" x="{LEFT + plot_w + 6}" y="{(top + bottom) / 2 + 4:.1f}">'
            f"{escape(band.label)}</text>"
        )
    for tick in range(0, int(scale.maximum) + 1, 5):
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    for at in sorted(markers):
        stamp = at.timestamp()
        if len(pts) > 1 and t0 <= stamp <= stamps[-1]:
            mx = LEFT + (stamp - t0) / span * plot_w
            parts.append(
                f'<line class="treatment" x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP}" y2="{top_y}">'
                f"<title>treatment {at.date().isoformat()}</title></line>"
            )
    if len(pts) > 1:
        coords = " ".join([f"{px},{py}" for px, py in zip(xs, ys, strict=True)])
        parts.append(f'<polyline class="line" points="{coords}"/>')
    # a label is a date and a number: nothing in it to escape
    parts += [
        f'<circle class="point" cx="{px}" cy="{py}" r="4"><title>{day}: {v:g}</title></circle>'
        for px, py, day, (_, v) in zip(xs, ys, days, pts, strict=True)
    ]
    parts.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 8}">{days[0]}</text>')
    if len(pts) > 1:
        parts.append(
            f'<text class="axis" x="{LEFT + plot_w}" y="{HEIGHT - 8}" text-anchor="end">{days[-1]}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
