"""Container labels as PDF: one label on a page of its stock's size, or sheets of labels to cut.

Output is byte-reproducible (``invariant``): the same data gives the same file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

from reportlab.lib.colors import black, white
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.pdfgen.canvas import Canvas

from labels.data import LabelData, Stock
from labels.layout import MM, Box, LabelLayout, layout_label
from labels.qr import draw_qr

PAPERS: dict[str, tuple[float, float]] = {"A4": A4, "Letter": LETTER}
SHEET_MARGIN = 2 * MM  # the labels' own margins keep ink further in
SHEET_GAP = 2 * MM
CUT_LINE_WIDTH = 0.25
CUT_LINE_GREY = 0.6


@dataclass(frozen=True)
class Placement:
    """Where label number ``index`` (of the sequence given) sits on a sheet: page (from 0) and box in points."""

    index: int
    page: int
    box: Box


def _new_canvas(buffer: BytesIO, size: tuple[float, float], title: str) -> Canvas:
    canvas = Canvas(buffer, pagesize=size, invariant=True, pageCompression=1)
    canvas.setTitle(title)
    canvas.setCreator("CellTrail")
    return canvas


def _draw(canvas: Canvas, label: LabelData, layout: LabelLayout) -> None:
    """Draw one label with its lower-left corner at the canvas origin."""
    draw_qr(canvas, label.code, layout.qr.x, layout.qr.y, layout.qr.width)
    for block in layout.blocks:
        canvas.saveState()
        if block.inverse:
            canvas.setFillColor(black)
            canvas.rect(block.box.x, block.box.y, block.box.width, block.box.height, stroke=0, fill=1)
            canvas.setFillColor(white)
        else:
            canvas.setFillColor(black)
        canvas.setFont(block.font, block.size)
        for line, baseline in zip(block.lines, block.baselines, strict=True):
            canvas.drawString(block.x, baseline, line)
        canvas.restoreState()


def render_label(label: LabelData) -> bytes:
    """A one-page PDF whose page is exactly the label's stock. Raises LabelOverflow if the text cannot fit."""
    layout = layout_label(label)
    buffer = BytesIO()
    canvas = _new_canvas(buffer, (layout.width, layout.height), f"Label {label.code}")
    _draw(canvas, label, layout)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def _paper(paper: str) -> tuple[float, float]:
    if paper not in PAPERS:
        raise ValueError(f"Unknown paper {paper!r}: use one of {', '.join(PAPERS)}.")
    return PAPERS[paper]


def layout_sheet(labels: Sequence[LabelData], paper: str = "A4") -> tuple[Placement, ...]:
    """Place labels at their true size in a grid, bag labels first, then tubes, each stock on pages of its own.

    Within a stock the labels keep the order given.
    """
    page_width, page_height = _paper(paper)
    placements = []
    page = 0
    for stock in (Stock.BAG, Stock.TUBE):
        indexes = [i for i, label in enumerate(labels) if label.stock is stock]
        if not indexes:
            continue
        width, height = (side * MM for side in stock.size_mm)
        columns = int((page_width - 2 * SHEET_MARGIN + SHEET_GAP) // (width + SHEET_GAP))
        rows = int((page_height - 2 * SHEET_MARGIN + SHEET_GAP) // (height + SHEET_GAP))
        left = (page_width - columns * width - (columns - 1) * SHEET_GAP) / 2
        top = (page_height + rows * height + (rows - 1) * SHEET_GAP) / 2
        for n, index in enumerate(indexes):
            row, column = divmod(n % (columns * rows), columns)
            box = Box(left + column * (width + SHEET_GAP), top - (row + 1) * height - row * SHEET_GAP, width, height)
            placements.append(Placement(index, page + n // (columns * rows), box))
        page = placements[-1].page + 1
    return tuple(placements)


def render_label_sheet(labels: Sequence[LabelData], paper: str = "A4") -> bytes:
    """A4 or Letter pages of labels at their true size, each inside a thin grey cut outline.

    Raises LabelOverflow if any label's text cannot fit, and ValueError for no labels or an unknown paper.
    """
    if not labels:
        raise ValueError("A label sheet needs at least one label.")
    layouts = [layout_label(label) for label in labels]
    placements = layout_sheet(labels, paper)
    buffer = BytesIO()
    canvas = _new_canvas(buffer, _paper(paper), "CellTrail labels")
    for page in range(placements[-1].page + 1):
        for placement in (p for p in placements if p.page == page):
            box = placement.box
            canvas.saveState()
            canvas.setStrokeGray(CUT_LINE_GREY)
            canvas.setLineWidth(CUT_LINE_WIDTH)
            canvas.rect(box.x, box.y, box.width, box.height, stroke=1, fill=0)
            canvas.translate(box.x, box.y)
            _draw(canvas, labels[placement.index], layouts[placement.index])
            canvas.restoreState()
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()
