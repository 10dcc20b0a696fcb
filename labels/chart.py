"""The expansion chart of a batch, drawn once and shown twice: SVG on the batch page, vector
graphics in the executed batch record PDF.

``expansion_drawing`` builds one reportlab ``Drawing`` from an ``ExpansionChart`` (plain
numbers that ``lab/`` gathers from the batch's current values); ``expansion_svg`` renders
that same Drawing to SVG, and the batch record places it as a flowable. Upper panel: viable
cells by culture day on a log scale, the right axis relabelling the same curve as fold
expansion since seeding (viable / seeded is a shift on a log scale). Lower panel:
viability, its acceptance limit dashed and labelled. The steps' time windows (transduction,
harvest) are shaded and named. A value out of its limit is drawn with another shape and a
label in words ("62 % below limit"), never with colour alone; axis titles are real text, so
they can be read back from the PDF and by a screen reader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from xml.dom.minidom import Element

from reportlab.graphics import renderSVG
from reportlab.graphics.renderbase import renderScaledDrawing
from reportlab.graphics.shapes import Circle, Drawing, Group, Line, Polygon, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.pdfbase.pdfmetrics import stringWidth

from labels.text import SANS, SANS_BOLD
from workflows.formatting import format_number, recorded_number
from workflows.timing import day_range

#: The chart's width in points when none is given: about the text width of an A4 record.
WIDTH = 480.0
#: What the SVG asks a browser to draw the chart's text with: the PDF's font where it is
#: installed, else one of the same metrics (every text also carries its width, see _text).
SVG_FONTS = "'DejaVu Sans', 'Bitstream Vera Sans', Verdana, sans-serif"

INK = colors.Color(0.11, 0.12, 0.14)
MUTED = colors.Color(0.36, 0.4, 0.44)
GRID = colors.Color(0.87, 0.89, 0.91)
SERIES = colors.Color(0.04, 0.36, 0.68)
BAD = colors.Color(0.69, 0, 0.13)
BAND = colors.Color(0.91, 0.93, 0.96)
BAND_EDGE = colors.Color(0.72, 0.77, 0.84)

TICK_SIZE = 7.0
TITLE_SIZE = 8.0
LABEL_SIZE = 7.0
LINE = 8.6  # leading of small text
MARKER = 3.3  # marker "radius"
UPPER_HEIGHT = 165.0
LOWER_HEIGHT = 72.0
PANEL_GAP = 18.0
SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass(frozen=True)
class ExpansionPoint:
    """One cell count of the culture, with its current (corrected) values.

    ``step`` is empty for the daily counts (the chart's own step), else the title of the
    step that counted (a harvest). ``fold_expansion`` is viable cells / cells seeded (None
    without a seeded count). The viability limits are those of the step that counted;
    ``viability_out_of_limit`` is the flag the value was recorded with.
    """

    day: int  # culture day, 0 = the day the cells were seeded
    viable_cells: float | None
    viability_pct: float | None = None
    fold_expansion: float | None = None
    viability_out_of_limit: bool = False
    viability_limit_min: float | None = None
    viability_limit_max: float | None = None
    step: str = ""
    corrected: bool = False  # a value shown was corrected after it was first recorded

    @property
    def limit_text(self) -> str:
        """``≥ 70 %``; empty without a limit."""
        return _limit_text(self.viability_limit_min, self.viability_limit_max)

    @property
    def viability_side(self) -> str:
        """``below`` or ``above`` the limit, ``out of`` when flagged without a known side, or empty."""
        value = self.viability_pct
        if not self.viability_out_of_limit or value is None:
            return ""
        if self.viability_limit_min is not None and value < self.viability_limit_min:
            return "below"
        if self.viability_limit_max is not None and value > self.viability_limit_max:
            return "above"
        return "out of"

    @property
    def viability_flag(self) -> str:
        """The out-of-limit finding in words: ``Viability 62 % is below the limit ≥ 70 %``; empty when in limit."""
        side = self.viability_side
        if not side:
            return ""
        limit = f" {self.limit_text}" if self.limit_text else ""
        return f"Viability {recorded_number(self.viability_pct)} % is {side} the limit{limit}"


@dataclass(frozen=True)
class ExpansionWindow:
    """When a step is due, in culture days (inclusive; None: open on that side)."""

    label: str  # the step's title
    min_day: int | None
    max_day: int | None

    @property
    def days(self) -> str:
        return day_range(self.min_day, self.max_day)


@dataclass(frozen=True)
class ExpansionChart:
    """The counts of one culture by culture day, and what the chart draws around them.

    ``viability_limit_min``/``max`` are the daily counts' limits (the dashed line);
    ``step_key`` is the repeatable step whose entries are the daily counts (the batch
    record prints the chart after it); ``seeded_step`` the title of the step whose
    recording is day 0.
    """

    points: tuple[ExpansionPoint, ...]
    seeded_cells: float | None = None
    viability_limit_min: float | None = None
    viability_limit_max: float | None = None
    windows: tuple[ExpansionWindow, ...] = ()
    step_key: str = ""
    seeded_step: str = ""

    @property
    def limit_text(self) -> str:
        return _limit_text(self.viability_limit_min, self.viability_limit_max)

    @property
    def out_of_limit(self) -> tuple[ExpansionPoint, ...]:
        return tuple(p for p in self.points if p.viability_side)

    @property
    def has_fold(self) -> bool:
        return self.seeded_cells is not None and self.seeded_cells > 0


def _number(value: float | None) -> str:
    """A computed number (a fold expansion, an axis tick): three significant digits."""
    return "" if value is None else format_number(value)


def _limit_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{_number(low)}–{_number(high)} %"
    if low is not None:
        return f"≥ {_number(low)} %"
    return f"≤ {_number(high)} %" if high is not None else ""


def short_flag(point: ExpansionPoint, chart: ExpansionChart) -> str:
    """The label beside an out-of-limit point: ``62 % below limit`` (with the limit when it
    is not the dashed line's, as at harvest: ``78 % below limit ≥ 80 %``); empty when in limit."""
    side = point.viability_side
    if not side:
        return ""
    same = (point.viability_limit_min, point.viability_limit_max) == (chart.viability_limit_min,
                                                                      chart.viability_limit_max)
    limit = "" if same or not point.limit_text else f" {point.limit_text}"
    return f"{recorded_number(point.viability_pct)} % {side} limit{limit}"


def fold_text(fold: float) -> str:
    """``30-fold``."""
    return f"{_number(fold)}-fold"


def expansion_summary(chart: ExpansionChart) -> str:
    """The chart in words (the SVG's description, the PDF's caption)."""
    counts = sorted((p for p in chart.points if p.viable_cells is not None), key=lambda p: p.day)
    parts = []
    if chart.has_fold:
        parts.append(f"{recorded_number(chart.seeded_cells)} viable cells seeded on day 0")
    if counts:
        last = counts[-1]
        first = counts[0]
        fold = f" ({fold_text(last.fold_expansion)})" if last.fold_expansion is not None else ""
        span = f"day {first.day}" if first.day == last.day else f"day {first.day} to day {last.day}"
        noun = "count" if len(counts) == 1 else "counts"
        parts.append(f"{len(counts)} {noun} from {span}, the last {recorded_number(last.viable_cells)} viable cells on "
                     f"day {last.day}{fold}")
        top = max(counts, key=lambda p: p.viable_cells or 0)
        if top is not last:
            fold = f" ({fold_text(top.fold_expansion)})" if top.fold_expansion is not None else ""
            parts.append(f"the highest {recorded_number(top.viable_cells)} on day {top.day}{fold}")
    viabilities = [p.viability_pct for p in chart.points if p.viability_pct is not None]
    if viabilities:
        low, high = min(viabilities), max(viabilities)
        span = f"{recorded_number(low)} %" if low == high else f"{recorded_number(low)}–{recorded_number(high)} %"
        limit = f" (limit {chart.limit_text})" if chart.limit_text else ""
        parts.append(f"viability {span}{limit}")
    out = chart.out_of_limit
    if out:
        parts.append("out of limit: " + "; ".join(f"day {p.day}, {p.viability_flag.lower()}" for p in out))
    else:
        parts.append("no value out of limit")
    return "Expansion by culture day: " + "; ".join(parts) + "."


# --- scales and ticks ------------------------------------------------------------------------


def _superscript(exponent: int) -> str:
    return str(exponent).translate(SUPERSCRIPTS)


def decade_label(exponent: int) -> str:
    """``10⁸``."""
    return f"10{_superscript(exponent)}"


def fold_label(exponent: int) -> str:
    """The fold at 10^exponent: ``1×``, ``100×``, ``10⁴×``, ``0.1×``, ``10⁻³×``."""
    if 0 <= exponent <= 3:
        return f"{10 ** exponent}×"
    if -2 <= exponent < 0:
        return f"{10.0 ** exponent:.{-exponent}f}×"
    return f"{decade_label(exponent)}×"


@dataclass(frozen=True)
class _Scale:
    """A linear map from data to points (on log10 values for the cells axis)."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return self.start + (value - self.low) / span * (self.end - self.start)


def _decades(values: list[float]) -> tuple[int, int]:
    """The decades the cells axis spans: the values with room above and below."""
    logs = [math.log10(v) for v in values if v > 0]
    if not logs:
        return 0, 1
    low = math.floor(min(logs) - 0.2)
    high = math.ceil(max(logs) + 0.2)
    return low, max(high, low + 1)


def _viability_range(chart: ExpansionChart) -> tuple[float, float]:
    values = [p.viability_pct for p in chart.points if p.viability_pct is not None]
    values += [v for v in (chart.viability_limit_min, chart.viability_limit_max) if v is not None]
    values += [v for p in chart.points for v in (p.viability_limit_min, p.viability_limit_max) if v is not None]
    if not values:
        return 0.0, 100.0
    low = max(0.0, math.floor((min(values) - 5) / 10) * 10)
    high = min(100.0, max(100.0, math.ceil(max(values) / 10) * 10))
    return low, max(high, low + 10)


def _day_step(day_width: float) -> int:
    for step in (1, 2, 5, 10):
        if day_width * step >= 15:
            return step
    return 10


# --- drawing helpers --------------------------------------------------------------------------


def _width(text: str, size: float, font: str = SANS) -> float:
    return stringWidth(text, font, size)


def _text(x: float, y: float, text: str, size: float, *, anchor: str = "start", font: str = SANS,
          color: colors.Color = INK) -> String:
    """A string; in SVG it also carries its width in the PDF font (``textLength``), so that
    a browser with another font fits it to the same box instead of overlapping a neighbour."""
    shape = String(x, y, text, fontName=font, fontSize=size, fillColor=color, textAnchor=anchor)
    shape._svgAttrs = {"textLength": f"{_width(text, size, font):.2f}", "lengthAdjust": "spacingAndGlyphs"}
    return shape


class _Tagged(Group):
    """A group that the SVG renderer gives attributes and a tooltip (``<title>``)."""

    def __init__(self, tooltip: str, **attrs: str) -> None:
        super().__init__()
        self._svg_tooltip = tooltip
        self._svg_attrs = attrs


def _marker(kind: str, x: float, y: float, color: colors.Color, *, filled: bool = True) -> Group:
    """circle (daily count), square (seeded), diamond (count at another step), down / up
    (a value below / above its limit)."""
    r = MARKER
    fill = color if filled else colors.white
    group = Group()
    if kind == "circle":
        group.add(Circle(x, y, r, fillColor=fill, strokeColor=color, strokeWidth=1))
    elif kind == "square":
        group.add(Rect(x - r, y - r, 2 * r, 2 * r, fillColor=fill, strokeColor=color, strokeWidth=1))
    elif kind == "diamond":
        d = r * 1.3
        group.add(Polygon([x, y + d, x + d, y, x, y - d, x - d, y], fillColor=fill, strokeColor=color,
                          strokeWidth=1))
    else:
        d = r * 1.45
        sign = -1 if kind == "down" else 1
        group.add(Polygon([x - d, y - sign * d * 0.6, x + d, y - sign * d * 0.6, x, y + sign * d * 1.1],
                          fillColor=fill, strokeColor=color, strokeWidth=1))
    return group


def _point_kind(point: ExpansionPoint) -> str:
    return "circle" if not point.step else "diamond"


@dataclass(frozen=True)
class _Box:
    x: float
    y: float
    x1: float
    y1: float

    def meets(self, other: _Box) -> bool:
        return self.x < other.x1 and other.x < self.x1 and self.y < other.y1 and other.y < self.y1

    def inside(self, other: _Box) -> bool:
        return self.x >= other.x and self.x1 <= other.x1 and self.y >= other.y and self.y1 <= other.y1

    def holds(self, x: float, y: float) -> bool:
        return self.x <= x <= self.x1 and self.y <= y <= self.y1

    def crosses(self, segment: tuple[float, float, float, float]) -> bool:
        x0, y0, x1, y1 = segment
        steps = max(2, int(math.hypot(x1 - x0, y1 - y0) / 1.5))
        return any(self.holds(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps) for i in range(steps + 1))


def _segments(points: list[tuple[float, float]]) -> list[tuple[float, float, float, float]]:
    return [(*a, *b) for a, b in pairwise(points)]


class _Labels:
    """Places labels beside points inside ``area``: never on another label if it can help,
    then avoiding markers, the series' lines and (last) the limit lines."""

    def __init__(self, area: _Box, *, markers: list[tuple[float, float]],
                 lines: list[tuple[float, float, float, float]], soft: list[tuple[float, float, float, float]]) -> None:
        self.area = area
        self.taken: list[_Box] = []
        self.markers = [_Box(x - MARKER - 1, y - MARKER - 1, x + MARKER + 1, y + MARKER + 1) for x, y in markers]
        self.lines = lines
        self.soft = soft
        self.crowded = False  # a label had to meet another one, or leave the area

    def place(self, text: str, x: float, y: float) -> tuple[float, float, str]:
        """(x, baseline, anchor) of ``text`` beside the point (x, y), which it then occupies."""
        width = _width(text, LABEL_SIZE, SANS_BOLD)
        gap = MARKER + 3
        size = LABEL_SIZE
        candidates = [(x + gap, y - size / 2 + 1, "start"), (x - gap, y - size / 2 + 1, "end"),
                      (x + gap, y + 3, "start"), (x + gap, y - size - 3, "start"),
                      (x - gap, y + 3, "end"), (x - gap, y - size - 3, "end"),
                      (x - width / 2, y + gap + 1, "start"), (x - width / 2, y - gap - size, "start"),
                      (x + gap, y + size + 5, "start"), (x + gap, y - 2 * size - 5, "start"),
                      (x - gap, y + size + 5, "end"), (x - gap, y - 2 * size - 5, "end"),
                      (x - width / 2, y + gap + size + 4, "start"), (x - width / 2, y - gap - 2 * size - 3, "start")]
        best: tuple[float, float, float, str, _Box] | None = None
        for order, (cx, cy, anchor) in enumerate(candidates):
            left = cx if anchor == "start" else cx - width
            box = _Box(left - 1, cy - 2, left + width + 1, cy + size)
            if not box.inside(self.area):
                continue
            cost = (100 * sum(box.meets(t) for t in self.taken) + 20 * sum(box.meets(m) for m in self.markers)
                    + 5 * sum(box.crosses(s) for s in self.lines) + 2 * sum(box.crosses(s) for s in self.soft)
                    + order * 0.01)
            if best is None or cost < best[0]:
                best = (cost, cx, cy, anchor, box)
        if best is None or best[0] >= 100:
            self.crowded = True
        if best is None:
            cx, cy, anchor = candidates[0]
            left = cx if anchor == "start" else cx - width
            self.taken.append(_Box(left - 1, cy - 2, left + width + 1, cy + size))
            return cx, cy, anchor
        _, cx, cy, anchor, box = best
        self.taken.append(box)
        return cx, cy, anchor


def _label(x: float, y: float, text: str, anchor: str, color: colors.Color) -> Group:
    """A bold label on a white ground, legible where it crosses a line."""
    width = _width(text, LABEL_SIZE, SANS_BOLD)
    left = x if anchor == "start" else x - width
    group = Group(Rect(left - 1, y - 2, width + 2, LABEL_SIZE + 2, fillColor=colors.white, fillOpacity=0.8,
                       strokeColor=None))
    group.add(_text(x, y, text, LABEL_SIZE, font=SANS_BOLD, color=color, anchor=anchor))
    return group


def _wrap(text: str, width: float, size: float, font: str = SANS) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and _width(f"{lines[-1]} {word}", size, font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _legend_items(chart: ExpansionChart) -> Iterator[tuple[str, str, colors.Color, bool]]:
    """(marker kind or "dash", text, colour, filled)."""
    if any(not p.step for p in chart.points):
        yield "circle", "Daily count", SERIES, True
    if chart.has_fold:
        yield "square", f"Cells seeded at {chart.seeded_step}" if chart.seeded_step else "Cells seeded, day 0", \
            SERIES, False
    others = list(dict.fromkeys(p.step for p in chart.points if p.step))
    if others:
        yield "diamond", "Count at " + ", ".join(others), SERIES, True
    sides = {p.viability_side for p in chart.out_of_limit}
    if sides - {"above"}:
        yield "down", "Below limit (labelled)", BAD, True
    if "above" in sides:
        yield "up", "Above limit (labelled)", BAD, True
    if chart.limit_text:
        yield "dash", f"Viability limit {chart.limit_text}", BAD, False
    own = {(p.step, p.limit_text) for p in chart.points if p.viability_pct is not None and p.limit_text
           and (p.viability_limit_min, p.viability_limit_max) != (chart.viability_limit_min, chart.viability_limit_max)}
    for step, limit in sorted(own):
        yield "short", f"{step or 'Daily count'} limit {limit}", BAD, False


# --- the chart --------------------------------------------------------------------------------


def expansion_drawing(chart: ExpansionChart, width: float = WIDTH) -> Drawing:
    """The expansion chart as a reportlab Drawing ``width`` points wide (a platypus flowable)."""
    return _Layout(chart, width).drawing()


class _Layout:
    """Positions computed once from the data; ``drawing`` then draws them from the top down."""

    def __init__(self, chart: ExpansionChart, width: float) -> None:
        self.chart = chart
        self.width = width
        counts = [p.viable_cells for p in chart.points if p.viable_cells is not None]
        seeded = [chart.seeded_cells] if chart.has_fold and chart.seeded_cells is not None else []
        self.low_decade, self.high_decade = _decades([*counts, *seeded])
        self.vlow, self.vhigh = _viability_range(chart)
        ends = [p.day for p in chart.points] + [d for w in chart.windows for d in (w.min_day, w.max_day)
                                                if d is not None]
        self.last_day = max([1, *ends])
        self.first_day = min([0, *(p.day for p in chart.points)])
        # Margins: the widest tick label on each side, then the tick.
        left_labels = [decade_label(e) for e in range(self.low_decade, self.high_decade + 1)]
        left_labels += [_number(self.vlow), _number(self.vhigh)]
        self.left = max(_width(t, TICK_SIZE) for t in left_labels) + 9
        self.right = width - (max(_width(t, TICK_SIZE) for t in self._fold_ticks_text()) + 9 if chart.has_fold
                              else 14)
        self.day = _Scale(self.first_day - 0.5, self.last_day + 0.5, self.left, self.right)
        # Heights, bottom up: legend, x axis title and tick labels, lower panel, gap, upper panel,
        # window labels, axis titles.
        self.legend_rows = self._legend_rows()
        self.lower_bottom = 6 + len(self.legend_rows) * (LINE + 3) + 4 + TITLE_SIZE + 6 + TICK_SIZE + 6
        self.lower_top = self.lower_bottom + LOWER_HEIGHT
        self.upper_bottom = self.lower_top + PANEL_GAP
        self.upper_top = self.upper_bottom + UPPER_HEIGHT
        self.window_lines = [self._window_lines(w) for w in chart.windows]
        strip = max([len(lines) for lines in self.window_lines] or [0])
        self.height = self.upper_top + (strip * LINE + 4 if strip else 0) + TITLE_SIZE + 8
        self.cells = _Scale(self.low_decade, self.high_decade, self.upper_bottom, self.upper_top)
        self.viability = _Scale(self.vlow, self.vhigh, self.lower_bottom, self.lower_top)

    # -- measures

    def _fold_ticks(self) -> list[int]:
        """Exponents e of the folds 10^e that fall on the cells axis."""
        seeded = self.chart.seeded_cells
        if not self.chart.has_fold or seeded is None:
            return []
        offset = math.log10(seeded)
        return list(range(math.ceil(self.low_decade - offset - 1e-9), math.floor(self.high_decade - offset + 1e-9)
                          + 1))

    def _fold_ticks_text(self) -> list[str]:
        return [fold_label(e) for e in self._fold_ticks()] or ["1×"]

    def _legend_rows(self) -> list[list[tuple[str, str, colors.Color, bool]]]:
        rows: list[list[tuple[str, str, colors.Color, bool]]] = [[]]
        used = 0.0
        for item in _legend_items(self.chart):
            need = 16 + _width(item[1], LABEL_SIZE) + 14
            if rows[-1] and used + need > self.width - 8:
                rows.append([])
                used = 0.0
            rows[-1].append(item)
            used += need
        return [row for row in rows if row]

    def _band(self, window: ExpansionWindow) -> tuple[float, float]:
        low = window.min_day - 0.5 if window.min_day is not None else self.first_day - 0.5
        high = window.max_day + 0.5 if window.max_day is not None else self.last_day + 0.5
        return self.day(max(low, self.first_day - 0.5)), self.day(min(high, self.last_day + 0.5))

    def _window_lines(self, window: ExpansionWindow) -> list[str]:
        x0, x1 = self._band(window)
        room = max(x1 - x0, 90.0)
        return [*_wrap(window.label, room, LABEL_SIZE, SANS_BOLD), window.days]

    # -- drawing

    def drawing(self) -> Drawing:
        drawing = Drawing(self.width, self.height)
        drawing.add(Rect(0, 0, self.width, self.height, fillColor=colors.white, strokeColor=None))
        self._titles(drawing)
        self._windows(drawing)
        self._upper(drawing)
        self._lower(drawing)
        self._x_axis(drawing)
        self._legend(drawing)
        return drawing

    def _titles(self, drawing: Drawing) -> None:
        y = self.height - TITLE_SIZE - 3
        drawing.add(_text(2, y, "Viable cells", TITLE_SIZE, font=SANS_BOLD))
        drawing.add(_text(2 + _width("Viable cells ", TITLE_SIZE, SANS_BOLD), y, "(log scale)", TICK_SIZE,
                          color=MUTED))
        if self.chart.has_fold:
            drawing.add(_text(self.width - 2, y, "Fold expansion", TITLE_SIZE, font=SANS_BOLD, anchor="end"))
        drawing.add(_text(2, self.lower_top + 5, "Viability %", TITLE_SIZE, font=SANS_BOLD))

    def _windows(self, drawing: Drawing) -> None:
        for window, lines in zip(self.chart.windows, self.window_lines, strict=True):
            x0, x1 = self._band(window)
            if x1 <= x0:
                continue
            for bottom, top in ((self.upper_bottom, self.upper_top), (self.lower_bottom, self.lower_top)):
                drawing.add(Rect(x0, bottom, x1 - x0, top - bottom, fillColor=BAND, strokeColor=None))
                for x in (x0, x1):
                    drawing.add(Line(x, bottom, x, top, strokeColor=BAND_EDGE, strokeWidth=0.6,
                                     strokeDashArray=[2, 2]))
            centre = (x0 + x1) / 2
            widest = max(_width(line, LABEL_SIZE, SANS_BOLD) for line in lines)
            centre = min(max(centre, self.left + widest / 2), self.right - widest / 2)
            y = self.upper_top + 4 + (len(lines) - 1) * LINE
            for number, line in enumerate(lines):
                last = number == len(lines) - 1
                drawing.add(_text(centre, y, line, LABEL_SIZE, anchor="middle", font=SANS if last else SANS_BOLD,
                                  color=MUTED if last else INK))
                y -= LINE

    def _frame(self, drawing: Drawing, bottom: float, top: float) -> None:
        drawing.add(Rect(self.left, bottom, self.right - self.left, top - bottom, fillColor=None,
                         strokeColor=MUTED, strokeWidth=0.8))

    def _day_grid(self, drawing: Drawing, bottom: float, top: float) -> None:
        for day in range(self.first_day, self.last_day + 1):
            x = self.day(day)
            drawing.add(Line(x, bottom, x, top, strokeColor=GRID, strokeWidth=0.5))
            drawing.add(Line(x, bottom, x, bottom - 3, strokeColor=MUTED, strokeWidth=0.6))

    def _upper(self, drawing: Drawing) -> None:
        chart, bottom, top = self.chart, self.upper_bottom, self.upper_top
        self._day_grid(drawing, bottom, top)
        every = 1 if self.high_decade - self.low_decade <= 7 else 2
        for exponent in range(self.low_decade, self.high_decade + 1):
            y = self.cells(exponent)
            if bottom < y < top:
                drawing.add(Line(self.left, y, self.right, y, strokeColor=GRID, strokeWidth=0.6))
            drawing.add(Line(self.left - 3, y, self.left, y, strokeColor=MUTED, strokeWidth=0.6))
            if (exponent - self.low_decade) % every == 0:
                drawing.add(_text(self.left - 5, y - TICK_SIZE / 3, decade_label(exponent), TICK_SIZE, anchor="end"))
            if exponent < self.high_decade:
                for minor in range(2, 10):
                    ym = self.cells(exponent + math.log10(minor))
                    drawing.add(Line(self.left - 1.5, ym, self.left, ym, strokeColor=MUTED, strokeWidth=0.4))
        seeded = chart.seeded_cells if chart.has_fold else None
        offset = math.log10(seeded) if seeded is not None else 0.0
        if seeded is not None:
            for exponent in self._fold_ticks():
                y = self.cells(exponent + offset)
                drawing.add(Line(self.right, y, self.right + 3, y, strokeColor=MUTED, strokeWidth=0.6))
                if exponent % every == 0:
                    drawing.add(_text(self.right + 5, y - TICK_SIZE / 3, fold_label(exponent), TICK_SIZE))
        self._frame(drawing, bottom, top)
        # The curve: the seeded count on day 0, then every count by day.
        series: list[tuple[float, float]] = [(self.day(0), self.cells(offset))] if seeded is not None else []
        points = sorted((p for p in chart.points if p.viable_cells is not None), key=lambda p: p.day)
        for point in points:
            cells = point.viable_cells or 0.0
            if cells > 0:
                series.append((self.day(point.day), self.cells(math.log10(cells))))
        labels = _Labels(_Box(self.left, bottom, self.right, top), markers=series, lines=_segments(series), soft=[])
        if len(series) > 1:
            drawing.add(PolyLine([c for xy in series for c in xy], strokeColor=SERIES, strokeWidth=1.2))
        if seeded is not None:
            tag = _Tagged(f"Day 0: {recorded_number(seeded)} viable cells seeded (1-fold)", **{
                "class": "point seeded", "data-series": "seeded", "data-day": "0"})
            tag.add(_marker("square", self.day(0), self.cells(offset), SERIES, filled=False))
            drawing.add(tag)
        for point in points:
            x = self.day(point.day)
            cells = point.viable_cells or 0.0
            tag = _Tagged(self._tooltip(point), **{"class": "point cells", "data-series": "cells",
                                                   "data-day": str(point.day)})
            if cells > 0:
                tag.add(_marker(_point_kind(point), x, self.cells(math.log10(cells)), SERIES))
            else:  # no cells: off the log scale, drawn on its floor and said in words
                tag.add(_marker("down", x, bottom + MARKER, SERIES, filled=False))
                tx, ty, anchor = labels.place("0 cells", x, bottom + MARKER)
                tag.add(_label(tx, ty, "0 cells", anchor, INK))
            drawing.add(tag)

    def _tooltip(self, point: ExpansionPoint) -> str:
        where = f" ({point.step})" if point.step else ""
        parts = [f"Day {point.day}{where}"]
        if point.viable_cells is not None:
            parts.append(f"{recorded_number(point.viable_cells)} viable cells")
        if point.fold_expansion is not None:
            parts.append(fold_text(point.fold_expansion))
        if point.viability_pct is not None:
            parts.append(f"viability {recorded_number(point.viability_pct)} %")
        text = ", ".join(parts)
        if point.viability_flag:
            text += f". OUT OF LIMIT: {point.viability_flag}"
        if point.corrected:
            text += ". Corrected since first entered"
        return text

    def _lower(self, drawing: Drawing) -> None:
        chart, bottom, top = self.chart, self.lower_bottom, self.lower_top
        self._day_grid(drawing, bottom, top)
        step = 10 if self.vhigh - self.vlow <= 50 else 20
        value = self.vlow
        while value <= self.vhigh + 1e-9:
            y = self.viability(value)
            if bottom < y < top:
                drawing.add(Line(self.left, y, self.right, y, strokeColor=GRID, strokeWidth=0.6))
            drawing.add(Line(self.left - 3, y, self.left, y, strokeColor=MUTED, strokeWidth=0.6))
            drawing.add(_text(self.left - 5, y - TICK_SIZE / 3, _number(value), TICK_SIZE, anchor="end"))
            value += step
        points = sorted((p for p in chart.points if p.viability_pct is not None), key=lambda p: p.day)
        series = [(self.day(p.day), self.viability(p.viability_pct or 0.0)) for p in points]
        limit_lines = [(self.left, self.viability(v), self.right, self.viability(v))
                       for v in (chart.viability_limit_min, chart.viability_limit_max) if v is not None]
        chart_limits = (chart.viability_limit_min, chart.viability_limit_max)
        own_limits = [  # a count judged against other limits (harvest): those, around it
            (self.day(p.day - 0.45), self.viability(v), self.day(p.day + 0.45), self.viability(v))
            for p in points if (p.viability_limit_min, p.viability_limit_max) != chart_limits
            for v in (p.viability_limit_min, p.viability_limit_max) if v is not None and self.vlow <= v <= self.vhigh]
        limit_labels: list[_Box] = []
        for limit in (chart.viability_limit_min, chart.viability_limit_max):
            if limit is None:
                continue
            y = self.viability(limit)
            drawing.add(Line(self.left, y, self.right, y, strokeColor=BAD, strokeWidth=1, strokeDashArray=[4, 3]))
            text = f"limit {'≥' if limit == chart.viability_limit_min else '≤'} {_number(limit)} %"
            above = y + 3 + TICK_SIZE <= top
            ty = y + 3 if above else y - TICK_SIZE - 2
            drawing.add(_text(self.left + 4, ty, text, TICK_SIZE, font=SANS_BOLD, color=BAD))
            limit_labels.append(_Box(self.left + 3, ty - 2, self.left + 5 + _width(text, TICK_SIZE, SANS_BOLD),
                                     ty + TICK_SIZE))
        for x0, y, x1, _ in own_limits:
            drawing.add(Line(x0, y, x1, y, strokeColor=BAD, strokeWidth=1, strokeDashArray=[2, 2]))
        self._frame(drawing, bottom, top)
        if len(series) > 1:
            drawing.add(PolyLine([c for xy in series for c in xy], strokeColor=SERIES, strokeWidth=0.9))
        flags: dict[int, tuple[str, float, float, str]] = {}
        # Each flag in words beside its point; where they would meet, the value alone ("66 %")
        # beside its ▼, which the legend and the data table spell out.
        for compact in (False, True):
            labels = _Labels(_Box(self.left, bottom, self.right, top), markers=series, lines=_segments(series),
                             soft=limit_lines + own_limits)
            labels.taken += limit_labels
            flags = {}
            for index, point in enumerate(points):
                if point.viability_side:
                    text = f"{recorded_number(point.viability_pct)} %" if compact else short_flag(point, chart)
                    flags[index] = (text, *labels.place(text, *series[index]))
            if not labels.crowded:
                break
        for index, point in enumerate(points):
            x, y = series[index]
            tag = _Tagged(self._tooltip(point), **{"class": "point viability", "data-series": "viability",
                                                   "data-day": str(point.day)})
            side = point.viability_side
            if side:
                tag.add(_marker("up" if side == "above" else "down", x, y, BAD))
                text, tx, ty, anchor = flags[index]
                tag.add(_label(tx, ty, text, anchor, BAD))
            else:
                tag.add(_marker(_point_kind(point), x, y, SERIES))
            drawing.add(tag)

    def _x_axis(self, drawing: Drawing) -> None:
        every = _day_step(self.day(1) - self.day(0))
        y = self.lower_bottom - 4 - TICK_SIZE
        for day in range(self.first_day, self.last_day + 1):
            if day % every == 0:
                drawing.add(_text(self.day(day), y, str(day), TICK_SIZE, anchor="middle"))
        title_y = y - TITLE_SIZE - 5
        drawing.add(_text((self.left + self.right) / 2, title_y, "Culture day", TITLE_SIZE, font=SANS_BOLD,
                          anchor="middle"))

    def _legend(self, drawing: Drawing) -> None:
        y = 6 + (len(self.legend_rows) - 1) * (LINE + 3)
        for row in self.legend_rows:
            x = self.left
            for kind, text, color, filled in row:
                if kind in ("dash", "short"):
                    drawing.add(Line(x - 2, y + 2.5, x + 10, y + 2.5, strokeColor=color, strokeWidth=1,
                                     strokeDashArray=[4, 3] if kind == "dash" else [2, 2]))
                else:
                    drawing.add(_marker(kind, x + 4, y + 2.5, color, filled=filled))
                drawing.add(_text(x + 14, y, text, LABEL_SIZE))
                x += 16 + _width(text, LABEL_SIZE) + 14
            y -= LINE + 3


# --- SVG --------------------------------------------------------------------------------------


class _SvgRenderer(renderSVG._SVGRenderer):
    """reportlab's SVG renderer, giving tagged groups their attributes and a ``<title>``."""

    def drawGroup(self, group: Group) -> None:
        parent = self._canvas.currGroup
        super().drawGroup(group)
        if not isinstance(group, _Tagged):
            return
        node = parent.lastChild
        document = self._canvas.doc
        if not isinstance(node, Element) or node.tagName != "g":
            return
        for name, value in group._svg_attrs.items():
            node.setAttribute(name, value)
        title = document.createElement("title")
        title.appendChild(document.createTextNode(group._svg_tooltip))
        node.insertBefore(title, node.firstChild)


@lru_cache(maxsize=512)
def expansion_svg(chart: ExpansionChart, width: float = WIDTH, *, title: str = "Expansion chart") -> str:
    """The chart of ``expansion_drawing`` as an inline ``<svg>`` element that scales to the
    width of its container: a viewBox, ``width="100%"``, ``role="img"``, and a ``<title>``
    and ``<desc>`` (the chart in words, ``expansion_summary``) that name it for assistive
    technology. Each point is a ``<g class="point ...">`` with ``data-day`` and a tooltip.

    Kept per chart: the key is the chart's own (frozen) data, so a changed count is a new
    chart and can never be answered with an old drawing; the batch page otherwise spends
    most of its time redrawing an unchanged chart through reportlab."""
    drawing = expansion_drawing(chart, width)
    fonts = {SANS: {"family": SVG_FONTS}, SANS_BOLD: {"family": SVG_FONTS, "weight": "bold"}}
    canvas = renderSVG.SVGCanvas((drawing.width, drawing.height), useClip=True, fontHacks=fonts, svgAttrs={
        "width": "100%", "role": "img", "aria-labelledby": "expansion-chart-title expansion-chart-desc",
        "class": "expansion-chart"})  # sized by the stylesheet: the pages' CSP allows no inline style
    _SvgRenderer().draw(renderScaledDrawing(drawing), canvas, 0, 0, showBoundary=False)
    svg = canvas.svg
    svg.removeAttribute("height")
    svg.setAttribute("viewBox", f"0 0 {drawing.width:g} {drawing.height:g}")
    for tag, ident, text in (("title", "expansion-chart-title", title),
                             ("desc", "expansion-chart-desc", expansion_summary(chart))):
        node = svg.getElementsByTagName(tag)[0]
        node.setAttribute("id", ident)
        node.firstChild.replaceWholeText(text)  # type: ignore[union-attr]
    if canvas.groupTree.hasAttribute("id"):
        canvas.groupTree.removeAttribute("id")
    _presentation_attributes(svg)
    return svg.toxml()


def _presentation_attributes(node: Element) -> None:
    """Each drawn element's ``style`` as presentation attributes (``fill="..."``), which a
    page's Content-Security-Policy never blocks, unlike inline styles."""
    for element in node.getElementsByTagName("*"):
        style = element.getAttribute("style")
        if not style or element.tagName == "svg":
            continue
        element.removeAttribute("style")
        for declaration in style.split(";"):
            name, _, value = declaration.partition(":")
            if name.strip() and value.strip():
                element.setAttribute(name.strip(), value.strip())
