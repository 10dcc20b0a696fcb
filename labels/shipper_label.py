"""The label of a dry shipper: what travels, from where, to whom, at what temperature.

Pure: data in, PDF bytes out. A 4 x 6 inch page (the common shipping-label stock): the
shipment number in large type with a QR that encodes exactly that number (CellTrail's scan
box opens the shipment from it), "FOR AUTOLOGOUS USE ONLY", the patient's COI and reference,
the batch, the consignee (name, address, contact), the bags' codes, the shipping temperature
range, the shipper and its logger, the courier and the departure. A shipment with many bags
runs on to a second label page rather than losing a code. Output is byte-reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, SimpleDocTemplate, Spacer, Table, TableStyle

from labels.data import check_aware
from labels.document import QrFlowable, paragraph
from labels.layout import MM
from labels.qr import check_qr_payload
from labels.text import MONO_BOLD, SANS, SANS_BOLD, clean
from workflows.formatting import format_datetime

PAGE = (101.6 * MM, 152.4 * MM)  # 4 x 6 in
MARGIN = 4 * MM
WIDTH = PAGE[0] - 2 * MARGIN - 12  # the frame's padding, 6 pt each side
QR_SIZE = 24 * MM
AUTOLOGOUS = "FOR AUTOLOGOUS USE ONLY"

BODY = ParagraphStyle("ship-body", fontName=SANS, fontSize=8, leading=10)
CAPTION = ParagraphStyle("ship-caption", parent=BODY, fontName=SANS_BOLD, fontSize=7, leading=9,
                         textColor=colors.HexColor("#333333"))
TITLE = ParagraphStyle("ship-title", parent=BODY, fontName=SANS_BOLD, fontSize=10, leading=12)
NUMBER = ParagraphStyle("ship-number", parent=BODY, fontName=MONO_BOLD, fontSize=13, leading=16)
CODE = ParagraphStyle("ship-code", parent=BODY, fontName=MONO_BOLD, fontSize=9, leading=11)
WARNING = ParagraphStyle("ship-warning", parent=BODY, fontName=SANS_BOLD, fontSize=12, leading=15, alignment=1,
                         textColor=colors.white)
TEMPERATURE = ParagraphStyle("ship-temp", parent=BODY, fontName=SANS_BOLD, fontSize=11, leading=14)


@dataclass(frozen=True)
class ShipperLabel:
    """What a shipper label prints. ``number`` (the shipment number) is what its QR encodes."""

    number: str
    coi: str
    batch_number: str
    patient_ref: str
    product: str
    consignee_name: str
    consignee_code: str
    consignee_address: str
    consignee_contact: str
    bag_codes: Sequence[str]
    shipping_range: str          # "Ship at -196 to -150 °C", or "" when the process sets none
    shipper_code: str
    logger_code: str
    courier: str
    departed_at: datetime
    printed_at: datetime
    sender: str = ""             # the lab's name

    def __post_init__(self) -> None:
        check_qr_payload(self.number)
        check_aware("departed_at and printed_at", self.departed_at, self.printed_at)
        if not self.bag_codes:
            raise ValueError("A shipper label lists at least one bag.")


def _p(text: str, style: ParagraphStyle) -> Flowable:
    return paragraph(text, style)


def _block(caption: str, text: str, style: ParagraphStyle = BODY) -> list[Flowable]:
    return [_p(caption, CAPTION), _p(text, style), Spacer(0, 1.2 * MM)]


def _story(data: ShipperLabel) -> list[Flowable]:
    head = Table([[[_p("CELL THERAPY PRODUCT SHIPMENT", TITLE), _p(data.number, NUMBER),
                    _p(clean(data.product), BODY)], QrFlowable(data.number, QR_SIZE)]],
                 colWidths=[WIDTH - QR_SIZE - 2 * MM, QR_SIZE + 2 * MM])
    head.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                              ("RIGHTPADDING", (0, 0), (-1, -1), 0), ("TOPPADDING", (0, 0), (-1, -1), 0),
                              ("BOTTOMPADDING", (0, 0), (-1, -1), 0)]))
    warning = Table([[_p(AUTOLOGOUS, WARNING)]], colWidths=[WIDTH])
    warning.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.black),
                                 ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 4)]))
    identity = Table([[[_p("COI", CAPTION), _p(data.coi, CODE)],
                       [_p("Patient", CAPTION), _p(data.patient_ref, CODE)]],
                      [[_p("Batch", CAPTION), _p(data.batch_number, CODE)],
                       [_p("Bags", CAPTION), _p(str(len(data.bag_codes)), CODE)]]],
                     colWidths=[WIDTH * 0.62, WIDTH * 0.38])
    identity.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                  ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    consignee = "\n".join(filter(None, (f"{data.consignee_name} ({data.consignee_code})", data.consignee_address,
                                        f"Contact: {data.consignee_contact}" if data.consignee_contact else "")))
    story: list[Flowable] = [head, Spacer(0, 1.5 * MM), warning, Spacer(0, 1.5 * MM), identity, Spacer(0, 1 * MM)]
    if data.shipping_range:
        story += _block("Shipping temperature", data.shipping_range, TEMPERATURE)
    story += _block("Deliver to", consignee)
    if data.sender:
        story += _block("From", data.sender)
    story += _block("Dry shipper / temperature logger", f"{data.shipper_code} / {data.logger_code}", CODE)
    story += _block("Courier, departure", f"{data.courier}, {format_datetime(data.departed_at)}")
    story += [_p("Bags in this shipper (scan each at receipt)", CAPTION)]
    story += [_p(code, CODE) for code in data.bag_codes]
    story += [Spacer(0, 1.5 * MM), _p(f"Printed {format_datetime(data.printed_at)}", CAPTION)]
    return story


def render_shipper_label(data: ShipperLabel) -> bytes:
    """The shipper label as a PDF. Raises UnprintableText for characters the fonts lack."""
    buffer = BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                            bottomMargin=MARGIN, title=f"Shipper label {data.number}", author=clean(data.sender or "CellTrail"),
                            creator="CellTrail", invariant=True)
    doc.build(_story(data))
    return buffer.getvalue()
