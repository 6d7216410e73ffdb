"""Charts as SVG drawn on the server: the geometry here, the markup in templates/_chart.html.

Accessible as the console reference asks: `role="img"` named by a title and a description, axes
labelled with their units (hours in UTC), each value in a `<title>` tooltip, and the same
figures in a data table beside the chart. Colours come from CSS classes (the stylesheet's state
colours, dark mode included), never from style attributes (the CSP allows none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from markupsafe import Markup, escape

from tracker.console.format import human_duration

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 40
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = HEIGHT - TOP - BOTTOM


@dataclass(frozen=True)
class Series:
    name: str
    css: str  # a class of the stylesheet (s-succeeded, s-failed, ...)
    values: list[float | None]


class Mark(NamedTuple):
    """A bar (w, h > 0) or a point of a line (w = h = 0), with its tooltip; css and tip are
    escaped already (a page draws hundreds: a tuple, and each series' name escaped once)."""

    x: float
    y: float
    w: float
    h: float
    css: Markup
    tip: str


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass
class Chart:
    id: str
    title: str
    desc: str
    unit: str  # the y axis: "jobs", "callbacks", "seconds"
    hours: list[datetime]
    series: list[Series]
    kind: str = "bars"  # stacked bars, or "lines"
    format: str = "count"  # how values read: "count" or "duration"
    marks: list[Mark] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # each hour as `2026-01-02 03:00`
    shown: list[list[str]] = field(default_factory=list)  # each value as `show` writes it
    lines: list[tuple[str, str]] = field(default_factory=list)  # (css, SVG points)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)

    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_w: int = PLOT_W
    plot_h: int = PLOT_H

    def total(self) -> float:
        return sum(v or 0 for s in self.series for v in s.values)

    def rows(self) -> list[tuple[str, list[str]]]:
        """The data table: one row per hour (its label), one cell per series."""
        labels = self.labels or hour_labels(self.hours)
        shown = self.shown or [[self.show(v) for v in s.values] for s in self.series]
        return [(label, [values[i] for values in shown]) for i, label in enumerate(labels)]

    def show(self, value: float | None) -> str:
        if value is None:
            return "–"
        if self.format == "duration":
            return human_duration(value)
        return f"{value:,.0f}"


# Round tops for a time axis, in seconds: 1 s ... 30 s, 1 min ... 30 min, 1 h ... 1 d, 2 d.
TIME_STEPS: tuple[int, ...] = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
)
TIME_STEPS += (43200, 86400, 172800)


def nice_max(value: float, *, duration: bool = False) -> float:
    """A round top for the y axis at or above `value`: 1, 2 or 5 times a power of ten, or a
    round time for durations."""
    if value <= 0:
        return 4.0 if not duration else 60.0
    if duration:
        return float(next((step * 4 for step in TIME_STEPS if step * 4 >= value), value))
    quarter = value / 4  # four equal steps up the axis, each a whole 1, 2 or 5 times 10^k
    power = 10 ** max(math.floor(math.log10(quarter)), 0) if quarter >= 1 else 1
    for step in (1, 2, 5, 10):
        if quarter <= step * power:
            return float(4 * step * power)
    return float(40 * power)  # pragma: no cover


def hour_labels(hours: list[datetime]) -> list[str]:
    """`2026-01-02 03:00` for each hour (UTC), cut from the ISO text: a page labels a hundred
    hours, and strftime costs ten times more."""
    labels = []
    for hour in hours:
        text = hour.isoformat()
        labels.append(
            f"{text[:10]} {text[11:13]}:00" if hour.year >= 1000 else f"{hour:%Y-%m-%d %H:00}"
        )
    return labels


def draw(chart: Chart) -> Chart:
    """Fill in the marks and ticks of `chart`."""
    n = len(chart.hours)
    slot = PLOT_W / max(n, 1)
    duration = chart.format == "duration"
    if chart.kind == "bars":
        stacked = [sum(s.values[i] or 0 for s in chart.series) for i in range(n)]
        top = nice_max(max(stacked, default=0), duration=duration)
    else:
        values = [v for s in chart.series for v in s.values if v is not None]
        top = nice_max(max(values, default=0), duration=duration)

    def y_of(value: float) -> float:
        return TOP + PLOT_H - (value / top) * PLOT_H

    label = (lambda v: human_duration(v, coarse=True)) if duration else chart.show
    chart.labels = hour_labels(chart.hours)
    stamps = [f"{text} UTC: " for text in chart.labels]
    chart.y_ticks = [Tick(y_of(top * f), label(top * f)) for f in (0, 0.25, 0.5, 0.75, 1)]
    chart.x_ticks = [
        Tick(LEFT + slot * (i + 0.5), text[11:])
        for i, text in enumerate(chart.labels)
        if i % 3 == (n - 1) % 3  # every third hour, ending on the current one
    ]
    # Each value written once, for its tooltip and its cell in the data table.
    chart.shown = [[chart.show(v) for v in s.values] for s in chart.series]
    named = [
        (s, escape(s.css), escape(s.name), s_shown)
        for s, s_shown in zip(chart.series, chart.shown, strict=True)
    ]
    if chart.kind == "bars":
        width = max(slot - 2, 1)
        for i, stamp in enumerate(stamps):
            base = 0.0
            for s, css, name, shown in named:
                value = s.values[i] or 0
                if value <= 0:
                    continue
                y = y_of(base + value)
                height = y_of(base) - y
                tip = f"{stamp}{name} {shown[i]}"
                chart.marks.append(Mark(LEFT + slot * i + 1, y, width, height, css, tip))
                base += value
        return chart
    for s, css, name, shown in named:
        points: list[str] = []
        for i, stamp in enumerate(stamps):
            point = s.values[i]
            if point is None:
                if len(points) > 1:
                    chart.lines.append((s.css, " ".join(points)))
                points = []
                continue
            x, y = LEFT + slot * (i + 0.5), y_of(point)
            points.append(f"{x:.1f},{y:.1f}")
            tip = f"{stamp}{name} {shown[i]}"
            chart.marks.append(Mark(x, y, 0, 0, css, tip))
        if len(points) > 1:
            chart.lines.append((s.css, " ".join(points)))
    return chart


def _n(value: float) -> str:
    return f"{value:.1f}"


def svg(chart: Chart) -> Markup:
    """The chart as accessible SVG, its legend and its data table; built here rather than in a
    template, as a page draws four of them with a hundred marks each. Every text is escaped
    (`escape`, markupsafe's C version); numbers are ours."""
    c, e = chart, escape
    cid = e(c.id)
    parts = [
        f'<figure class="chart" id="{cid}"><svg viewBox="0 0 {c.width} {c.height}" role="img" '
        f'aria-labelledby="{cid}-title {cid}-desc" preserveAspectRatio="xMidYMid meet">'
        f'<title id="{cid}-title">{e(c.title)}</title><desc id="{cid}-desc">{e(c.desc)}</desc>'
        '<g class="grid">'
    ]
    right = c.left + c.plot_w
    for t in c.y_ticks:
        y = _n(t.pos)
        parts.append(
            f'<line x1="{c.left}" x2="{right}" y1="{y}" y2="{y}"></line><text class="tick" '
            f'x="{c.left - 6}" y="{_n(t.pos + 4)}" text-anchor="end">{e(t.label)}</text>'
        )
    base = c.top + c.plot_h
    for t in c.x_ticks:
        parts.append(
            f'<text class="tick" x="{_n(t.pos)}" y="{base + 16}" text-anchor="middle">'
            f"{e(t.label)}</text>"
        )
    middle = c.top + c.plot_h / 2
    parts.append(
        f'</g><text class="axis" x="{c.left + c.plot_w / 2}" y="{c.height - 4}" '
        'text-anchor="middle">hour (UTC)</text>'
        f'<text class="axis" x="12" y="{middle}" text-anchor="middle" '
        f'transform="rotate(-90 12 {middle})">{e(c.unit)}</text>'
    )
    for css, points in c.lines:
        parts.append(f'<polyline class="line {e(css)}" points="{e(points)}"></polyline>')
    for mx, my, mw, mh, css, tip in c.marks:
        if mw > 0:
            parts.append(
                f'<rect class="bar {css}" x="{mx:.1f}" y="{my:.1f}" width="{mw:.1f}" '
                f'height="{mh:.1f}"><title>{tip}</title></rect>'
            )
        else:
            parts.append(
                f'<circle class="dot {css}" cx="{mx:.1f}" cy="{my:.1f}" r="3">'
                f"<title>{tip}</title></circle>"
            )
    parts.append('</svg><figcaption><ul class="legend">')
    parts += [f'<li><span class="key {e(s.css)}"></span>{e(s.name)}</li>' for s in c.series]
    parts.append(
        f'</ul><details><summary>{e(c.title)}: the figures</summary><div class="scroll">'
        f'<table class="figures"><caption>{e(c.desc)}</caption><thead><tr>'
        '<th scope="col">hour (UTC)</th>'
    )
    parts += [f'<th scope="col">{e(s.name)}</th>' for s in c.series]
    parts.append("</tr></thead><tbody>")
    for label, cells in c.rows():  # the cells are numbers and durations as we write them
        row = "".join(f'<td class="n">{cell}</td>' for cell in cells)
        parts.append(f'<tr><th scope="row">{label}</th>{row}</tr>')
    parts.append("</tbody></table></div></details></figcaption></figure>")
    return Markup("".join(parts))
