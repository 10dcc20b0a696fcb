"""The release for infusion certificate (RfIC) of one batch, as an A4 PDF.

The certificate that travels with the product to the treating site: the patient's
pseudonymous identifiers and COI, the product and its bags (codes and CAR+ viable T cells,
the dose per kg and the weight it was counted for, the expiry, laid out as on the
certificate of analysis), QA's release decision with its signature, the conditions the
release carries (an interim result, an exceptional release at the physician's request),
and the longest time from thaw to the end of infusion the process allows.

It carries the digest of the executed batch record it was issued on, in its QR and on
every page: scanning it tells the site whether that record is still current (a late
failing result changes it). Output is byte-reproducible (``invariant``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, Spacer, Table, TableStyle

from labels.coa import BODY, HEADING, LABEL, NOTICE, SMALL, TITLE, interim_statement, product_section, signature_text
from labels.data import CoaData
from labels.digest import parse_digest, qr_payload
from labels.distribution_data import NoticeRecord
from labels.document import (
    PAGE_MARGIN,
    TEXT_WIDTH,
    Footer,
    QrFlowable,
    digest_footer,
    paragraph,
    render_counted,
)
from labels.layout import MM
from labels.record_distribution import notice_status
from labels.text import MONO_BOLD, SANS, clean
from workflows.formatting import format_date, format_utc

QR_SIZE = 30 * MM
FOOTER_SIZE = 7
MONO = ParagraphStyle("rfic-mono", parent=BODY, fontName=MONO_BOLD, fontSize=7, leading=9)
CONDITION = ParagraphStyle("rfic-condition", parent=LABEL, spaceBefore=4, spaceAfter=1, keepWithNext=1)
LEGEND = (
    "This certificate was issued on the executed batch record with the digest above. To check that the record "
    "is still current (a result reported after release changes it), scan the QR (or type the digest) into "
    "CellTrail's scan box. Before infusion, confirm that the patient's identity matches the COI and the patient "
    "identifiers on every bag; do not infuse otherwise."
)


@dataclass(frozen=True)
class RficData:
    """A release for infusion certificate: the product as the certificate of analysis states it
    (``coa``: bags, dose, expiry, disposition, its signature, interim and exceptional release),
    the patient's other pseudonymous identifiers, the digest of the batch record it was issued
    on, QA's reason for the release, and the process's thaw-to-infusion limit (None: the
    process sets none)."""

    coa: CoaData
    initials: str
    date_of_birth: date
    record_digest: str
    release_reason: str | None = None
    thaw_to_infusion_minutes: int | None = None
    #: Release results that failed after the product was shipped, as sent to the sites (issue 15).
    notices: tuple[NoticeRecord, ...] = ()

    def __post_init__(self) -> None:
        if parse_digest(self.record_digest) != self.record_digest:
            raise ValueError("The record digest must be 64 lower-case hexadecimal characters.")
        if self.coa.disposition is None or self.coa.disposition_signature is None:
            raise ValueError("A release for infusion certificate needs the signed release decision.")
        if self.thaw_to_infusion_minutes is not None and self.thaw_to_infusion_minutes < 1:
            raise ValueError("A thaw-to-infusion limit is a positive number of minutes.")


def _text(text: str, style: ParagraphStyle = BODY) -> Flowable:
    return paragraph(text, style)


def _identity(data: RficData) -> list[Flowable]:
    coa = data.coa
    rows = [
        ("Batch number", coa.batch_number),
        ("COI", coa.coi),
        ("Patient reference", coa.patient_ref),
        ("Initials", data.initials),
        ("Date of birth", format_date(data.date_of_birth)),
        ("Product", coa.product),
        ("Process", f"{coa.process_key}, version {coa.process_version}"),
    ]
    details = Table([[_text(name, LABEL), _text(value)] for name, value in rows],
                    colWidths=(34 * MM, TEXT_WIDTH - QR_SIZE - 34 * MM),
                    style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (0, -1), 0)]))
    qr = Table([[QrFlowable(qr_payload(data.record_digest), QR_SIZE)], [_text("Scan to verify", SMALL)]],
               colWidths=(QR_SIZE,), style=TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 0),
                                                       ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    identity = Table([[details, qr]], colWidths=(TEXT_WIDTH - QR_SIZE, QR_SIZE),
                     style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                       ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    return [identity, _text("Batch record digest (SHA-256)", LABEL), _text(data.record_digest, MONO),
            Spacer(0, 2 * MM), _text(LEGEND, SMALL)]


def thaw_limit_text(data: RficData) -> str:
    """``Within 180 minutes of the start of thawing ...``, or that the process sets no limit."""
    coa = data.coa
    if data.thaw_to_infusion_minutes is None:
        return (f"Not specified in process {coa.process_key} v{coa.process_version}: follow the product's "
                "instructions for thawing and administration.")
    return (f"Complete the infusion within {data.thaw_to_infusion_minutes} minutes of the start of thawing "
            f"(process {coa.process_key} v{coa.process_version}).")


def conditions(data: RficData) -> list[tuple[str, str]]:
    """What the release is subject to, (title, text): an interim result, an exceptional release
    (with the physician's request and confirmation as QA recorded them)."""
    coa = data.coa
    found = []
    if coa.released_on_interim:
        found.append(("Interim result", interim_statement(coa)))
    if coa.exceptional_release_notes:
        found.append(("Exceptional release", coa.exceptional_release_notes))
    return found


def _release(data: RficData) -> list[Flowable]:
    coa = data.coa
    flowables: list[Flowable] = [_text("Release decision", HEADING), _text(f"Disposition: {coa.disposition}", NOTICE),
                                 _text(signature_text(coa.disposition_signature))]
    if data.release_reason and not coa.exceptional_release_notes:  # else printed with the exceptional release
        flowables.append(_text(f"Reason: {data.release_reason}"))
    flowables.append(_text("Conditions of release", HEADING))
    found = conditions(data)
    if not found:
        return [*flowables, _text("None: the release decision records no interim result and no exceptional release.")]
    for title, text in found:
        flowables += [_text(title, CONDITION), _text(text)]
    return flowables


def _notices(data: RficData) -> list[Flowable]:
    """The late failing results sent to the sites since the release, with their acknowledgement."""
    if not data.notices:
        return []
    flowables: list[Flowable] = [_text("Notices of late results (failed after shipment)", HEADING)]
    for notice in data.notices:
        flowables += [_text(f"Notice {notice.id} to {notice.site}, {format_utc(notice.created_at)}", CONDITION),
                      _text(notice.what, NOTICE), _text(notice_status(notice))]
    return flowables


def _story(data: RficData) -> list[Flowable]:
    coa = data.coa
    return [
        _text("Release for Infusion Certificate", TITLE),
        _text("\n".join((coa.facility_name, *coa.facility_address)), SMALL),
        Spacer(0, 4 * MM),
        *_identity(data),
        *product_section(coa),
        _text("Thaw to end of infusion", HEADING),
        _text(thaw_limit_text(data)),
        *_release(data),
        *_notices(data),
    ]


def _footer(data: RficData) -> Footer:
    coa = data.coa
    issued = f"Release for infusion certificate {coa.batch_number}. " + (
        f"Downloaded by {clean(coa.downloaded_by)} at {format_utc(coa.generated_at)}" if coa.downloaded_by
        else f"Generated {format_utc(coa.generated_at)}")
    return digest_footer(f"Batch record digest SHA-256 {data.record_digest}", issued, font=SANS, size=FOOTER_SIZE)


def render_rfic(data: RficData) -> bytes:
    """The release for infusion certificate as an A4 PDF. Raises UnprintableText for characters the fonts lack."""
    return render_counted(lambda: _story(data), _footer(data),
                          title=f"Release for infusion certificate {data.coa.batch_number}",
                          author=clean(data.coa.facility_name), bottom_margin=PAGE_MARGIN + 4 * MM)
