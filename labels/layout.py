"""Where everything goes on a label: the QR's box and each text block, in points.

Text is laid out in regions that never meet the QR's box (quiet zone included) and stay
inside the label's margin. Each region's text is wrapped at word boundaries and shrunk
together, step by step, down to each style's minimum size; what still does not fit raises
``LabelOverflow``: a label never loses a word. The PDF and ZPL renderers draw this layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reportlab.pdfbase.pdfmetrics import stringWidth

from labels.data import LabelData, Stock
from labels.text import MONO_BOLD, SANS, SANS_BOLD, clean
from workflows.formatting import format_date, format_datetime

MM = 72 / 25.4

# QR box sizes, quiet zone included (DESIGN.md: at least 15 mm on bags, 12 mm on tubes).
QR_TARGET = {Stock.BAG: 25 * MM, Stock.TUBE: 13 * MM}
QR_MINIMUM = {Stock.BAG: 15 * MM, Stock.TUBE: 12 * MM}
MARGIN = {Stock.BAG: 3 * MM, Stock.TUBE: 1 * MM}
# The QR may sit closer to the edge than text: its quiet zone is blank paper anyway.
QR_INSET = {Stock.BAG: 3 * MM, Stock.TUBE: 0.5 * MM}
GAP = {Stock.BAG: 1.5 * MM, Stock.TUBE: 0.4 * MM}
LEADING = {Stock.BAG: 1.2, Stock.TUBE: 1.15}
SHRINK_STEP = 0.02
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


@dataclass(frozen=True)
class _Field:
    text: str
    style: _Style


def _wrap(text: str, font: str, size: float, width: float) -> list[str] | None:
    """Greedy word wrap; None when one word alone is wider than ``width``."""
    lines: list[str] = []
    for word in text.split(" "):
        if stringWidth(word, font, size) > width + EPSILON:
            return None
        if lines and stringWidth(f"{lines[-1]} {word}", font, size) <= width + EPSILON:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _padding(style: _Style, size: float) -> float:
    return 0.3 * size if style.inverse else 0.0


def _try_fit(
    fields: Sequence[_Field], sizes: Sequence[float], width: float, height: float, leading: float
) -> list[list[str]] | None:
    wrapped = []
    used = 0.0
    for field, size in zip(fields, sizes, strict=True):
        lines = _wrap(field.text, field.style.font, size, width - 2 * _padding(field.style, size))
        if lines is None:
            return None
        wrapped.append(lines)
        used += len(lines) * size * leading
    return wrapped if used <= height + EPSILON else None


def _overflow_message(fields: Sequence[_Field], width: float, height: float, leading: float) -> str:
    for field in fields:
        size = field.style.minimum
        for word in field.text.split(" "):
            if stringWidth(word, field.style.font, size) > width - 2 * _padding(field.style, size) + EPSILON:
                return f"{word!r} is wider than the label's text area even at {size:g} pt"
    needed = 0.0
    for field in fields:
        size = field.style.minimum
        lines = _wrap(field.text, field.style.font, size, width - 2 * _padding(field.style, size)) or []
        needed += len(lines) * size * leading
    return f"its text needs {needed / MM:.1f} mm of height at the smallest font size, and {height / MM:.1f} mm is left"


def _region(
    fields: Sequence[_Field], x: float, top: float, width: float, height: float, leading: float, where: str
) -> tuple[TextBlock, ...]:
    """Lay ``fields`` out from ``top`` down, shrinking all of them together until they fit ``height``."""
    scale = 1.0
    while True:
        sizes = [max(field.style.minimum, round(field.style.size * scale, 1)) for field in fields]
        wrapped = _try_fit(fields, sizes, width, height, leading)
        if wrapped is not None:
            break
        if all(size <= field.style.minimum for size, field in zip(sizes, fields, strict=True)):
            raise LabelOverflow(
                f"The {where} of this label does not fit: {_overflow_message(fields, width, height, leading)}."
            )
        scale -= SHRINK_STEP
    blocks = []
    for field, size, lines in zip(fields, sizes, wrapped, strict=True):
        slot = size * leading
        # Centre the em box (0.76 above, 0.24 below the baseline) in each line's slot.
        baselines = tuple(top - i * slot - (slot - size) / 2 - 0.76 * size for i in range(len(lines)))
        box = Box(x, top - len(lines) * slot, width, len(lines) * slot)
        pad = _padding(field.style, size)
        blocks.append(
            TextBlock(field.text, tuple(lines), field.style.font, size, x + pad, baselines, box, field.style.inverse)
        )
        top = box.y
    return tuple(blocks)


def _field(text: str, style: _Style) -> _Field:
    return _Field(clean(text, style.font), style)


def _dates_line(label: LabelData) -> str | None:
    parts = []
    if label.collected_on:
        parts.append(f"Collected {format_date(label.collected_on)}")
    if label.filled_on:
        parts.append(f"Filled {format_date(label.filled_on)}")
    return " · ".join(parts) or None


def _patient_line(label: LabelData) -> str | None:
    parts = []
    if label.patient_ref:
        parts.append(f"Patient {label.patient_ref}")
    if label.patient_initials:
        parts.append(f"Initials {label.patient_initials}")
    if label.patient_dob:
        parts.append(f"DOB {format_date(label.patient_dob)}")
    return " · ".join(parts) or None


def _bag_fields(label: LabelData) -> tuple[list[_Field], list[_Field], list[_Field]]:
    """Header (full width), side (right of the QR) and bottom (full width, below the QR) fields."""
    minimum = 6.0
    header = []
    if label.reprint:
        header.append(_field("REPRINT", _Style(SANS_BOLD, 16, 8, inverse=True)))
        if label.copy_note:
            header.append(_field(label.copy_note, _Style(SANS, 8, minimum)))
    header.append(_field(label.kind, _Style(SANS_BOLD, 14, 8)))

    side = [
        _field(label.code, _Style(MONO_BOLD, 15, 9)),
        _field(f"COI {label.coi}", _Style(SANS, 9, minimum)),
        _field(f"Batch {label.batch_number}", _Style(SANS, 9, minimum)),
    ]
    if label.bag_number is not None:
        side.append(_field(f"Bag {label.bag_number} of {label.bag_count}", _Style(SANS_BOLD, 11, minimum)))
    if label.volume_ml is not None:
        side.append(_field(f"Volume {label.volume_ml.normalize():f} mL", _Style(SANS, 9, minimum)))

    regular = _Style(SANS, 8.5, minimum)
    small = _Style(SANS, 7, minimum)
    bold = _Style(SANS_BOLD, 10, minimum)
    texts: list[tuple[str | None, _Style]] = [
        (label.product, _Style(SANS_BOLD, 11, minimum)),
        (_patient_line(label), regular),
        (_dates_line(label), regular),
        (f"Expires {format_date(label.expires_on)}" if label.expires_on else None, bold),
        (label.storage, bold),
        *((line, bold) for line in label.regulatory_lines),
        (label.facility_name, small),
        *((line, small) for line in label.facility_address),
        (f"Printed {format_datetime(label.printed_at)}", small),
    ]
    bottom = [_field(text, style) for text, style in texts if text and text.strip()]
    return header, side, bottom


def _tube_fields(label: LabelData) -> tuple[list[_Field], list[_Field]]:
    """Header (the code, full width) and side (right of the QR) fields: the essentials only."""
    minimum = 5.0
    side = []
    if label.reprint:
        side.append(_field("REPRINT", _Style(SANS_BOLD, 6.5, minimum, inverse=True)))
    side += [
        _field(label.kind, _Style(SANS_BOLD, 6.5, minimum)),
        _field(label.coi, _Style(SANS, 6, minimum)),
        _field(label.batch_number, _Style(SANS, 6, minimum)),
    ]
    if label.filled_on:
        side.append(_field(f"Filled {format_date(label.filled_on)}", _Style(SANS, 6, minimum)))
    elif label.collected_on:
        side.append(_field(f"Collected {format_date(label.collected_on)}", _Style(SANS, 6, minimum)))
    if label.expires_on:
        side.append(_field(f"Exp {format_date(label.expires_on)}", _Style(SANS_BOLD, 6, minimum)))
    return [_field(label.code, _Style(MONO_BOLD, 9, minimum))], side


def layout_label(label: LabelData, qr_size: float | None = None) -> LabelLayout:
    """Lay ``label`` out on its stock; ``qr_size`` (points, quiet zone included) overrides the stock's default.

    Raises LabelOverflow when the text cannot fit, and ValueError for a QR below the stock's minimum.
    """
    stock = label.stock
    width, height = (side * MM for side in stock.size_mm)
    qr_size = QR_TARGET[stock] if qr_size is None else qr_size
    if qr_size < QR_MINIMUM[stock] - EPSILON:
        raise ValueError(f"A {stock} label's QR must be at least {QR_MINIMUM[stock] / MM:.0f} mm.")
    margin, gap, leading, inset = MARGIN[stock], GAP[stock], LEADING[stock], QR_INSET[stock]
    inner_width = width - 2 * margin
    top = height - margin

    if stock is Stock.BAG:
        header_fields, side_fields, bottom_fields = _bag_fields(label)
        header = _region(header_fields, margin, top, inner_width, height / 4, leading, "header")
        qr = Box(inset, header[-1].box.y - gap - qr_size, qr_size, qr_size)
        side_x = qr.x1 + gap
        side = _region(side_fields, side_x, qr.y1, width - margin - side_x, qr_size, leading, "text beside the QR")
        bottom = _region(
            bottom_fields, margin, qr.y - gap, inner_width, qr.y - gap - margin, leading, "text below the QR"
        )
        return LabelLayout(width, height, qr, header + side + bottom)

    header_fields, side_fields = _tube_fields(label)
    qr = Box(inset, inset, qr_size, qr_size)
    header = _region(header_fields, margin, top, inner_width, top - qr.y1 - gap, leading, "code line")
    side_x = qr.x1 + gap
    side_top = header[-1].box.y - gap
    side = _region(
        side_fields, side_x, side_top, width - margin - side_x, side_top - margin, leading, "text beside the QR"
    )
    return LabelLayout(width, height, qr, header + side)
