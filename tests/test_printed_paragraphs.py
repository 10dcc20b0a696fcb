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
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate

from labels.document import paragraph, render_counted
from labels.tables import FLAG, MONO, SMALL, TINY, column_widths, grid_table
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

    shared, reference = _counted(paragraph), _counted(_reportlab_paragraph)
    assert page_texts(shared) == page_texts(reference)
    shared_pages, reference_pages = pages(shared, 150), pages(reference, 150)
    assert len(shared_pages) == len(reference_pages) > 2
    for number, (ours, theirs) in enumerate(zip(shared_pages, reference_pages, strict=True), start=1):
        assert ImageChops.difference(ours, theirs).getbbox() is None, f"page {number} differs"
