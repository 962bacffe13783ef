"""Text contrast (WCAG 2.x AA, 4.5:1) of the pages' colours, read from ``app.css`` itself.

Every foreground/background pair the pages put text on is listed below by the CSS rules
that set them; the values come from the stylesheet (custom properties resolved), so a
changed colour is checked again. Luminance and ratio follow WCAG 2.2's definitions:
https://www.w3.org/TR/WCAG22/#dfn-relative-luminance
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

CSS = Path(__file__).resolve().parents[2] / "bot" / "web" / "static" / "app.css"
AA = 4.5
MOBILE = "(max-width: 600px)"


# -- a small CSS reader: custom properties and rules (inside @media too) ---------------------


@dataclass(frozen=True)
class Rule:
    media: str | None
    selectors: tuple[str, ...]
    declarations: dict[str, str]


def _norm(selector: str) -> str:
    return re.sub(r"\s+", " ", selector).strip()


def _declarations(body: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in body.split(";"):
        name, sep, value = part.partition(":")
        if sep and name.strip():
            out[name.strip().lower()] = value.strip()
    return out


def _blocks(text: str, media: str | None, rules: list[Rule]) -> None:
    i = 0
    while True:
        start = text.find("{", i)
        if start < 0:
            return
        prelude = text[i:start].strip()
        depth, j = 1, start + 1
        while depth:
            if j >= len(text):
                raise AssertionError(f"unbalanced braces after {prelude!r}")
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        inner = text[start + 1 : j - 1]
        if prelude.startswith("@media"):
            _blocks(inner, prelude[len("@media") :].strip(), rules)
        elif not prelude.startswith("@"):
            selectors = tuple(_norm(s) for s in prelude.split(","))
            rules.append(Rule(media, selectors, _declarations(inner)))
        i = j


def parse(css: str) -> list[Rule]:
    rules: list[Rule] = []
    _blocks(re.sub(r"/\*.*?\*/", "", css, flags=re.S), None, rules)
    return rules


class Sheet:
    def __init__(self, css: str) -> None:
        self.rules = parse(css)
        self.vars: dict[str, str] = {}
        for rule in self.rules:
            if ":root" in rule.selectors and rule.media is None:
                self.vars.update({k: v for k, v in rule.declarations.items() if k.startswith("--")})

    def declared(self, selector: str, prop: str, media: str | None = None) -> str:
        """The value of ``prop`` in the last rule for exactly ``selector`` (in ``media``).

        ``"a | b"`` is the cascade in short: ``a``'s value, else ``b``'s (a badge's own text
        colour, else the one all badges share)."""
        for one in selector.split(" | "):
            found = None
            for rule in self.rules:
                if rule.media == media and _norm(one) in rule.selectors:
                    for name in (prop, "background") if prop == "background-color" else (prop,):
                        if name in rule.declarations:
                            found = rule.declarations[name]
            if found is not None:
                return found
        raise AssertionError(f"app.css sets no {prop} for {selector!r} (media {media})")

    def resolve(self, value: str, seen: tuple[str, ...] = ()) -> str:
        def sub(m: re.Match[str]) -> str:
            name, fallback = m.group(1), m.group(2)
            if name in seen:
                raise AssertionError(f"var() cycle through {name}")
            if name not in self.vars:
                if fallback is None:
                    raise AssertionError(f"undefined custom property {name}")
                return self.resolve(fallback, seen)
            return self.resolve(self.vars[name], (*seen, name))

        return re.sub(r"var\(\s*(--[\w-]+)\s*(?:,\s*([^)]*))?\)", sub, value)

    def colour(self, selector: str, prop: str, media: str | None = None) -> str:
        value = self.resolve(self.declared(selector, prop, media))
        found = re.search(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b|\bwhite\b|\bblack\b", value)
        if found is None:
            raise AssertionError(f"no plain colour in {prop} of {selector!r}: {value!r}")
        return {"white": "#ffffff", "black": "#000000"}.get(found.group(0), found.group(0))


# -- WCAG ------------------------------------------------------------------------------------


def rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb(hex_colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def ratio(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_wcag_formula() -> None:
    assert ratio("#000", "#fff") == pytest.approx(21.0)
    assert ratio("#fff", "#fff") == pytest.approx(1.0)
    assert ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic near miss
    assert ratio("#b7950b", "#ffffff") == pytest.approx(2.87, abs=0.01)  # the old moderate badge


# -- the pairs ----------------------------------------------------------------------------------

# (what, foreground (selector, property[, media]), background (selector, property[, media]))
Side = tuple[str, str] | tuple[str, str, str]
PAGE: Side = ("body", "background")
CARD: Side = (".card", "background")
TABLE: Side = ("table", "background")
BUTTON: Side = ("button", "background")
TOP: Side = ("header.top", "background")
OVERDUE: Side = ("tr.overdue", "background")
# the column name over each value of a queue card on a phone
LABEL = "table.queue tr[data-id] td:nth-child(n+3)[data-label]::before"
PAIRS: list[tuple[str, Side, Side]] = [
    ("body text on the page", (":root", "color"), PAGE),
    ("body text on a card", (":root", "color"), CARD),
    ("column headings", ("th", "color"), TABLE),
    ("hints on the page", (".hint", "color"), PAGE),
    ("hints on a card", (".hint", "color"), CARD),
    ("empty lists", (".empty", "color"), TABLE),
    ("definition terms", ("dt", "color"), CARD),
    ("message status", (".status", "color"), CARD),
    ("transcript times", (".transcript .when", "color"), CARD),
    ("a patient's text", (":root", "color"), (".transcript .msg-in .body", "background")),
    ("a text sent", (":root", "color"), (".transcript .msg-out .body", "background")),
    ("timeline details", (".timeline .detail", "color"), CARD),
    (
        "critical badge",
        (".badge.sev-critical | .badge", "color"),
        (".badge.sev-critical", "background"),
    ),
    ("high badge", (".badge.sev-high | .badge", "color"), (".badge.sev-high", "background")),
    (
        "moderate badge",
        (".badge.sev-moderate | .badge", "color"),
        (".badge.sev-moderate", "background"),
    ),
    ("low badge", (".badge.sev-low | .badge", "color"), (".badge.sev-low", "background")),
    ("header text", ("header.top", "color"), TOP),
    ("header links", ("header.top a", "color"), TOP),
    ("header: the current page", ("header.top nav a.on", "color"), TOP),
    ("header: who is signed in", ("header.top .who", "color"), TOP),
    ("buttons", ("button", "color"), BUTTON),
    ("primary buttons", ("button.primary", "color"), ("button.primary", "background")),
    ("the call button", (".button.call", "color"), BUTTON),
    ("danger buttons", ("button.danger", "color"), BUTTON),
    ("errors on the page", (".error", "color"), PAGE),
    ("errors on a card", (".error", "color"), CARD),
    ("notices on the page", (".notice", "color"), PAGE),
    ("notices on a card", (".notice", "color"), CARD),
    ("warnings on the page", (".warn", "color"), PAGE),
    ("warnings on a card", (".warn", "color"), CARD),
    ("check-ins on hold (queue row)", ("span.hold", "color"), TABLE),
    ("check-ins on hold (overdue row)", ("span.hold", "color"), OVERDUE),
    ("overdue (overdue row)", (".overdue-label", "color"), OVERDUE),
    ("overdue (escalation card)", (".overdue-label", "color"), CARD),
    ("chart band labels", ("svg.trend .band-label", "fill"), CARD),
    ("chart axis labels", ("svg.trend .axis", "fill"), CARD),
    ("flow problems: errors", (".problems li.error-item", "color"), CARD),
    ("flow problems: warnings", (".problems li.warning-item", "color"), CARD),
    ("editor line numbers", (".editor pre.gutter", "color"), (".editor pre.gutter", "background")),
    ("diff: added", ("pre.diff .add", "color"), ("pre.diff", "background")),
    ("diff: removed", ("pre.diff .del", "color"), ("pre.diff", "background")),
    (
        "demo phone: mine",
        (".phone-messages .bubble.mine", "color"),
        (".phone-messages .bubble.mine", "background"),
    ),
    ("demo phone: theirs", (":root", "color"), (".phone-messages .bubble.theirs", "background")),
    ("demo phone: number", (".phone-head .phone-number", "color"), (".phone-head", "background")),
    ("idle warning", (".idle-warning", "color"), (".idle-warning", "background")),
    (
        "idle warning button",
        (".idle-warning button", "color"),
        (".idle-warning button", "background"),
    ),
    ("error page status", (".error-page .code", "color"), CARD),
    ("error page reference", (".error-page .reference", "color"), CARD),
    ("overdue moderate/low (queue row)", ("tr.overdue-moderate .overdue-label", "color"), TABLE),
    ("a patient's words (escalation)", (":root", "color"), (".words .patient-words", "background")),
    ("the answer that raised it", (":root", "color"), (".answers tr.trigger td", "background")),
    ("conversation times, sent", (".exchange .when", "color"), (".exchange li.out", "background")),
    (
        "conversation times, received",
        (".exchange .when", "color"),
        (".exchange li.in", "background"),
    ),
    ("treatment block", (":root", "color"), (".block.treatment", "background")),
    ("version notes", ("ul.versions .version-note", "color"), CARD),
    (
        "queue card labels (phone)",
        (LABEL, "color", MOBILE),
        ("table.queue tr", "background", MOBILE),
    ),
    (
        "queue card labels (phone, overdue)",
        (LABEL, "color", MOBILE),
        ("table.queue tr.overdue", "background", MOBILE),
    ),
    (
        "queue card labels (phone, overdue moderate)",
        (LABEL, "color", MOBILE),
        ("table.queue tr[data-id].overdue.overdue-moderate", "background", MOBILE),
    ),
]


@pytest.fixture(scope="module")
def sheet() -> Sheet:
    return Sheet(CSS.read_text(encoding="utf-8"))


def _get(sheet: Sheet, side: Side) -> str:
    selector, prop, *media = side
    return sheet.colour(selector, prop, media[0] if media else None)


@pytest.mark.parametrize(("what", "fg", "bg"), PAIRS, ids=[p[0] for p in PAIRS])
def test_text_contrast_is_at_least_aa(sheet: Sheet, what: str, fg: Side, bg: Side) -> None:
    front, back = _get(sheet, fg), _get(sheet, bg)
    got = ratio(front, back)
    assert got >= AA, f"{what}: {front} on {back} is {got:.2f}:1, below {AA}:1"


def test_every_rule_with_its_own_text_and_background_colour_passes(sheet: Sheet) -> None:
    """Also rules not in the list: any rule that sets both a text colour and a background
    (a badge, a bubble, a banner) must read at AA."""
    failures = []
    for rule in sheet.rules:
        d = rule.declarations
        back = d.get("background-color") or d.get("background")
        if "color" not in d or back is None:
            continue
        front_v, back_v = sheet.resolve(d["color"]), sheet.resolve(back)
        colours = [re.search(r"#[0-9a-fA-F]{3,6}\b", v) for v in (front_v, back_v)]
        if colours[0] is None or colours[1] is None:
            continue  # inherit, transparent, currentColor: covered by the list above
        got = ratio(colours[0].group(0), colours[1].group(0))
        if got < AA:
            failures.append(f"{', '.join(rule.selectors)}: {got:.2f}:1")
    assert not failures, failures


def _hue(hex_colour: str) -> tuple[float, float]:
    r, g, b = (c / 255 for c in rgb(hex_colour))
    h, _l, s = colorsys.rgb_to_hls(r, g, b)
    return h * 360, s


def test_severity_colours_keep_their_meaning(sheet: Sheet) -> None:
    """Critical red, high orange, moderate amber/yellow, low grey."""
    hue = {
        name: _hue(sheet.colour(f".badge.sev-{name}", "background"))
        for name in ("critical", "high", "moderate", "low")
    }
    h, s = hue["critical"]
    assert (h >= 340 or h <= 8) and s > 0.5, hue
    h, s = hue["high"]
    assert 15 <= h <= 35 and s > 0.5, hue
    h, s = hue["moderate"]
    assert 38 <= h <= 58 and s > 0.5, hue
    assert hue["low"][1] < 0.25, hue


def test_the_reader_finds_the_stylesheet(sheet: Sheet) -> None:
    assert {"--critical", "--high", "--moderate", "--low", "--ink", "--muted"} <= set(sheet.vars)
    assert any(rule.media == MOBILE for rule in sheet.rules)
    assert sheet.colour(".badge.sev-critical", "background") == sheet.resolve("var(--critical)")
