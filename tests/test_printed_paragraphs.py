"""The printed records' paragraphs (labels.document.paragraph) skip reportlab's markup parser for
plain text, break their lines once per width and draw plain lines directly: what they print
must stay exactly what reportlab's own Paragraph of the escaped text prints.

Pure: no app or database.
"""

from __future__ import annotations

from io import BytesIO
from xml.sax.saxutils import escape

import pytest
from PIL import ImageChops
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Table

from labels.document import _MemoCanvas, paragraph, render_counted, table_text
from labels.tables import BODY, FLAG, MONO, SMALL, TINY, column_widths, fact_table, grid_table
from labels.text import MONO_BOLD, SANS, SANS_BOLD
from tests.readback import page_texts, pages

TEXTS = [
    "in limit",
    "—",
    "Store at ≤ −150 °C, IFN-γ and TNF-α",
    "a & b < c > d",  # markup characters: the parser's path
    "Viable cells\n(material lot)",  # a line break
    "new: entry_id=75; field_key=collection_end; id=492; out_of_limit=false; recorded_at=2026-12-01T05:07:17",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",  # one word wider than its column
    "Correction 1: changed to 1.2 × 10⁸ cells by Alex Rivera at 2026-11-20 11:00 UTC. Reason: transcription " * 8,
]
STYLES = [SMALL, TINY, FLAG, MONO]


def _reportlab_paragraph(text: str, style) -> Paragraph:
    """What labels.document.paragraph made before it was made fast: the escaped lines joined by <br/>."""
    return Paragraph("<br/>".join(escape(" ".join(line.split())) for line in text.splitlines()), style)


def _pdf(make) -> bytes:
    """A table of every text in every style, long enough to split across pages, made by ``make``."""
    rows: list[list[Flowable]] = [[make(text, style) for style in STYLES] for _ in range(6) for text in TEXTS]
    buffer = BytesIO()
    SimpleDocTemplate(buffer, pagesize=A4, invariant=True).build(
        [make(text, SMALL) for text in TEXTS]
        + [grid_table(("Small", "Tiny", "Flag", "Mono"), rows, column_widths(30, 20, 25, 25))])
    return buffer.getvalue()


def test_paragraphs_print_what_reportlab_paragraphs_print():
    fast, reference = _pdf(paragraph), _pdf(_reportlab_paragraph)
    assert page_texts(fast) == page_texts(reference)
    fast_pages, reference_pages = pages(fast, 150), pages(reference, 150)
    assert len(fast_pages) == len(reference_pages) > 2  # the table splits across pages
    for number, (ours, theirs) in enumerate(zip(fast_pages, reference_pages, strict=True), start=1):
        assert ImageChops.difference(ours, theirs).getbbox() is None, f"page {number} differs"


@pytest.mark.parametrize("width", [40.0, 120.0, 400.0])
def test_a_paragraph_wrapped_again_at_another_width_is_measured_again(width):
    text = TEXTS[-1]
    ours, theirs = paragraph(text, SMALL), _reportlab_paragraph(text, SMALL)
    assert ours.wrap(500, 800) == theirs.wrap(500, 800)
    assert ours.wrap(width, 800) == theirs.wrap(width, 800)
    assert ours.wrap(width, 800) == theirs.wrap(width, 800)  # remembered


def _counted(make) -> bytes:
    """The table of _pdf as a printed record builds it (render_counted), each cell made by ``make``."""
    def story() -> list[Flowable]:
        rows = [[make(text, style) for style in STYLES] for _ in range(6) for text in TEXTS]
        return [*(make(text, SMALL) for text in TEXTS),
                grid_table(("Small", "Tiny", "Flag", "Mono"), rows, column_widths(30, 20, 25, 25))]
    return render_counted(story, lambda canvas, page, total: None, title="Shared", author="Test")


def test_a_text_repeated_in_a_record_is_one_paragraph_printed_in_each_place():
    """Inside a record's story a text asked for again in one style is the same paragraph (made and
    broken into lines once); it prints in every cell it stands in, as distinct paragraphs would,
    across page breaks and rows split between pages."""
    shared_objects: list[bool] = []

    def story() -> list[Flowable]:
        shared_objects.append(paragraph("in limit", SMALL) is paragraph("in limit", SMALL))
        shared_objects.append(paragraph("in limit", SMALL) is paragraph("in limit", TINY))
        return [paragraph("in limit", SMALL)]

    render_counted(story, lambda canvas, page, total: None, title="Shared", author="Test")
    assert shared_objects == [True, False]
    assert paragraph("in limit", SMALL) is not paragraph("in limit", SMALL)  # outside a story: each its own

    assert_prints_alike(_counted(paragraph), _counted(_reportlab_paragraph))


def assert_prints_alike(ours: bytes, reference: bytes) -> None:
    """The two PDFs have the same text and more than two pages, each the same pixel for pixel."""
    assert page_texts(ours) == page_texts(reference)
    our_pages, reference_pages = pages(ours, 150), pages(reference, 150)
    assert len(our_pages) == len(reference_pages) > 2
    for number, (mine, theirs) in enumerate(zip(our_pages, reference_pages, strict=True), start=1):
        assert ImageChops.difference(mine, theirs).getbbox() is None, f"page {number} differs"


def test_a_cell_of_one_plain_line_that_fits_is_drawn_as_a_string():
    """A table draws a string where a paragraph of one line prints; anything else stays as it was."""
    assert table_text(paragraph("in limit", SMALL), SMALL, 100) == "in limit"
    assert table_text([paragraph("in limit", SMALL)], SMALL, 100) == "in limit"  # a cell of one paragraph
    wraps = paragraph(TEXTS[-1], SMALL)
    assert table_text(wraps, SMALL, 100) is wraps  # wider than its column: wraps as a paragraph
    one_word = paragraph(TEXTS[-2], SMALL)
    assert table_text(one_word, SMALL, 100) is one_word  # one word wider than its column: broken as Paragraph breaks it
    for kept in (paragraph("in limit", TINY), paragraph("a & b < c > d", SMALL), paragraph(TEXTS[4], SMALL),
                 [paragraph("in limit", SMALL), paragraph("—", SMALL)]):
        assert table_text(kept, SMALL, 100) is kept  # another style than the table's, markup, two lines, two paragraphs


def _tables(make) -> bytes:
    """A grid table of tiny text and a fact table, long enough to split across pages, their cells made by ``make``."""
    rows = [[make(text, TINY), make(text, TINY), [make(text, TINY)], make(text, FLAG)] for _ in range(8) for text in TEXTS]
    facts = [(f"Name {number}", make(text, BODY)) for number, text in enumerate(TEXTS * 3)]
    buffer = BytesIO()
    SimpleDocTemplate(buffer, pagesize=A4, invariant=True).build(
        [grid_table(("Tiny", "Tiny", "In a list", "Flag"), rows, column_widths(30, 20, 25, 25), text=TINY),
         fact_table(facts)])
    return buffer.getvalue()


def test_cells_drawn_as_strings_print_what_paragraphs_print():
    """One-line cells of our paragraphs are drawn as strings (table_text); reportlab's own
    paragraphs never are: both print the same, pixel for pixel, across page breaks."""
    assert_prints_alike(_tables(paragraph), _tables(_reportlab_paragraph))


def test_a_text_written_again_is_written_as_the_first_time():
    """The record's canvas writes a text it wrote before from memory: the PDF is byte for byte the
    canvas' own, across fonts, sizes and more characters than one font subset holds (256)."""
    many = "".join(chr(code) for code in [*range(0x391, 0x3A2), *range(0x3A3, 0x3CA), *range(0x410, 0x450),
                                          *range(0x100, 0x180), *range(0x21, 0x7F)])
    texts = ["in limit", many[:120], many[100:260], many[240:], "Demo data", "in limit", many[:120]] * 3

    def pdf(canvas_class: type[Canvas]) -> bytes:
        buffer = BytesIO()
        canvas = canvas_class(buffer, pagesize=A4, invariant=1)
        for page in range(2):
            for number, text in enumerate(texts):
                canvas.setFont((SANS, SANS_BOLD, MONO_BOLD)[number % 3], 6 + page)
                canvas.drawString(20, 800 - 20 * number, text)
            lines = canvas.beginText(20, 300)  # lines after lines: each starts in the subset the last left
            lines.setFont(SANS, 7)
            for text in texts:
                lines.textLine(text)
            canvas.drawText(lines)
            canvas.showPage()
        canvas.save()
        return buffer.getvalue()

    assert pdf(_MemoCanvas) == pdf(Canvas)


def test_paragraphs_among_strings_in_a_standard_font_print_what_reportlab_paragraphs_print():
    """A paragraph drawn without a saved graphics state leaves its font set: a table's string in
    reportlab's standard font after it (the font set once for the table) must still print in that font."""
    def pdf(make) -> bytes:
        rows = [[text[:20], make(text, SMALL), "standard font", [make(text, TINY), make("in limit", SMALL)]]
                for text in TEXTS * 4]
        buffer = BytesIO()
        SimpleDocTemplate(buffer, pagesize=A4, invariant=True).build([Table(rows, colWidths=column_widths(30, 30, 20, 20))])
        return buffer.getvalue()

    fast, reference = pdf(paragraph), pdf(_reportlab_paragraph)
    assert page_texts(fast) == page_texts(reference)
    for number, (ours, theirs) in enumerate(zip(pages(fast, 150), pages(reference, 150), strict=True), start=1):
        assert ImageChops.difference(ours, theirs).getbbox() is None, f"page {number} differs"
