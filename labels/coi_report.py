"""The chain-of-identity report of one patient, as an A4 PDF.

One patient's whole chain from collection to infusion on a few pages: who the patient is
(pseudonymous identifiers and COI, the treating site), where the product is and the
vein-to-vein time, manufacture and release of each batch in summary with the digest of its
executed batch record, every hand-off of every container in time order (who, when, from and
to, the code scanned, MATCH or MISMATCH), the shipments with their receipt at the site, the
bedside identity checks, the thaw and infusion of each bag and the bags not infused.

Like the batch record it carries its own digest, over its canonical content (format
``celltrail/coi-report/1``, otherwise as ``labels.digest`` describes it), in its QR and on
every page: CellTrail's scan box and ``/verify/<digest>`` tell whether the copy is still
current. Who downloaded it and when is not in that content (``Issue``). Output is
byte-reproducible (``invariant``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, Spacer, Table, TableStyle

from labels.data import check_aware
from labels.digest import parse_digest, plain, qr_payload, sha256_hex
from labels.document import PAGE_MARGIN, TEXT_WIDTH, Footer, QrFlowable, digest_footer, render_counted
from labels.layout import MM
from labels.record_data import Issue, Signed
from labels.tables import (
    FLAG,
    HEADING,
    LABEL,
    LINE,
    MONO,
    SMALL,
    SUBHEADING,
    TINY,
    TITLE,
    column_widths,
    fact_table,
    grid_table,
    para,
    signature_paragraphs,
)
from labels.text import SANS, clean
from workflows.formatting import format_date, format_utc

FORMAT = "celltrail/coi-report/1"
QR_SIZE = 30 * MM
FOOTER_SIZE = 7
LEGEND = (
    "All times are UTC. Every hand-off of every container of this patient's batches is listed in time order; "
    "a MISMATCH is a scan that was refused (the hand-off did not happen) and is kept on record. A signature "
    "marked INVALIDATED no longer matches the record it signed. To check this copy against CellTrail, scan its "
    "QR (or type its digest) into CellTrail's scan box."
)
STAGES = {"collection": "Collection", "manufacture": "Manufacture", "qc": "Quality control",
          "released": "Released, not shipped", "in transit": "In transit", "at site": "At the treating site",
          "quarantined at site": "QUARANTINED at the treating site", "infused": "Infused",
          "closed": "Chain closed", "rejected": "Rejected", "on hold": "On hold"}
METHODS = {"wristband": "wristband COI scanned", "identifiers": "patient reference and date of birth typed"}
OUTCOMES = {"returned": "Returned to the manufacturer", "destroyed": "Destroyed at the site",
            "unused": "Not used, kept at the site under quarantine"}

#: An identity code in a table cell: small enough that the longest code fits its column unbroken.
CODE = ParagraphStyle("coi-code", parent=TINY, splitLongWords=0)
#: Above a long table that may start on the page it is on (the heading is kept with its header row).
TABLE_HEADING = ParagraphStyle("coi-table-heading", parent=HEADING, keepWithNext=0)
#: The name column of the report's name / value lists.
LABEL_WIDTH = 38 * MM


# --- the data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A QA decision on a batch, in summary: title, the state it led to, who and when, why, signatures."""

    title: str
    state_after: str
    reason: str | None
    decided_by: str
    decided_at: datetime
    signatures: tuple[Signed, ...] = ()

    def __post_init__(self) -> None:
        check_aware("decided_at", self.decided_at)


@dataclass(frozen=True)
class BatchSummary:
    """Manufacture and release of one batch: its identity, state, the QA decisions, and the
    digest of its executed batch record (which ``/verify/<digest>`` checks)."""

    batch_number: str
    product: str
    process_key: str
    process_version: int
    state: str
    started_at: datetime
    record_digest: str
    decisions: tuple[Decision, ...] = ()

    def __post_init__(self) -> None:
        check_aware("started_at", self.started_at)
        if parse_digest(self.record_digest) != self.record_digest:
            raise ValueError("A batch record digest is 64 lower-case hexadecimal characters.")


@dataclass(frozen=True)
class HandOff:
    """One custody event: a container scanned at a hand-off, matched or refused."""

    occurred_at: datetime
    batch_number: str
    container: str | None
    event: str
    scanned: str
    from_location: str | None
    to_location: str | None
    actor: str
    matched: bool
    message: str = ""

    def __post_init__(self) -> None:
        check_aware("occurred_at", self.occurred_at)


@dataclass(frozen=True)
class Receipt:
    """The treating site's receipt of a shipment. Temperatures are the recorded numbers as text
    (°C); ``within_range`` None when the shipment carries no range."""

    arrived_at: datetime
    logger_min_c: str
    logger_max_c: str
    within_range: bool | None
    shipper_intact: bool
    storage: str
    scanned_codes: tuple[str, ...]
    missing_codes: tuple[str, ...]
    comment: str
    quarantine_reason: str
    deviation: str | None
    received_by: str
    received_at: datetime
    signatures: tuple[Signed, ...] = ()

    def __post_init__(self) -> None:
        check_aware("arrived_at", self.arrived_at, self.received_at)


@dataclass(frozen=True)
class SiteDecision:
    """QA's decision on a shipment quarantined at the site: "release" or "reject"."""

    decision: str
    reason: str
    decided_by: str
    decided_at: datetime
    signatures: tuple[Signed, ...] = ()

    def __post_init__(self) -> None:
        check_aware("decided_at", self.decided_at)


@dataclass(frozen=True)
class ShipmentPart:
    """A shipment of the patient's bags: packing, its verification, receipt and QA's decisions."""

    number: str
    batch_number: str
    status: str
    site: str
    bags: tuple[str, ...]
    shipper_code: str
    logger_code: str
    temp_min_c: str | None
    temp_max_c: str | None
    departed_at: datetime
    courier: str
    packed_by: str
    packed_at: datetime
    verified_by: str | None
    verified_at: datetime | None
    signatures: tuple[Signed, ...] = ()
    receipt: Receipt | None = None
    decisions: tuple[SiteDecision, ...] = ()

    def __post_init__(self) -> None:
        check_aware("departed_at", self.departed_at, self.packed_at, self.verified_at)


@dataclass(frozen=True)
class BedsideCheckPart:
    """Two clinicians confirmed the patient's identity against a bag at the bedside."""

    bag: str
    batch_number: str
    method: str
    patient_evidence: str
    bag_scanned: str
    checked_at: datetime
    first: str
    second: str
    signatures: tuple[Signed, ...] = ()

    def __post_init__(self) -> None:
        check_aware("checked_at", self.checked_at)


@dataclass(frozen=True)
class InfusionPart:
    """One bag thawed and infused; ``limit_minutes`` the definition's thaw-to-infusion limit."""

    bag: str
    batch_number: str
    thaw_start: datetime
    thaw_end: datetime
    infusion_start: datetime
    infusion_end: datetime
    limit_minutes: int | None
    limit_exceeded: bool
    reactions: str
    deviation: str | None
    administered_by: str
    recorded_at: datetime
    signatures: tuple[Signed, ...] = ()

    def __post_init__(self) -> None:
        check_aware("thaw_start", self.thaw_start, self.thaw_end, self.infusion_start, self.infusion_end,
                    self.recorded_at)

    @property
    def thaw_to_end_minutes(self) -> int:
        return int((self.infusion_end - self.thaw_start).total_seconds() // 60)


@dataclass(frozen=True)
class DisposalPart:
    """A bag that will not be infused: returned, destroyed or kept unused."""

    bag: str
    batch_number: str
    outcome: str
    reason: str
    happened_at: datetime
    recorded_by: str
    witness: str
    signatures: tuple[Signed, ...] = ()

    def __post_init__(self) -> None:
        check_aware("happened_at", self.happened_at)


@dataclass(frozen=True)
class CoiReportData:
    """The chain of identity of one patient as it stands in the database. Nothing of one
    printout is in here (who downloaded it, when): two snapshots of an unchanged chain are
    equal and share a digest. ``stage`` is a key of STAGES; ``vein_to_vein_minutes`` from the
    end of collection to the end of the last infusion, None while the chain is open."""

    coi: str
    patient_ref: str
    initials: str
    date_of_birth: date
    treating_site: str | None
    facility_name: str
    stage: str
    collection_end: datetime | None
    infused_at: datetime | None
    closed: bool
    vein_to_vein_minutes: int | None
    batches: tuple[BatchSummary, ...] = ()
    custody: tuple[HandOff, ...] = ()
    shipments: tuple[ShipmentPart, ...] = ()
    bedside_checks: tuple[BedsideCheckPart, ...] = ()
    infusions: tuple[InfusionPart, ...] = ()
    disposals: tuple[DisposalPart, ...] = ()

    def __post_init__(self) -> None:
        check_aware("collection_end", self.collection_end, self.infused_at)
        if self.vein_to_vein_minutes is not None and self.vein_to_vein_minutes < 0:
            raise ValueError("A vein-to-vein time is not negative.")


def canonical_json(report: CoiReportData) -> bytes:
    """The canonical bytes of ``report``, which its digest covers (``labels.digest``'s rules, format FORMAT)."""
    document = {"format": FORMAT, "record": plain(report)}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def report_digest(report: CoiReportData) -> str:
    return sha256_hex(canonical_json(report))


def is_coi_canonical(text: str) -> bool:
    """Whether stored canonical JSON is a chain-of-identity report's (its keys are sorted: the format comes first)."""
    return text.startswith(json.dumps({"format": FORMAT}, separators=(",", ":"))[:-1] + ",")


# --- words -----------------------------------------------------------------------------------------


def duration_text(minutes: int) -> str:
    """``23 days 4 h 5 min``; ``45 min``."""
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} day{'s' if days != 1 else ''}" if days else "", f"{hours} h" if hours else "",
             f"{mins} min" if mins or not (days or hours) else ""]
    return " ".join(p for p in parts if p)


def vein_to_vein_text(report: CoiReportData) -> str:
    if report.vein_to_vein_minutes is not None:
        return (f"{duration_text(report.vein_to_vein_minutes)} (end of collection to end of the last infusion)")
    if report.collection_end is None:
        return "Not started: no collection recorded yet."
    return "Open: the chain is not closed yet."


def range_text(low: str | None, high: str | None) -> str:
    if low is None and high is None:
        return "not set by the process"
    return f"{low if low is not None else '—'} °C to {high if high is not None else '—'} °C"


def logger_text(shipment: ShipmentPart, receipt: Receipt) -> str:
    verdict = {None: "no range to compare", True: "within range", False: "OUTSIDE RANGE"}[receipt.within_range]
    return (f"minimum {receipt.logger_min_c} °C, maximum {receipt.logger_max_c} °C; shipping range "
            f"{range_text(shipment.temp_min_c, shipment.temp_max_c)}: {verdict}")


def qa_decision_text(decision: SiteDecision) -> str:
    word = {"release": "Released for use", "reject": "REJECTED"}.get(decision.decision, decision.decision)
    return f"{word} by {decision.decided_by} at {format_utc(decision.decided_at)}: {decision.reason}"


def limit_text(infusion: InfusionPart) -> str:
    took = f"{infusion.thaw_to_end_minutes} min from the start of thawing to the end of infusion"
    if infusion.limit_minutes is None:
        return f"{took}; the process sets no limit"
    verdict = "LIMIT EXCEEDED" if infusion.limit_exceeded else "within the limit"
    return f"{took}; limit {infusion.limit_minutes} min: {verdict}"


# --- drawing ---------------------------------------------------------------------------------------


def _facts(rows: Sequence[tuple[str, str | Flowable]], width: float = TEXT_WIDTH) -> Table:
    return fact_table(rows, width, label_width=LABEL_WIDTH)


def _at(moment: datetime | None) -> str:
    return format_utc(moment) if moment else ""


def _header(report: CoiReportData, digest: str) -> list[Flowable]:
    details = _facts([
        ("COI", report.coi),
        ("Patient reference", report.patient_ref),
        ("Initials", report.initials),
        ("Date of birth", format_date(report.date_of_birth)),
        ("Treating site", report.treating_site or "Not chosen yet"),
        ("Where the product is", STAGES.get(report.stage, report.stage)),
        ("End of collection", _at(report.collection_end) or "Not recorded yet"),
        ("End of infusion", _at(report.infused_at) or "Not infused yet"),
        ("Vein to vein", vein_to_vein_text(report)),
    ], TEXT_WIDTH - QR_SIZE)
    qr = Table([[QrFlowable(qr_payload(digest), QR_SIZE)], [para("Scan to verify this copy", SMALL)]],
               colWidths=(QR_SIZE,), style=TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 0),
                                                       ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    identity = Table([[details, qr]], colWidths=(TEXT_WIDTH - QR_SIZE, QR_SIZE),
                     style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                       ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    return [para("Chain of Identity Report", TITLE), para(report.facility_name, SMALL), Spacer(0, 3 * MM), identity,
            para("Report digest (SHA-256)", LABEL), para(digest, MONO), Spacer(0, 2 * MM), para(LEGEND, SMALL)]


def _batches(report: CoiReportData) -> list[Flowable]:
    flowables: list[Flowable] = [para("Manufacture and release", HEADING)]
    if not report.batches:
        return [*flowables, para("No batch yet.")]
    for batch in report.batches:
        flowables += [para(f"Batch {batch.batch_number}", SUBHEADING), _facts([
            ("Product", batch.product),
            ("Process", f"{batch.process_key}, version {batch.process_version}"),
            ("State", batch.state),
            ("Started", format_utc(batch.started_at)),
            ("Batch record digest", para(f"sha256 {batch.record_digest}", MONO)),
        ])]
        if not batch.decisions:
            flowables.append(para("Release decision: no QA decision yet.", LINE))
        for decision in batch.decisions:
            reason = f" Reason: {decision.reason}" if decision.reason else ""
            flowables.append(para(f"{decision.title} → {decision.state_after}: decided by {decision.decided_by} at "
                                f"{format_utc(decision.decided_at)}.{reason}", LINE))
            flowables += signature_paragraphs(decision.signatures)
    return flowables


def _custody(report: CoiReportData) -> list[Flowable]:
    """One row per hand-off; its message (why a scan was refused, what was confirmed) on a row of
    its own across the table, so that codes in it are never broken."""
    flowables: list[Flowable] = [para("Hand-offs", TABLE_HEADING)]
    if not report.custody:
        return [*flowables, para("No hand-off recorded.")]
    rows: list[list[Flowable | list[Flowable]]] = []
    flagged: list[int] = []
    spans: list[int] = []
    for event in report.custody:
        where = " → ".join(x for x in (event.from_location, event.to_location) if x) or "—"
        if not event.matched:
            flagged.append(len(rows))
        rows.append([para(format_utc(event.occurred_at), SMALL),
                     [para(event.container or "—", CODE), para(event.batch_number, CODE)], para(event.event, SMALL),
                     para(event.scanned, CODE), para(where, CODE), para(event.actor, SMALL),
                     para("MATCH", SMALL) if event.matched else para("MISMATCH", FLAG)])
        if event.message:
            if not event.matched:
                flagged.append(len(rows))
            spans.append(len(rows))
            rows.append([para(event.message, SMALL), *([para("", SMALL)] * 6)])
    table = grid_table(("When", "Container, batch", "Hand-off", "Scanned", "From → to", "By", "Result"), rows,
                   column_widths(11, 17, 12, 17, 21, 10, 12), flagged=flagged)
    table.setStyle(TableStyle([("SPAN", (0, row + 1), (-1, row + 1)) for row in spans]))
    return [*flowables, table]


def _receipt(shipment: ShipmentPart, receipt: Receipt) -> list[Flowable]:
    facts = _facts([
        ("Arrived", format_utc(receipt.arrived_at)),
        ("Temperature logger", logger_text(shipment, receipt)),
        ("Shipper intact", "yes" if receipt.shipper_intact else "NO: the shipper arrived damaged or opened"),
        ("Storage at the site", receipt.storage),
        ("Bags scanned", ", ".join(receipt.scanned_codes) or "none"),
        ("Bags missing", ", ".join(receipt.missing_codes)),
        ("Comment", receipt.comment),
        ("Quarantine", f"QUARANTINED: {receipt.quarantine_reason}" if receipt.quarantine_reason else "none"),
        ("Deviation", receipt.deviation or ""),
        ("Received", f"by {receipt.received_by} at {format_utc(receipt.received_at)}"),
    ])
    return [para(f"Receipt of {shipment.number}", SUBHEADING), facts, *signature_paragraphs(receipt.signatures)]


def _shipments(report: CoiReportData) -> list[Flowable]:
    flowables: list[Flowable] = [para("Shipment and receipt", HEADING)]
    if not report.shipments:
        return [*flowables, para("Not shipped yet.")]
    for shipment in report.shipments:
        verified = (f"by {shipment.verified_by} at {_at(shipment.verified_at)}" if shipment.verified_by
                    else "NOT VERIFIED yet")
        flowables += [para(f"Shipment {shipment.number}", SUBHEADING), _facts([
            ("Batch", shipment.batch_number),
            ("Status", shipment.status),
            ("Consignee", shipment.site),
            ("Bags", ", ".join(shipment.bags)),
            ("Dry shipper", shipment.shipper_code),
            ("Temperature logger", shipment.logger_code),
            ("Shipping range", range_text(shipment.temp_min_c, shipment.temp_max_c)),
            ("Departed", format_utc(shipment.departed_at)),
            ("Courier", shipment.courier),
            ("Packed", f"by {shipment.packed_by} at {format_utc(shipment.packed_at)}"),
            ("Packing verified", verified),
        ]), *signature_paragraphs(shipment.signatures)]
        if shipment.receipt is None:
            flowables.append(para("Not received at the site yet.", LINE))
        else:
            flowables += _receipt(shipment, shipment.receipt)
        for decision in shipment.decisions:
            flowables += [para(f"QA decision on the quarantine: {qa_decision_text(decision)}", LINE),
                          *signature_paragraphs(decision.signatures)]
    return flowables


def _bedside(report: CoiReportData) -> list[Flowable]:
    flowables: list[Flowable] = [para("Bedside identity check", HEADING)]
    if not report.bedside_checks:
        return [*flowables, para("No bedside check yet.")]
    for check in report.bedside_checks:
        flowables += [para(f"Bag {check.bag} ({check.batch_number})", SUBHEADING), _facts([
            ("Checked", format_utc(check.checked_at)),
            ("Method", METHODS.get(check.method, check.method)),
            ("Patient", check.patient_evidence),
            ("Bag scanned", check.bag_scanned),
            ("Clinicians", f"{check.first} and {check.second}"),
            ("Result", "MATCH"),
        ]), *signature_paragraphs(check.signatures)]
    return flowables


def _infusions(report: CoiReportData) -> list[Flowable]:
    flowables: list[Flowable] = [para("Thaw and infusion", HEADING)]
    if not report.infusions:
        return [*flowables, para("Not infused yet.")]
    for infusion in report.infusions:
        flowables += [para(f"Bag {infusion.bag} ({infusion.batch_number})", SUBHEADING), _facts([
            ("Thaw", f"{format_utc(infusion.thaw_start)} to {format_utc(infusion.thaw_end)}"),
            ("Infusion", f"{format_utc(infusion.infusion_start)} to {format_utc(infusion.infusion_end)}"),
            ("Time limit", limit_text(infusion)),
            ("Deviation", infusion.deviation or ""),
            ("Reactions", infusion.reactions or "none recorded"),
            ("Administered", f"by {infusion.administered_by}, recorded at {format_utc(infusion.recorded_at)}"),
        ]), *signature_paragraphs(infusion.signatures)]
    return flowables


def _disposals(report: CoiReportData) -> list[Flowable]:
    if not report.disposals:
        return []
    flowables: list[Flowable] = [para("Bags not infused", HEADING)]
    for disposal in report.disposals:
        flowables += [para(f"Bag {disposal.bag} ({disposal.batch_number})", SUBHEADING), _facts([
            ("Outcome", OUTCOMES.get(disposal.outcome, disposal.outcome)),
            ("Reason", disposal.reason),
            ("When", format_utc(disposal.happened_at)),
            ("Recorded by", disposal.recorded_by),
            ("Witness", disposal.witness),
        ]), *signature_paragraphs(disposal.signatures)]
    return flowables


def _story(report: CoiReportData, digest: str) -> list[Flowable]:
    return [*_header(report, digest), *_batches(report), *_custody(report), *_shipments(report),
            *_bedside(report), *_infusions(report), *_disposals(report)]


def _footer(report: CoiReportData, digest: str, issue: Issue) -> Footer:
    issued = (f"Chain of identity report {report.coi}. {issue.verb} by {clean(issue.issued_to)} at "
              f"{format_utc(issue.issued_at)}")
    return digest_footer(f"Report digest SHA-256 {digest}", issued, font=SANS, size=FOOTER_SIZE)


def render_coi_report(report: CoiReportData, issue: Issue) -> bytes:
    """The chain-of-identity report as an A4 PDF, its digest (``report_digest``) in the QR and on
    every page. Raises UnprintableText for characters the fonts lack."""
    digest = report_digest(report)
    return render_counted(lambda: _story(report, digest), _footer(report, digest, issue),
                          title=f"Chain of identity report {report.coi}", author=clean(report.facility_name),
                          bottom_margin=PAGE_MARGIN + 4 * MM)
