"""Labels for things the lab keeps, not products: a material lot or a piece of equipment.

One generic label, data in and PDF bytes out: a title ("MATERIAL LOT", "EQUIPMENT"), the
item's code in large type with a QR encoding exactly that code (scanned into a step's field,
as a container's QR is), and a few captioned lines (name, lot or serial number, expiry or
calibration due, status). It reuses the container labels' machinery: the text regions,
wrapping and shrinking of ``labels.layout`` (a word is never lost: what cannot fit raises
``LabelOverflow``), the vector QR of ``labels.qr`` and the embedded fonts of ``labels.text``.
The stock is a 4 x 2 inch thermal label; output is byte-reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO

from labels.data import check_aware
from labels.layout import EPSILON, MM, QR_STEP, Box, LabelLayout, LabelOverflow, _Area, _Field, _field, _region, _Style
from labels.pdf import _draw, _new_canvas
from labels.qr import check_qr_payload
from labels.text import MONO_BOLD, SANS, SANS_BOLD
from workflows.formatting import format_datetime

SIZE_MM = (101.6, 50.8)  # 4 x 2 in
MARGIN = 2.5 * MM
QR_INSET = 2 * MM
QR_MINIMUM = 15 * MM
GAP = 1.5 * MM
LEADING = 1.2
MAX_LINES = 8
MAX_TEXT = 200


@dataclass(frozen=True)
class ItemLine:
    """One captioned line: ``Serial no.: SN-4471`` (``bold`` for what must catch the eye: expiry, status)."""

    caption: str
    value: str
    bold: bool = False

    @property
    def text(self) -> str:
        return f"{self.caption}: {self.value}" if self.caption else self.value


@dataclass(frozen=True)
class ItemLabel:
    """What an item label prints. ``code`` is the item's canonical code, which the QR encodes as is."""

    title: str
    code: str
    name: str
    printed_at: datetime
    lines: Sequence[ItemLine] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check_qr_payload(self.code)
        check_aware("printed_at", self.printed_at)
        if not self.title.strip() or not self.name.strip():
            raise ValueError("An item label needs a title and a name.")
        if len(self.lines) > MAX_LINES:
            raise ValueError(f"An item label prints at most {MAX_LINES} lines, not {len(self.lines)}.")
        for text in (self.title, self.name, *(line.text for line in self.lines)):
            if len(text) > MAX_TEXT:
                raise ValueError(f"{text[:40]!r}... is longer than {MAX_TEXT} characters.")


def _fields(label: ItemLabel) -> tuple[list[_Field], list[_Field]]:
    """The header (title and code, full width) and the fields beside and below the QR."""
    header = [_field(label.title.upper(), _Style(SANS_BOLD, 11, 7)),
              _field(label.code, _Style(MONO_BOLD, 16, 9))]
    body = [_field(label.name, _Style(SANS_BOLD, 10, 6))]
    body += [_field(line.text, _Style(SANS_BOLD if line.bold else SANS, 8.5, 6)) for line in label.lines]
    body.append(_field(f"Printed {format_datetime(label.printed_at)}", _Style(SANS, 6.5, 5)))
    return header, body


def _layout(label: ItemLabel, qr_size: float, shrink: bool) -> LabelLayout:
    width, height = (side * MM for side in SIZE_MM)
    inner_width = width - 2 * MARGIN
    header_fields, body_fields = _fields(label)
    header = _region(header_fields, _Area.column(MARGIN, height - MARGIN, inner_width, height / 2), LEADING,
                     "header", shrink)
    qr = Box(QR_INSET, header[-1].box.y - GAP - qr_size, qr_size, qr_size)
    if qr.y < QR_INSET - EPSILON:
        raise LabelOverflow(f"A {qr_size / MM:.1f} mm QR does not fit below this label's header.")
    side_x = qr.x1 + GAP
    area = _Area(qr.y1, side_x, width - MARGIN - side_x, qr.y, MARGIN, inner_width, qr.y - GAP, MARGIN)
    body = _region(body_fields, area, LEADING, "text beside and below the QR", shrink)
    return LabelLayout(width, height, qr, header + body)


def layout_item_label(label: ItemLabel) -> LabelLayout:
    """The largest QR (whole QR_STEPs above 15 mm) that leaves every line at its full size; at the
    minimum QR the text shrinks instead. Raises LabelOverflow when it cannot fit even so."""
    best: LabelLayout | None = None
    size = QR_MINIMUM
    while True:
        try:
            best = _layout(label, size, shrink=False)
        except LabelOverflow:
            break
        size += QR_STEP
    return best if best is not None else _layout(label, QR_MINIMUM, shrink=True)


def render_item_label(label: ItemLabel) -> bytes:
    """A one-page PDF, the page exactly the 4 x 2 in label. Raises LabelOverflow if the text cannot fit."""
    layout = layout_item_label(label)
    buffer = BytesIO()
    canvas = _new_canvas(buffer, (layout.width, layout.height), f"{label.title} {label.code}")
    _draw(canvas, label, layout)  # type: ignore[arg-type]  # _draw reads only ``code`` from the label
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()
