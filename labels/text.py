"""Fonts and the text forms of dates and times shared by labels and certificates.

The standard PDF fonts cannot show "≤" or "−" (as in "≤ −150 °C"), so TrueType fonts are
embedded: DejaVu Sans, and DejaVu Sans Mono Bold for codes (its zero is dotted, unlike the
letter O). They ship inside this package (labels/fonts, with their licence), so a label
looks the same, to the point, on every machine that prints it: a validated layout must not
depend on the fonts a server happens to have. DejaVu also covers Greek (IFN-γ, TNF-α). A
character the font lacks would print as an empty box, so it is refused instead
(``UnprintableText``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

FONTS_DIR = Path(__file__).parent / "fonts"


def _register_fonts() -> tuple[str, str, str]:
    """Register the text fonts; return the sans, sans bold and mono bold font names."""
    names = {"CellTrail-Sans": "DejaVuSans.ttf", "CellTrail-Sans-Bold": "DejaVuSans-Bold.ttf",
             "CellTrail-Mono-Bold": "DejaVuSansMono-Bold.ttf"}
    for name, file in names.items():
        pdfmetrics.registerFont(TTFont(name, str(FONTS_DIR / file)))
    sans, sans_bold, mono_bold = names
    return sans, sans_bold, mono_bold


SANS, SANS_BOLD, MONO_BOLD = _register_fonts()


class UnprintableText(ValueError):
    """Text holds a character the label fonts cannot draw."""


def clean(text: str, font: str = SANS) -> str:
    """Collapse whitespace (line breaks included) to single spaces; refuse characters ``font`` lacks."""
    text = " ".join(text.split())
    covered = _covered(font)
    if not covered.issuperset(text):
        missing = sorted(set(text) - covered)
        raise UnprintableText(f"{text!r} holds characters the label font cannot print: {''.join(missing)!r}.")
    return text


@cache
def _covered(font: str) -> frozenset[str]:
    """The characters ``font`` has a glyph for (a printed record checks thousands of texts against it)."""
    return frozenset(map(chr, pdfmetrics.getFont(font).face.charToGlyph))
