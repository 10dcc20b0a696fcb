"""QR symbols drawn as vector rectangles, never as bitmaps.

A bitmap dithers on a 203 dpi thermal printer and stops decoding; vector modules survive
(DEPS.md). Each row's adjacent dark modules are merged into one rectangle, and all of them
go into one path filled with the non-zero rule, so no hairline seams appear between them.
"""

from __future__ import annotations

from itertools import groupby

import qrcode
from qrcode.util import MODE_ALPHA_NUM, QRData
from reportlab.lib.colors import black
from reportlab.pdfgen.canvas import FILL_NON_ZERO, Canvas

QUIET_ZONE = 4  # modules of white around the symbol (ISO/IEC 18004)

# What the QR alphanumeric mode can hold: a payload outside it would switch to byte mode,
# a larger symbol and worse reads from a phone camera (DEPS.md).
QR_ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")

# One mask pattern for every symbol. Choosing it by the standard's penalty score means building
# and scoring all eight, in pure Python: 80 % of a label sheet's QR time. ISO/IEC 18004 only
# recommends that evaluation; every decoder reads the mask from the symbol's format information.
# Pattern 5 scored closest to the best of the eight on the lab's container codes.
MASK = 5


def check_qr_payload(payload: str) -> str:
    """Return ``payload`` if it is a non-empty string of the QR alphanumeric set, else raise ValueError."""
    if not payload or not set(payload) <= QR_ALPHANUMERIC:
        raise ValueError(f"{payload!r} is not a QR payload: use upper-case A-Z, 0-9 and ' $%*+-./:' only.")
    return payload


def qr_matrix(payload: str) -> list[list[bool]]:
    """The modules of ``payload``'s QR symbol (ECC M, smallest version, mask MASK), quiet zone included,
    top row first."""
    code = qrcode.QRCode(version=None, error_correction=qrcode.ERROR_CORRECT_M, border=QUIET_ZONE,
                         mask_pattern=MASK)
    code.add_data(QRData(check_qr_payload(payload).encode("ascii"), mode=MODE_ALPHA_NUM))
    code.make(fit=True)
    matrix: list[list[bool]] = code.get_matrix()
    return matrix


def draw_qr(canvas: Canvas, payload: str, x: float, y: float, size: float) -> None:
    """Draw ``payload``'s QR as a ``size``-point square, quiet zone included, lower-left corner at (x, y)."""
    matrix = qr_matrix(payload)
    module = size / len(matrix)
    path = canvas.beginPath()
    for row_index, row in enumerate(matrix):
        bottom = y + size - (row_index + 1) * module
        column = 0
        for dark, run in groupby(row):
            length = len(list(run))
            if dark:
                path.rect(x + column * module, bottom, length * module, module)
            column += length
    canvas.saveState()
    canvas.setFillColor(black)
    canvas.drawPath(path, stroke=0, fill=1, fillMode=FILL_NON_ZERO)
    canvas.restoreState()
