"""The text styles, tables and signature lines the printed records share (the executed batch
record, the chain-of-identity report, the validation report): one look, drawn one way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, Paragraph, Table, TableStyle
from reportlab.platypus.tables import CellStyle

from labels.document import TEXT_WIDTH, Cell, paragraph, table_text
from labels.layout import MM
from labels.record_data import Signed
from labels.text import MONO_BOLD, SANS, SANS_BOLD
from workflows.formatting import format_utc

BODY = ParagraphStyle("printed-body", fontName=SANS, fontSize=8.5, leading=10.5)
SMALL = ParagraphStyle("printed-small", parent=BODY, fontSize=7.5, leading=9)
SMALL_BOLD = ParagraphStyle("printed-small-bold", parent=SMALL, fontName=SANS_BOLD)
TINY = ParagraphStyle("printed-tiny", parent=BODY, fontSize=6.5, leading=7.8)
LABEL = ParagraphStyle("printed-label", parent=BODY, fontName=SANS_BOLD)
MONO = ParagraphStyle("printed-mono", parent=BODY, fontName=MONO_BOLD, fontSize=7, leading=9)
TITLE = ParagraphStyle("printed-title", parent=BODY, fontName=SANS_BOLD, fontSize=16, leading=20, spaceAfter=2)
HEADING = ParagraphStyle("printed-heading", parent=BODY, fontName=SANS_BOLD, fontSize=12, leading=15,
                         spaceBefore=10, spaceAfter=4, keepWithNext=1)
SUBHEADING = ParagraphStyle("printed-subheading", parent=HEADING, fontSize=10, leading=13, spaceBefore=6, spaceAfter=2)
ENTRY = ParagraphStyle("printed-entry", parent=HEADING, fontSize=8.5, leading=10.5, spaceBefore=4, spaceAfter=2)
FLAG = ParagraphStyle("printed-flag", parent=SMALL_BOLD, textColor=colors.Color(0.6, 0, 0))
LINE = ParagraphStyle("printed-line", parent=SMALL, spaceBefore=1)
#: A grid table's cell padding left and right.
GRID_PADDING = 2.5
#: reportlab's cell padding, a fact table's but left of its names.
CELL_PADDING = 6
FLAGGED_ROW = colors.Color(1, 0.88, 0.88)
HEADER_ROW = colors.Color(0.9, 0.9, 0.9)


def para(text: str, style: ParagraphStyle = BODY) -> Paragraph:
    return paragraph(text, style)


def column_widths(*shares: float) -> tuple[float, ...]:
    """The text width shared out in proportion to ``shares``."""
    return tuple(TEXT_WIDTH * share / sum(shares) for share in shares)


def grid_table(header: Sequence[str], rows: Sequence[Sequence[Cell]], widths: Sequence[float],
           *, flagged: Iterable[int] = (), text: ParagraphStyle = SMALL) -> Table:
    """A gridded table with a repeated header row; ``flagged`` rows (0 = first data row) are tinted.
    Cells that are one line of ``text`` (the header's: SMALL_BOLD) are drawn as strings (``table_text``)."""
    style = [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), HEADER_ROW),
        *(("BACKGROUND", (0, row + 1), (-1, row + 1), FLAGGED_ROW) for row in flagged),
    ]
    inner = [width - 2 * GRID_PADDING for width in widths]
    head = [table_text(para(title, SMALL_BOLD), SMALL_BOLD, width) for title, width in zip(header, inner, strict=True)]
    body = [[table_text(cell, text, width) for cell, width in zip(row, inner, strict=True)] for row in rows]
    head_cell, body_cell = (_cell_style(style, left=GRID_PADDING, right=GRID_PADDING) for style in (SMALL_BOLD, text))
    return Table([head, *body], colWidths=widths, repeatRows=1, splitInRow=1, style=TableStyle(style),
                 cellStyles=[[head_cell] * len(widths), *([body_cell] * len(widths) for _ in body)])


def _cell_style(text: ParagraphStyle, *, left: float, right: float, vertical: float = 3) -> CellStyle:
    """How a table lays a cell out: at the top, inside ``left``, ``right`` and ``vertical`` (top and
    bottom) padding, a string in it drawn as ``text``'s paragraph (``table_text``).

    One object for all cells alike: unless given ``cellStyles``, a table makes a style for each
    cell and applies each style command to each, for each of a record's thousands of cells.
    Nothing changes a cell's style afterwards (but a row split between pages in a middle-aligned
    or spanned cell)."""
    style = CellStyle(text.name)
    style.valign = "TOP"
    style.leftPadding, style.rightPadding, style.topPadding, style.bottomPadding = left, right, vertical, vertical
    style.fontname, style.fontsize, style.leading, style.color = text.fontName, text.fontSize, text.leading, text.textColor
    return style


def fact_table(rows: Sequence[tuple[str, str | Flowable]], width: float = TEXT_WIDTH, *,
               label_width: float = 34 * MM) -> Table:
    """Name / value pairs without a grid; empty values are left out. Names and values of one line
    are drawn as strings (``table_text``)."""
    value_width = width - label_width
    cells = [[table_text(para(name, LABEL), LABEL, label_width - CELL_PADDING),
              table_text(para(value), BODY, value_width - 2 * CELL_PADDING) if isinstance(value, str) else value]
             for name, value in rows if value]
    name_cell = _cell_style(LABEL, left=0, right=CELL_PADDING, vertical=1)
    value_cell = _cell_style(BODY, left=CELL_PADDING, right=CELL_PADDING, vertical=1)
    return Table(cells, colWidths=(label_width, value_width), cellStyles=[[name_cell, value_cell] for _ in cells],
                 hAlign="LEFT")


def done_by(name: str | None, moment: datetime | None) -> str:
    """"<name> at <UTC time>", or "" when either is missing."""
    return f"{name} at {format_utc(moment)}" if name and moment else ""


def signature_line(signature: Signed) -> str:
    """A signature as every printed record writes it (21 CFR 11.50): name, meaning, time, and
    whether the record still matches what was signed."""
    status = "valid" if signature.valid else "INVALIDATED: the record changed after it was signed"
    return (f"Signed by {signature.printed_name} — meaning: {signature.meaning} — {format_utc(signature.signed_at)}"
            f" — {status}")


def signature_paragraphs(signatures: Sequence[Signed], none: str = "Not signed.") -> list[Flowable]:
    if not signatures:
        return [para(none, LINE)]
    return [para(signature_line(s), LINE if s.valid else FLAG) for s in signatures]
