"""Where everything goes on a label: the QR's box and each text block, in points.

Text is laid out in regions that never meet the QR's box (quiet zone included) and stay
inside the label's margin; the QR takes what the text leaves (``largest_qr``), so a label has
no empty band. Each region's text is wrapped at word boundaries and shrunk
together, step by step, down to each style's minimum size; what still does not fit raises
``LabelOverflow``: a label never loses a word. The PDF and ZPL renderers draw this layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from reportlab.pdfbase.pdfmetrics import stringWidth

from labels.data import DATE_WORDS, Dose, LabelData, LabelDate, Stock
from labels.text import MONO_BOLD, SANS, SANS_BOLD, clean
from workflows.formatting import format_date, format_datetime, format_number, format_quantity, format_weight

MM = 72 / 25.4

# QR box sizes, quiet zone included (DESIGN.md: at least 15 mm on bags, 12 mm on tubes); above
# the minimum a label's QR grows, QR_STEP at a time, as far as its text leaves room.
QR_STEP = 0.5 * MM
QR_MINIMUM = {Stock.BAG: 15 * MM, Stock.TUBE: 12 * MM}
MARGIN = {Stock.BAG: 3 * MM, Stock.TUBE: 1 * MM}
# The QR may sit closer to the edge than text: its quiet zone is blank paper anyway.
QR_INSET = {Stock.BAG: 3 * MM, Stock.TUBE: 0.5 * MM}
GAP = {Stock.BAG: 1.5 * MM, Stock.TUBE: 0.4 * MM}
LEADING = {Stock.BAG: 1.2, Stock.TUBE: 1.15}
SHRINK_STEP = 0.02
GROW_STEP = 0.05
MAX_GROW = 1.5  # text of a short label grows up to this, rather than leave an empty band
IDENTITY_SIZE = 9  # COI and batch number on bags, in points
EPSILON = 1e-6


class LabelOverflow(ValueError):
    """The label's text does not fit its stock even at the smallest allowed font size."""


@dataclass(frozen=True)
class Box:
    """A rectangle in points, origin at the lower-left corner (PDF convention)."""

    x: float
    y: float
    width: float
    height: float

    @property
    def x1(self) -> float:
        return self.x + self.width

    @property
    def y1(self) -> float:
        return self.y + self.height

    def intersects(self, other: Box) -> bool:
        """True when the two boxes share more than an edge."""
        return self.x < other.x1 and other.x < self.x1 and self.y < other.y1 and other.y < self.y1


@dataclass(frozen=True)
class TextBlock:
    """One field as laid out: its wrapped ``lines``, their baselines, and the ``box`` the block fills.

    An ``inverse`` block is white text on a black box (REPRINT).
    """

    text: str
    lines: tuple[str, ...]
    font: str
    size: float
    x: float
    baselines: tuple[float, ...]
    box: Box
    inverse: bool


@dataclass(frozen=True)
class LabelLayout:
    """A label's page size, its QR box (quiet zone included) and its text blocks, in points."""

    width: float
    height: float
    qr: Box
    blocks: tuple[TextBlock, ...]


@dataclass(frozen=True)
class _Style:
    font: str
    size: float
    minimum: float
    inverse: bool = False
    grows: bool = True  # False: never larger than ``size`` (a line the QR's size was set by)


@dataclass(frozen=True)
class _Field:
    text: str
    style: _Style


@lru_cache(maxsize=1 << 16)
def _width(text: str, font: str, size: float) -> float:
    """``stringWidth``, remembered: laying one label out tries a dozen QR and font sizes, each
    measuring the same words and lines again, and a sheet's labels share most of their words."""
    return stringWidth(text, font, size)


@lru_cache(maxsize=1 << 14)
def _wrap(text: str, font: str, size: float, width: float) -> tuple[str, ...] | None:
    """Greedy word wrap; None when one word alone is wider than ``width``. Remembered, as ``_width``."""
    lines: list[str] = []
    for word in text.split(" "):
        if _width(word, font, size) > width + EPSILON:
            return None
        if lines and _width(f"{lines[-1]} {word}", font, size) <= width + EPSILON:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return tuple(lines)


def _padding(style: _Style, size: float) -> float:
    return 0.3 * size if style.inverse else 0.0


@dataclass(frozen=True)
class _Area:
    """Where a run of text flows: from ``top`` down beside the QR (``beside_*``, as low as
    ``beside_bottom``), then, from the first block that does not fit there, full width below
    it (``below_*``, from ``below_top`` down to ``bottom``)."""

    top: float
    beside_x: float
    beside_width: float
    beside_bottom: float
    below_x: float
    below_width: float
    below_top: float
    bottom: float

    @classmethod
    def column(cls, x: float, top: float, width: float, height: float) -> _Area:
        """A plain column: nothing beside anything."""
        return cls(top, x, width, top - height, x, width, top - height, top - height)


def _block(field: _Field, size: float, lines: Sequence[str], x: float, width: float, top: float,
           leading: float) -> TextBlock:
    slot = size * leading
    # Centre the em box (0.76 above, 0.24 below the baseline) in each line's slot.
    baselines = tuple(top - i * slot - (slot - size) / 2 - 0.76 * size for i in range(len(lines)))
    box = Box(x, top - len(lines) * slot, width, len(lines) * slot)
    return TextBlock(field.text, tuple(lines), field.style.font, size, x + _padding(field.style, size), baselines,
                     box, field.style.inverse)


def _try_fit(fields: Sequence[_Field], sizes: Sequence[float], area: _Area, leading: float) -> list[TextBlock] | None:
    """The blocks of ``fields`` at ``sizes`` flowed into ``area``, or None when they do not fit.
    Blocks are made only once all fit: most tries (``largest_qr``, growing, shrinking) fail."""
    placed = []
    top = area.top
    beside = True
    for field, size in zip(fields, sizes, strict=True):
        slot, pad = size * leading, _padding(field.style, size)
        if beside:
            lines = _wrap(field.text, field.style.font, size, area.beside_width - 2 * pad)
            if lines is not None and top - len(lines) * slot >= area.beside_bottom - EPSILON:
                placed.append((field, size, lines, area.beside_x, area.beside_width, top))
                top -= len(lines) * slot
                continue
            beside = False
            top = min(top, area.below_top)
        lines = _wrap(field.text, field.style.font, size, area.below_width - 2 * pad)
        if lines is None or top - len(lines) * slot < area.bottom - EPSILON:
            return None
        placed.append((field, size, lines, area.below_x, area.below_width, top))
        top -= len(lines) * slot
    return [_block(field, size, lines, x, width, block_top, leading)
            for field, size, lines, x, width, block_top in placed]


def _overflow_message(fields: Sequence[_Field], area: _Area, leading: float) -> str:
    width = max(area.beside_width, area.below_width)
    for field in fields:
        size = field.style.minimum
        for word in field.text.split(" "):
            if _width(word, field.style.font, size) > width - 2 * _padding(field.style, size) + EPSILON:
                return f"{word!r} is wider than the label's text area even at {size:g} pt"
    needed = 0.0
    for field in fields:
        size = field.style.minimum
        lines = _wrap(field.text, field.style.font, size, width - 2 * _padding(field.style, size)) or ()
        needed += len(lines) * size * leading
    height = area.top - area.bottom
    return f"its text needs {needed / MM:.1f} mm of height at the smallest font size, and {height / MM:.1f} mm is left"


def _region(fields: Sequence[_Field], area: _Area, leading: float, where: str, shrink: bool,
            scale: float = 1.0) -> tuple[TextBlock, ...]:
    """Flow ``fields`` into ``area`` at ``scale`` times their size, shrinking all of them together (if
    ``shrink``) until they fit."""
    while True:
        sizes = [max(field.style.minimum, round(field.style.size * (scale if field.style.grows else min(scale, 1)), 1))
                 for field in fields]
        blocks = _try_fit(fields, sizes, area, leading)
        if blocks is not None:
            return tuple(blocks)
        if not shrink or all(size <= field.style.minimum for size, field in zip(sizes, fields, strict=True)):
            raise LabelOverflow(f"The {where} of this label does not fit: {_overflow_message(fields, area, leading)}.")
        scale -= SHRINK_STEP


def _field(text: str, style: _Style) -> _Field:
    return _Field(clean(text, style.font), style)


def date_text(date: LabelDate) -> str:
    """``Collected 2026-11-13 00:05 UTC``: what the date is, and the date-time in the zone it carries."""
    return f"{DATE_WORDS[date.what]} {format_datetime(date.moment)}"


def volume_text(volume_ml: Decimal) -> str:
    """``Volume 32.3 mL``."""
    return f"Volume {format_quantity(volume_ml, 'mL')}"


def dose_texts(dose: Dose, bag_count: int | None) -> list[str]:
    """The bag's CAR+ cells and dose per kg, and the whole fill's when it has several bags.

    ``CAR+ viable T cells 6.45 × 10⁷``, ``Dose 1.11 × 10⁶ cells/kg (58 kg)``,
    ``All 2 bags 1.29 × 10⁸ cells, 2.22 × 10⁶ cells/kg``: computed values to three significant
    digits, the weight with every digit recorded.
    """
    weight = format_weight(dose.weight_kg)
    texts = [f"CAR+ viable T cells {format_number(dose.cells)}",
             f"Dose {format_quantity(dose.per_kg, 'cells/kg')} ({weight})"]
    if dose.total_cells is not None and dose.total_per_kg is not None and bag_count and bag_count > 1:
        texts.append(f"All {bag_count} bags {format_quantity(dose.total_cells, 'cells')}, "
                     f"{format_quantity(dose.total_per_kg, 'cells/kg')}")
    return texts


def bag_text(label: LabelData) -> str | None:
    """``Bag 1 of 2``."""
    return None if label.bag_number is None else f"Bag {label.bag_number} of {label.bag_count}"


def _identity_texts(label: LabelData) -> tuple[str, str]:
    return f"COI {label.coi}", f"Batch {label.batch_number}"


def _patient_line(label: LabelData) -> str | None:
    parts = []
    if label.patient_ref:
        parts.append(f"Patient {label.patient_ref}")
    if label.patient_initials:
        parts.append(f"Initials {label.patient_initials}")
    if label.patient_dob:
        parts.append(f"DOB {format_date(label.patient_dob)}")
    return " · ".join(parts) or None


def _bag_fields(label: LabelData) -> tuple[list[_Field], list[_Field]]:
    """Header fields (full width: the kind and the code) and the fields that flow beside the QR and on below it."""
    minimum = 6.0
    header = []
    if label.reprint:
        header.append(_field("REPRINT", _Style(SANS_BOLD, 16, 8, inverse=True)))
        if label.copy_note:
            header.append(_field(label.copy_note, _Style(SANS, 8, minimum)))
    header.append(_field(label.kind, _Style(SANS_BOLD, 14, 8)))
    header.append(_field(label.code, _Style(MONO_BOLD, 15, 9)))

    regular = _Style(SANS, 8.5, minimum)
    bold = _Style(SANS_BOLD, 8.5, minimum)
    small = _Style(SANS, 7, minimum)
    texts: list[tuple[str | None, _Style]] = [
        *((text, _Style(SANS, IDENTITY_SIZE, minimum, grows=False)) for text in _identity_texts(label)),
        (bag_text(label), _Style(SANS_BOLD, 11, minimum)),
        (volume_text(label.volume_ml) if label.volume_ml is not None else None, _Style(SANS_BOLD, 9, minimum)),
        *((text, regular) for text in (dose_texts(label.dose, label.bag_count) if label.dose else ())),
        (label.description, _Style(SANS_BOLD, 10, minimum)),
        (_patient_line(label), regular),
        *((date_text(d), bold if d.what == "expires" else regular) for d in label.dates),
        (label.storage, bold),
        *((line, bold) for line in label.regulatory_lines),
        *((line, regular) for line in label.warnings),
        (label.investigational, bold),
        (label.facility_name, small),
        *((line, small) for line in label.facility_address),
        (f"Printed {format_datetime(label.printed_at)}", small),
    ]
    return header, [_field(text, style) for text, style in texts if text and text.strip()]


def _tube_fields(label: LabelData) -> tuple[list[_Field], list[_Field]]:
    """The code (full width, on top) and the fields beside the QR: the essentials only."""
    minimum = 4.5
    side = []
    if label.reprint:
        side.append(_field("REPRINT", _Style(SANS_BOLD, 6.5, minimum, inverse=True)))
    side += [
        _field(label.description, _Style(SANS_BOLD, 6, minimum)),
        _field(label.coi, _Style(SANS, 6, minimum)),
        _field(label.batch_number, _Style(SANS, 6, minimum)),
    ]
    side += [_field(date_text(d), _Style(SANS_BOLD if d.what == "expires" else SANS, 6, minimum))
             for d in label.dates]
    return [_field(label.code, _Style(MONO_BOLD, 9, minimum))], side


def _label_fields(label: LabelData) -> tuple[list[_Field], list[_Field]]:
    """The fields on top of ``label`` (full width) and the fields beside (and, on bags, below) its QR."""
    return _bag_fields(label) if label.stock is Stock.BAG else _tube_fields(label)


def _layout(label: LabelData, fields: tuple[list[_Field], list[_Field]], qr_size: float, shrink: bool,
            scale: float = 1.0) -> LabelLayout:
    """``label`` (its ``fields``) laid out around a QR of ``qr_size`` points; the text beside and below the QR
    at ``scale`` times its size, smaller only if ``shrink``."""
    stock = label.stock
    width, height = (side * MM for side in stock.size_mm)
    margin, gap, leading, inset = MARGIN[stock], GAP[stock], LEADING[stock], QR_INSET[stock]
    inner_width = width - 2 * margin
    top = height - margin

    if stock is Stock.BAG:
        header_fields, body_fields = fields
        header = _region(header_fields, _Area.column(margin, top, inner_width, height / 4), leading, "header",
                         shrink)
        qr = Box(inset, header[-1].box.y - gap - qr_size, qr_size, qr_size)
        if qr.y < inset - EPSILON:
            raise LabelOverflow(f"A {qr_size / MM:.1f} mm QR does not fit below this label's header.")
        side_x = qr.x1 + gap
        area = _Area(qr.y1, side_x, width - margin - side_x, qr.y, margin, inner_width, qr.y - gap, margin)
        body = _region(body_fields, area, leading, "text beside and below the QR", shrink, scale)
        return LabelLayout(width, height, qr, header + body)

    header_fields, side_fields = fields
    qr = Box(inset, inset, qr_size, qr_size)
    header = _region(header_fields, _Area.column(margin, top, inner_width, top - qr.y1 - gap), leading, "code line",
                     shrink)
    side_x = qr.x1 + gap
    side_top = header[-1].box.y - gap
    side = _region(side_fields, _Area.column(side_x, side_top, width - margin - side_x, side_top - margin), leading,
                   "text beside the QR", shrink, scale)
    return LabelLayout(width, height, qr, header + side)


def _fits(label: LabelData, fields: tuple[list[_Field], list[_Field]], qr_size: float) -> bool:
    try:
        _layout(label, fields, qr_size, shrink=False)
    except LabelOverflow:
        return False
    return True


def largest_qr(label: LabelData) -> float:
    """The largest QR box (points, quiet zone included; the minimum plus whole QR_STEPs) that leaves
    all text at its full size: the minimum when even that leaves too little room (the text then shrinks).

    On bags the QR leaves the COI and batch lines room beside it. Found by bisection: more QR
    leaves less room for text, so what fits at one size fits at any smaller one.
    """
    return _largest_qr(label, _label_fields(label))


def _largest_qr(label: LabelData, fields: tuple[list[_Field], list[_Field]]) -> float:
    stock = label.stock
    width, height = (side * MM for side in stock.size_mm)
    largest = min(width, height) - 2 * QR_INSET[stock]
    if stock is Stock.BAG:
        widest = max(_width(text, SANS, IDENTITY_SIZE) for text in _identity_texts(label))
        largest = min(largest, width - QR_INSET[stock] - GAP[stock] - MARGIN[stock] - widest)
    low, high = 0, int((largest - QR_MINIMUM[stock]) // QR_STEP)  # in steps above the minimum
    if high <= 0 or not _fits(label, fields, QR_MINIMUM[stock]):
        return QR_MINIMUM[stock]
    while low < high:  # invariant: low fits
        middle = (low + high + 1) // 2
        if _fits(label, fields, QR_MINIMUM[stock] + middle * QR_STEP):
            low = middle
        else:
            high = middle - 1
    return QR_MINIMUM[stock] + low * QR_STEP


def layout_label(label: LabelData, qr_size: float | None = None) -> LabelLayout:
    """Lay ``label`` out on its stock, with the largest QR its text leaves room for (``largest_qr``).

    ``qr_size`` (points, quiet zone included) fixes the QR instead (ZPL: a whole number of
    dots per module). Text that leaves room below it grows (up to MAX_GROW), so a short label
    has no empty band; text that does not fit shrinks. Raises LabelOverflow when the text
    cannot fit even at its smallest size, and ValueError for a QR below the stock's minimum.
    """
    fields = _label_fields(label)
    if qr_size is None:
        qr_size = _largest_qr(label, fields)
    if qr_size < QR_MINIMUM[label.stock] - EPSILON:
        raise ValueError(f"A {label.stock} label's QR must be at least {QR_MINIMUM[label.stock] / MM:.0f} mm.")
    for step in range(round((MAX_GROW - 1) / GROW_STEP), -1, -1):
        try:
            return _layout(label, fields, qr_size, shrink=False, scale=1 + step * GROW_STEP)
        except LabelOverflow:
            continue
    return _layout(label, fields, qr_size, shrink=True)
