"""What the A4 documents (certificate of analysis, batch record) share: margins, user text
as paragraphs, the vector QR flowable, and the footers that say "Page X of Y"."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from functools import cache
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib.colors import Color
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase.pdfmetrics import getFont, stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.pdfgen.textobject import PDFTextObject
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate
from reportlab.platypus.paragraph import _leftDrawParaLine
from reportlab.platypus.paraparser import ParaFrag

from labels.layout import MM
from labels.qr import draw_qr
from labels.text import clean

PAGE_MARGIN = 18 * MM
FRAME_PADDING = 6  # platypus' default inside the page margins
TEXT_WIDTH = A4[0] - 2 * (PAGE_MARGIN + FRAME_PADDING)
LEFT = PAGE_MARGIN + FRAME_PADDING
RIGHT = A4[0] - PAGE_MARGIN - FRAME_PADDING
#: What escape() changes: a line holding none of them is plain text to Paragraph's parser too.
MARKUP = frozenset("&<>")

#: Draws one page's footer: (canvas, page number, page count).
Footer = Callable[[Canvas, int, int], None]
#: What a table cell holds: a string (drawn in the table's font for the cell), a flowable, or flowables stacked.
Cell = str | Flowable | list[Flowable]
#: How far inside its width a line is taken to fit without asking Paragraph: more than the rounding
#: of a sum of glyph widths, far less than anything seen on paper.
_FIT_MARGIN = 1e-6


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


class _Paragraph(Paragraph):
    """A Paragraph that breaks its lines once per width, and draws plain text with one text object.

    A table asks each cell for its size several times (column sizing, row heights, each split
    across pages, drawing), always at the column's width, and every wrap measured every word
    again: most of a long record's time. The lines depend on the width alone.
    """

    line: str | None = None  # the text, when the paragraph is one plain line (``_plain``)
    _wrapped: tuple[float, tuple[float, float]] | None = None  # the last width wrapped at, and the size

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        size = self._size_at(available_width)
        if size is None:
            size = super().wrap(available_width, available_height)
            self._wrapped = available_width, size
        return size

    def wrapOn(self, canv: Canvas, available_width: float, available_height: float) -> tuple[float, float]:
        """The size at a width wrapped at before, without lending the paragraph the canvas first."""
        return self._size_at(available_width) or super().wrapOn(canv, available_width, available_height)

    def _size_at(self, width: float) -> tuple[float, float] | None:
        """The size wrapped at ``width`` when that was the last width (and split() kept the lines)."""
        if self._wrapped is None or self._wrapped[0] != width or not hasattr(self, "blPara"):
            return None
        return self._wrapped[1]

    def drawOn(self, canvas: Canvas, x: float, y: float, _sW: float = 0) -> None:
        """Lines of one font and colour (``blPara.kind`` 0) drawn where Paragraph draws them (first
        baseline one font size below the top, left-aligned), without its two saved graphics states,
        translation and per-paragraph set-up for each of a record's thousands of cells; without a
        saved state at all where the text changes nothing the canvas relies on (``_leaves_as_is``)."""
        lines = self.blPara
        if lines.kind != 0 or not _plain_style(self.style) or self.bulletText:
            super().drawOn(canvas, x, y, _sW)
            return
        saved = not _leaves_as_is(canvas, lines.textColor)
        if saved:
            canvas.saveState()
            canvas.setFillColor(lines.textColor)
        text = canvas.beginText(self._hAlignAdjust(x, _sW), y + self.height - lines.fontSize)
        text.setFont(lines.fontName, lines.fontSize, self.style.leading)
        for extra_space, words in lines.lines:
            _leftDrawParaLine(text, 0, extra_space, words)  # spaces shrunk as Paragraph does (spaceShrinkage)
        canvas.drawText(text)
        if saved:
            canvas.restoreState()


def _leaves_as_is(canvas: Canvas, colour: Color) -> bool:
    """Whether text in ``colour`` leaves ``canvas`` as later drawing expects it without a saved
    graphics state: the colour is the canvas' already, and so is an embedded (TrueType) font. The
    text's font stays set after it, but a later text in an embedded font sets its own, and one in
    a standard font, which would use the font set last, has to be preceded by the canvas setting
    it (the canvas' font is an embedded one now), which writes it out."""
    return bool(canvas._fillColorObj == colour and getFont(canvas._fontname)._dynamicFont)


@cache
def _plain_style(style: ParagraphStyle) -> bool:
    """Whether ``style`` draws nothing but left-aligned lines: no indent, background, border or leading rule."""
    return (style.alignment == TA_LEFT and not (style.leftIndent or style.firstLineIndent or style.backColor
                                                or style.borderWidth or getattr(style, "autoLeading", "") not in ("", "off")))


@cache
def _fragment(style: ParagraphStyle) -> ParaFrag:
    """What Paragraph's markup parser makes of one plain word in ``style``: the fragment a line
    of plain text becomes, but for its text."""
    fragment: ParaFrag = Paragraph("x", style).frags[0]
    return fragment


def _plain(line: str, style: ParagraphStyle) -> Paragraph:
    """The paragraph of one line free of markup characters, built as the parser would build it
    (one fragment) without running the parser, the other half of a record's time."""
    made = _Paragraph(line, style, frags=[_fragment(style).clone(text=line, link=[], us_lines=[])])
    made.line = line
    return made


def table_text(cell: Cell, style: ParagraphStyle, width: float) -> Cell:
    """``cell`` as a string when it is a paragraph (alone) of one plain line in ``style`` that
    fits ``width``, the cell's width inside its padding; otherwise ``cell``.

    A table sizes a string by its line count and draws it with one call, its baseline one font
    size below the cell's top padding: where the paragraph's line would be. In a table whose font
    for the cell is ``style``'s (font, size, leading, colour) it prints as the paragraph does,
    without a paragraph's sizing and drawing, half of a record's cells. A text that wraps stays a
    paragraph: a row split between pages splits a string's lines by other rules (orphans allowed).
    """
    single = cell[0] if isinstance(cell, list) and len(cell) == 1 else cell
    if (isinstance(single, _Paragraph) and single.line is not None and single.style is style
            and _plain_style(style) and stringWidth(single.line, style.fontName, style.fontSize) <= width - _FIT_MARGIN):
        return single.line
    return cell


def paragraph(text: str, style: ParagraphStyle) -> Paragraph:
    """A paragraph of user text: escaped (Paragraph parses markup), line breaks kept.
    Raises UnprintableText for characters the font lacks.

    While :func:`render_counted` builds a document's story, a text asked for again in the same
    style is the paragraph made the first time: half of a record's cells repeat one (a user, an
    action, a time), and each was built and broken into lines again."""
    shared = _SHARED.get()
    if shared is not None and (found := shared.get((text, style))) is not None:
        return found
    lines = [clean(line, style.fontName) for line in text.splitlines()]
    if len(lines) == 1 and lines[0] and not MARKUP & set(lines[0]):
        made = _plain(lines[0], style)
    else:
        made = _Paragraph("<br/>".join(escape(line) for line in lines), style)
    if shared is not None:
        shared[(text, style)] = made
    return made


#: The paragraphs of the story being built, by text and style (``paragraph``). A paragraph holds
#: no state of its own place on a page (a table asks it for its size at a width, and draws it
#: where it says), so one object may stand in several cells.
_SHARED: ContextVar[dict[tuple[str, ParagraphStyle], Paragraph] | None] = ContextVar("shared_paragraphs",
                                                                                    default=None)


class _RepeatedText(PDFTextObject):
    """A text object that writes a text its canvas wrote before, in the same font, size, leading
    and font subset, as it was written then (``_formatText``: the text encoded glyph by glyph into
    the embedded font's subsets, a sixth of a record's time).

    A record writes the same texts again and again (a user, an action, a date); once a text's
    characters have their codes in the document's subsets, encoding it again gives the same
    operators and leaves the text object in the same subset.
    """

    _canvas: _MemoCanvas

    def _formatText(self, text: str) -> str:
        key = (text, self._fontname, self._fontsize, self._leading, self._curSubset)
        written = self._canvas.written.get(key)
        if written is None:
            written = self._canvas.written[key] = super()._formatText(text), self._curSubset
        else:
            self._curSubset = written[1]
        return written[0]


class _MemoCanvas(Canvas):
    """A canvas whose text objects remember what they wrote (``_RepeatedText``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (text, font, size, leading, subset before) -> (the operators written, the subset after)
        self.written: dict[tuple[str, str, float, float, int], tuple[str, int]] = {}

    def beginText(self, x: float = 0, y: float = 0, direction: str | None = None) -> PDFTextObject:
        return _RepeatedText(self, x, y, direction=direction)

    def drawString(self, x: float, y: float, text: str, mode: int | None = None, charSpace: float = 0,
                   direction: str | None = None, wordSpace: float | None = None, shaping: bool = False) -> None:
        """Plain text drawn as Canvas draws it, without measuring it first (Canvas does, for
        right-to-left text, and throws the width away): a table draws each string cell with it."""
        if mode is not None or charSpace or direction or wordSpace or shaping:
            super().drawString(x, y, text, mode, charSpace, direction, wordSpace, shaping)
            return
        line = self.beginText(x, y)
        line.textLine(text)
        self.drawText(line)


def _footed_canvas(footer: Footer) -> type[Canvas]:
    """A canvas that keeps each finished page until the document is saved, then draws every
    footer knowing the page count: "Page X of Y" in one build instead of two."""

    class FootedCanvas(_MemoCanvas):
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
    token = _SHARED.set({})
    try:
        flowables = story()
    finally:
        _SHARED.reset(token)
    doc.build(flowables, canvasmaker=_footed_canvas(footer))
    return buffer.getvalue()
