"""Reading back what CellTrail prints: PDF pages as images, their QR codes, their text."""

from __future__ import annotations

import io

import pdfplumber
import pypdfium2
import zxingcpp
from PIL import Image

THERMAL_DPIS = (203, 300)


def pages(pdf: bytes, dpi: int) -> list[Image.Image]:
    """Each page rendered in grey at ``dpi``."""
    document = pypdfium2.PdfDocument(pdf)
    try:
        return [page.render(scale=dpi / 72).to_pil().convert("L") for page in document]
    finally:
        document.close()


def bilevel(image: Image.Image) -> Image.Image:
    """Black or white by a plain threshold, as a thermal printer's head prints (no dithering)."""
    return image.point(lambda value: 255 if value >= 128 else 0, mode="1")


def decode(image: Image.Image) -> list[zxingcpp.Barcode]:
    return zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)


def qr_texts(pdf: bytes, dpi: int) -> list[str]:
    """The text of every QR code found on every page."""
    return [barcode.text for image in pages(pdf, dpi) for barcode in decode(image)]


def words(pdf: bytes) -> list[dict]:
    with pdfplumber.open(io.BytesIO(pdf)) as document:
        return [word for page in document.pages for word in page.extract_words()]


def text_of(pdf: bytes) -> str:
    """All text of the PDF, white space folded."""
    with pdfplumber.open(io.BytesIO(pdf)) as document:
        return " ".join(" ".join((page.extract_text() or "").split()) for page in document.pages)
