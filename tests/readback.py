"""Reading back what CellTrail prints: PDF pages as images, their QR codes, their text."""

from __future__ import annotations

import io
import re

import pdfplumber
import pypdf
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


def page_texts(pdf: bytes) -> list[str]:
    """Each page's text, white space folded (pypdf: several times faster than pdfplumber)."""
    return [" ".join(page.extract_text().split()) for page in pypdf.PdfReader(io.BytesIO(pdf)).pages]


def cells_text(pdf: bytes) -> str:
    """The text of every table cell, cell by cell (white space folded): a wrapped cell reads
    as one run even where its neighbours wrap too, which page text interleaves. A QR's
    modules (rectangles a few points high) are left out: their edges read as cell borders."""
    with pdfplumber.open(io.BytesIO(pdf)) as document:
        tables = [page.filter(lambda obj: obj["object_type"] != "rect" or obj["height"] > 3).extract_tables()
                  for page in document.pages]
    return " | ".join(" ".join(cell.split()) for page in tables for table in page for row in table
                      for cell in row if cell)


def qr_digest(pdf: bytes) -> str:
    """The record digest in the verification QR of ``pdf``'s first page (``V-`` and 64 hex)."""
    [payload] = [barcode.text for barcode in decode(pages(pdf, 150)[0])]
    assert re.fullmatch(r"V-[0-9A-F]{64}", payload), payload
    return payload[2:].lower()
