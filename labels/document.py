"""What the A4 documents (certificate of analysis, batch record) share: margins, user text
as paragraphs, the vector QR flowable, and the footers that say "Page X of Y"."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate

from labels.layout import MM
from labels.qr import draw_qr
from labels.text import clean

PAGE_MARGIN = 18 * MM
FRAME_PADDING = 6  # platypus' default inside the page margins
TEXT_WIDTH = A4[0] - 2 * (PAGE_MARGIN + FRAME_PADDING)
LEFT = PAGE_MARGIN + FRAME_PADDING
RIGHT = A4[0] - PAGE_MARGIN - FRAME_PADDING

#: Draws one page's footer: (canvas, page number, page count).
Footer = Callable[[Canvas, int, int], None]


def digest_footer(digest_line: str, issued: str, *, font: str, size: float) -> Footer:
    """The footer of a verifiable document: ``digest_line`` (the digest it can be checked by) and
    "Page X of Y" on the first line, ``issued`` (what it is, who downloaded it when) below."""

    def draw(canvas: Canvas, page: int, total: int) -> None:
        canvas.setFont(font, size)
        y = PAGE_MARGIN / 2 + size * 1.4
        canvas.drawString(LEFT, y, digest_line)
        canvas.drawRightString(RIGHT, y, f"Page {page} of {total}")
        canvas.drawString(LEFT, y - size * 1.4, issued)

    return draw


class QrFlowable(Flowable):
    """A vector QR of ``payload``, ``size`` points square with its quiet zone."""

    def __init__(self, payload: str, size: float) -> None:
        super().__init__()
        self.payload = payload
        self.size = size

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.size, self.size

    def draw(self) -> None:
        draw_qr(self.canv, self.payload, 0, 0, self.size)


def paragraph(text: str, style: ParagraphStyle) -> Paragraph:
    """A paragraph of user text: escaped (Paragraph parses markup), line breaks kept.
    Raises UnprintableText for characters the font lacks."""
    lines = [escape(clean(line, style.fontName)) for line in text.splitlines()]
    return Paragraph("<br/>".join(lines), style)


def _footed_canvas(footer: Footer) -> type[Canvas]:
    """A canvas that keeps each finished page until the document is saved, then draws every
    footer knowing the page count: "Page X of Y" in one build instead of two."""

    class FootedCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._finished: list[dict[str, Any]] = []

        def showPage(self) -> None:
            self._finished.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._finished)
            for number, page in enumerate(self._finished, start=1):
                self.__dict__.update(page)
                self.saveState()
                footer(self, number, total)
                self.restoreState()
                super().showPage()
            super().save()

    return FootedCanvas


def render_counted(story: Callable[[], list[Flowable]], footer: Footer, *, title: str, author: str,
                   bottom_margin: float = PAGE_MARGIN) -> bytes:
    """An A4 PDF of ``story`` whose every footer can say "Page X of Y" (``_footed_canvas``).
    Byte-reproducible (``invariant``)."""
    buffer = BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=PAGE_MARGIN,
        rightMargin=PAGE_MARGIN,
        topMargin=PAGE_MARGIN,
        bottomMargin=bottom_margin,
        title=title,
        author=author,
        creator="CellTrail",
        invariant=True,
    )
    doc.build(story(), canvasmaker=_footed_canvas(footer))
    return buffer.getvalue()
