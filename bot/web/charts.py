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


def trend_svg(name: str, points: Sequence[tuple[datetime, float]]) -> str:
    """One score over time with its severity bands shaded; empty string if nothing to draw."""
    scale = SCALES.get(name)
    if scale is None or not points:
        return ""
    pts = sorted(points)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    t0, t1 = pts[0][0].timestamp(), pts[-1][0].timestamp()
    span = max(t1 - t0, 1.0)

    def x(t: datetime) -> float:
        if len(pts) == 1:
            return LEFT + plot_w / 2
        return LEFT + (t.timestamp() - t0) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - min(max(v, 0), scale.maximum) / scale.maximum * plot_h

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
    coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
    if len(pts) > 1:
        parts.append(f'<polyline class="line" points="{coords}"/>')
    for t, v in pts:
        label = f"{t:%Y-%m-%d}: {v:g}"
        parts.append(
            f'<circle class="point" cx="{x(t):.1f}" cy="{y(v):.1f}" r="4"><title>{escape(label)}</title></circle>'
        )
    parts.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 8}">{pts[0][0]:%Y-%m-%d}</text>')
    if len(pts) > 1:
        parts.append(
            f'<text class="axis" x="{LEFT + plot_w}" y="{HEIGHT - 8}" text-anchor="end">{pts[-1][0]:%Y-%m-%d}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
