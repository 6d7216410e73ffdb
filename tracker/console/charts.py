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


@dataclass(frozen=True)
class Mark:
    """A bar (w, h > 0) or a point of a line (w = h = 0), with its tooltip."""

    x: float
    y: float
    w: float
    h: float
    css: str
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

    def rows(self) -> list[tuple[datetime, list[str]]]:
        """The data table: one row per hour, one cell per series."""
        return [
            (hour, [self.show(s.values[i]) for s in self.series])
            for i, hour in enumerate(self.hours)
        ]

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
    chart.y_ticks = [Tick(y_of(top * f), label(top * f)) for f in (0, 0.25, 0.5, 0.75, 1)]
    chart.x_ticks = [
        Tick(LEFT + slot * (i + 0.5), hour.strftime("%H:00"))
        for i, hour in enumerate(chart.hours)
        if i % 3 == (n - 1) % 3  # every third hour, ending on the current one
    ]
    if chart.kind == "bars":
        for i, hour in enumerate(chart.hours):
            base = 0.0
            for s in chart.series:
                value = s.values[i] or 0
                if value <= 0:
                    continue
                y = y_of(base + value)
                height = y_of(base) - y
                tip = f"{hour:%Y-%m-%d %H:00} UTC: {s.name} {chart.show(value)}"
                chart.marks.append(
                    Mark(LEFT + slot * i + 1, y, max(slot - 2, 1), height, s.css, tip)
                )
                base += value
        return chart
    for s in chart.series:
        points: list[str] = []
        for i, hour in enumerate(chart.hours):
            point = s.values[i]
            if point is None:
                if len(points) > 1:
                    chart.lines.append((s.css, " ".join(points)))
                points = []
                continue
            x, y = LEFT + slot * (i + 0.5), y_of(point)
            points.append(f"{x:.1f},{y:.1f}")
            tip = f"{hour:%Y-%m-%d %H:00} UTC: {s.name} {chart.show(point)}"
            chart.marks.append(Mark(x, y, 0, 0, s.css, tip))
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
    for m in c.marks:
        if m.w > 0:
            parts.append(
                f'<rect class="bar {e(m.css)}" x="{_n(m.x)}" y="{_n(m.y)}" width="{_n(m.w)}" '
                f'height="{_n(m.h)}"><title>{e(m.tip)}</title></rect>'
            )
        else:
            parts.append(
                f'<circle class="dot {e(m.css)}" cx="{_n(m.x)}" cy="{_n(m.y)}" r="3">'
                f"<title>{e(m.tip)}</title></circle>"
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
    for hour, cells in c.rows():
        row = "".join(f'<td class="n">{e(cell)}</td>' for cell in cells)
        parts.append(f'<tr><th scope="row">{hour:%Y-%m-%d %H:00}</th>{row}</tr>')
    parts.append("</tbody></table></div></details></figcaption></figure>")
    return Markup("".join(parts))
