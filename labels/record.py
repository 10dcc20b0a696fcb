"""The executed batch record of one batch as an A4 PDF (DESIGN.md, Printed records).

Header with the batch's identity, its process and the record's digest and QR; every step
with its entries, values, limits, flags, corrections (marked CHANGED SINCE ORIGINAL ENTRY,
EU GMP Annex 11 §8.2) and signatures (21 CFR 11.50); containers and the custody timeline;
deviations; release results against their specifications; QA decisions; the audit trail
as an appendix. Every page carries "Page X of Y", the digest, and who downloaded it when.
Flags and verdicts are printed as words, never as colour alone. Every time, number and
quantity is written by ``workflows.formatting`` (times in UTC, to the minute), as on the
labels, the certificate and the pages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, KeepTogether, PageBreak, Paragraph, Spacer, Table, TableStyle

from labels.chart import ExpansionChart, expansion_drawing, expansion_summary
from labels.digest import qr_payload, record_digest
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
from labels.record_data import (
    AuditRecord,
    BatchRecordData,
    DecisionRecord,
    DeviationRecord,
    EntryRecord,
    FieldRecord,
    Issue,
    ReleaseTestRecord,
    ResultRecord,
    Signed,
    TrailReview,
    ValueVersion,
)
from labels.text import MONO_BOLD, SANS, SANS_BOLD, clean
from workflows.formatting import format_number, format_quantity, format_recorded, format_utc, format_weight

QR_SIZE = 30 * MM
FOOTER_SIZE = 7
CHANGED = "CHANGED SINCE ORIGINAL ENTRY"
LEGEND = (
    "All times are UTC. A value marked CHANGED SINCE ORIGINAL ENTRY was corrected after it was first "
    "recorded (EU GMP Annex 11 §8.2): its original value and every correction, with who made it, when and "
    "why, are printed with it. A signature marked INVALIDATED no longer matches the record it signed. "
    "To check this copy against CellTrail, scan its QR (or type its digest) into CellTrail's scan box."
)
VERDICTS = {"pass": "PASS", "fail": "FAIL (out of specification)", "interim": "INTERIM", "pending": "PENDING",
            "n/a": "NOT REQUIRED"}
KINDS = {"material": "material lot", "equipment": "equipment", "container": "container scan"}

BODY = ParagraphStyle("record-body", fontName=SANS, fontSize=8.5, leading=10.5)
SMALL = ParagraphStyle("record-small", parent=BODY, fontSize=7.5, leading=9)
SMALL_BOLD = ParagraphStyle("record-small-bold", parent=SMALL, fontName=SANS_BOLD)
TINY = ParagraphStyle("record-tiny", parent=BODY, fontSize=6.5, leading=7.8)
LABEL = ParagraphStyle("record-label", parent=BODY, fontName=SANS_BOLD)
MONO = ParagraphStyle("record-mono", parent=BODY, fontName=MONO_BOLD, fontSize=7, leading=9)
TITLE = ParagraphStyle("record-title", parent=BODY, fontName=SANS_BOLD, fontSize=16, leading=20, spaceAfter=2)
HEADING = ParagraphStyle("record-heading", parent=BODY, fontName=SANS_BOLD, fontSize=12, leading=15,
                         spaceBefore=10, spaceAfter=4, keepWithNext=1)
SUBHEADING = ParagraphStyle("record-subheading", parent=HEADING, fontSize=10, leading=13, spaceBefore=6, spaceAfter=2)
ENTRY = ParagraphStyle("record-entry", parent=HEADING, fontSize=8.5, leading=10.5, spaceBefore=4, spaceAfter=2)
FLAG = ParagraphStyle("record-flag", parent=SMALL_BOLD, textColor=colors.Color(0.6, 0, 0))
LINE = ParagraphStyle("record-line", parent=SMALL, spaceBefore=1)
FLAGGED_ROW = colors.Color(1, 0.88, 0.88)
HEADER_ROW = colors.Color(0.9, 0.9, 0.9)


def _p(text: str, style: ParagraphStyle = BODY) -> Paragraph:
    return paragraph(text, style)


def _columns(*shares: float) -> tuple[float, ...]:
    return tuple(TEXT_WIDTH * share / sum(shares) for share in shares)


def _table(header: Sequence[str], rows: Sequence[Sequence[Flowable | list[Flowable]]], widths: Sequence[float],
           *, flagged: Iterable[int] = ()) -> Table:
    """A gridded table with a repeated header row; ``flagged`` rows (0 = first data row) are tinted."""
    style = [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), HEADER_ROW),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 2.5),
        ("RIGHTPADDING", (0, 0), (-1, -1), 2.5),
        *(("BACKGROUND", (0, row + 1), (-1, row + 1), FLAGGED_ROW) for row in flagged),
    ]
    head = [_p(title, SMALL_BOLD) for title in header]
    return Table([head, *rows], colWidths=widths, repeatRows=1, splitInRow=1, style=TableStyle(style))


def _facts(rows: Sequence[tuple[str, str | Flowable]], width: float) -> Table:
    """Name / value pairs without a grid; empty values are left out."""
    return Table(
        [[_p(name, LABEL), _p(value) if isinstance(value, str) else value] for name, value in rows if value],
        colWidths=(34 * MM, width - 34 * MM),
        style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (0, -1), 0),
                          ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]),
        hAlign="LEFT",
    )


def signature_line(signature: Signed) -> str:
    status = "valid" if signature.valid else "INVALIDATED: the record changed after it was signed"
    return f"Signed by {signature.printed_name} — meaning: {signature.meaning} — {format_utc(signature.signed_at)} — {status}"


def _signatures(signatures: Sequence[Signed], none: str = "Not signed.") -> list[Flowable]:
    if not signatures:
        return [_p(none, LINE)]
    return [_p(signature_line(s), LINE if s.valid else FLAG) for s in signatures]


# --- header ------------------------------------------------------------------------------------


def _header(record: BatchRecordData, digest: str) -> list[Flowable]:
    details = _facts([
        ("Batch number", record.batch_number),
        ("COI", record.coi),
        ("Patient reference", record.patient_ref),
        ("Product", record.product),
        ("Process", f"{record.process_title} ({record.process_key}, version {record.process_version})"),
        ("Process SHA-256", _p(record.process_sha256, MONO)),
        ("State", record.state),
        ("Started", f"{format_utc(record.started_at)} by {record.started_by}"),
    ], TEXT_WIDTH - QR_SIZE)
    qr = Table([[QrFlowable(qr_payload(digest), QR_SIZE)], [_p("Scan to verify this copy", SMALL)]],
               colWidths=(QR_SIZE,), style=TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 0),
                                                       ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    identity = Table([[details, qr]], colWidths=(TEXT_WIDTH - QR_SIZE, QR_SIZE),
                     style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                       ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    return [
        _p("Executed batch record", TITLE),
        _p(record.facility_name, SMALL),
        Spacer(0, 3 * MM),
        identity,
        _p("Record digest (SHA-256)", LABEL),
        _p(digest, MONO),
        Spacer(0, 2 * MM),
        _p(LEGEND, SMALL),
    ]


# --- steps -------------------------------------------------------------------------------------


def _value_text(field: FieldRecord, version: ValueVersion) -> str:
    text = format_recorded(version.text, field.type, version.unit)
    return f"{text} ({version.item})" if version.item else text


def _history(field: FieldRecord) -> list[Flowable]:
    lines: list[Flowable] = [_p(CHANGED, FLAG)]
    for number, version in enumerate(field.versions):
        out = " (out of limit)" if version.out_of_limit else ""
        if version.reason is None:
            text = f"Original entry: {_value_text(field, version)}{out}, recorded by {version.recorded_by} at " \
                   f"{format_utc(version.recorded_at)}."
        else:
            text = f"Correction {number}: changed to {_value_text(field, version)}{out} by {version.recorded_by} " \
                   f"at {format_utc(version.recorded_at)}. Reason: {version.reason}"
        lines.append(_p(text, LINE))
    return lines


def _check(current: ValueVersion | None, limit: str) -> list[Flowable]:
    if current is None or not limit:
        return [_p("—", SMALL)]
    if current.out_of_limit:
        return [_p("OUT OF LIMIT", FLAG), *([_p(current.message, TINY)] if current.message else [])]
    return [_p("in limit", SMALL)]


def _field_row(field: FieldRecord) -> list[Flowable | list[Flowable]]:
    name = f"{field.label}\n({KINDS[field.kind]})" if field.kind in KINDS else field.label
    current = field.current
    value: list[Flowable] = [_p(_value_text(field, current) if current else "not recorded", SMALL)]
    if field.changed:
        value += _history(field)
    return [_p(name, SMALL), value, _p(field.limit or "—", SMALL), _check(current, field.limit)]


def _entry(entry: EntryRecord) -> list[Flowable]:
    rows = [_field_row(field) for field in entry.fields]
    flagged = [i for i, field in enumerate(entry.fields) if field.current and field.current.out_of_limit]
    for derived in entry.derived:
        if derived.out_of_limit:
            flagged.append(len(rows))
        text = f"{derived.text} {derived.unit}" if derived.text and derived.unit else derived.text
        check = [_p("OUT OF LIMIT", FLAG)] if derived.out_of_limit else [_p("in limit" if derived.limit else "—",
                                                                            SMALL)]
        rows.append([_p(f"{derived.label} (computed)", SMALL), _p(text or "not computed", SMALL),
                     _p(derived.limit or "—", SMALL), check])
    flowables: list[Flowable] = [
        _p(f"Entry {entry.occurrence}: performed by {entry.performed_by} at {format_utc(entry.performed_at)}", ENTRY),
        _table(("Field", "Value", "Limit", "Check"), rows, _columns(26, 46, 14, 14), flagged=flagged),
    ]
    if entry.comment:
        flowables.append(_p(f"Comment: {entry.comment}", LINE))
    if entry.original_file:
        flowables.append(_p(f"Original instrument record: {entry.original_file.filename}, "
                            f"SHA-256 {entry.original_file.sha256}", LINE))
    flowables += _signatures(entry.signatures)
    if entry.awaiting_verification:
        flowables.append(_p("Awaiting verification by a second person.", FLAG))
    return flowables


def _steps(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [_p("Steps", HEADING)]
    for number, step in enumerate(record.steps, start=1):
        verify = " (second-person verification)" if step.verify else ""
        flowables.append(_p(f"{number}. {step.title}{verify}", SUBHEADING))
        if not step.entries:
            flowables.append(_p("Not recorded.", BODY))
        for entry in step.entries:
            flowables += _entry(entry)
        if record.expansion is not None and step.key == record.expansion.step_key:
            flowables += _expansion(record.expansion)
    return flowables


def _expansion(chart: ExpansionChart) -> list[Flowable]:
    """The expansion chart (the batch page's, from the same drawing) with its caption."""
    limit = f", its limit {chart.limit_text} dashed" if chart.limit_text else ""
    fold = ", the right axis giving the fold expansion since seeding" if chart.has_fold else ""
    caption = (f"Expansion chart: viable cells by culture day (day 0: the cells seeded) on a log scale{fold}; "
               f"viability below{limit}; shaded: the days a step is due. ▼ (▲) marks a value below (above) its "
               "limit, named beside it. Drawn from the current values of the entries above, corrections "
               f"included. {expansion_summary(chart)}")
    return [KeepTogether([Spacer(0, 2 * MM), _p("Expansion chart", ENTRY), expansion_drawing(chart, TEXT_WIDTH),
                          _p(caption, SMALL)])]


# --- containers and custody ----------------------------------------------------------------------


def _materials(record: BatchRecordData) -> list[Flowable]:
    """Each lot with its release status and the quantity taken; each instrument with its
    calibration status on the days of use (21 CFR 211.188(b)(3), 211.182)."""
    flowables: list[Flowable] = [_p("Materials and equipment used", HEADING), _p("Material lots", SUBHEADING)]
    if not record.lots:
        flowables.append(_p("No material lot recorded.", BODY))
    else:
        rows = [[[_p(lot.code, SMALL), _p(f"lot {lot.lot_number}", TINY)], _p(f"{lot.name} ({lot.supplier})", SMALL),
                 _p(lot.expiry.isoformat(), SMALL), _p(lot.status, SMALL), _p(lot.quantity, SMALL),
                 _p(", ".join(lot.steps), SMALL)] for lot in record.lots]
        flagged = [i for i, lot in enumerate(record.lots) if "RECALLED" in lot.status or "REJECTED" in lot.status]
        flowables.append(_table(("Lot", "Material", "Expiry", "Release status", "Used by this batch", "Steps"),
                                rows, _columns(21, 17, 11, 24, 11, 16), flagged=flagged))
    flowables.append(_p("Equipment", SUBHEADING))
    if not record.equipment:
        flowables.append(_p("No equipment recorded.", BODY))
        return flowables
    rows = [[_p(item.code, SMALL), _p(item.name, SMALL), _p(item.calibration, SMALL), _p(", ".join(item.steps), SMALL)]
            for item in record.equipment]
    flagged = [i for i, item in enumerate(record.equipment) if "OVERDUE" in item.calibration]
    flowables.append(_table(("Code", "Equipment", "Calibration when used", "Steps"), rows,
                            _columns(18, 22, 40, 20), flagged=flagged))
    return flowables


def _containers(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [_p("Containers and labels", HEADING)]
    if not record.containers:
        flowables.append(_p("No container yet.", BODY))
    else:
        rows = [[_p(c.code, SMALL), _p(c.title, SMALL), _p(c.volume or "—", SMALL), _p(c.status, SMALL),
                 _p(c.location or "—", SMALL),
                 _p("; ".join([f"printed {c.labels_printed}", *(f"reprint: {r}" for r in c.reprints)]), SMALL)]
                for c in record.containers]
        flowables.append(_table(("Code", "Container", "Volume", "Status", "Location", "Labels"), rows,
                                _columns(19, 16, 9, 11, 20, 25)))
        flowables += _bags(record)
    flowables.append(_p("Custody timeline", SUBHEADING))
    if not record.custody:
        flowables.append(_p("No hand-off recorded.", BODY))
        return flowables
    rows = []
    for event in record.custody:
        where = " → ".join(x for x in (event.from_location, event.to_location) if x) or "—"
        result = [_p("match", SMALL)] if event.matched else [_p("MISMATCH", FLAG), _p(event.message, TINY)]
        rows.append([_p(format_utc(event.occurred_at), SMALL), _p(event.container or "—", SMALL),
                     _p(f"{event.event} ({event.step})" if event.step else event.event, SMALL),
                     _p(event.scanned, SMALL), _p(where, SMALL), _p(event.actor, SMALL), result])
    flagged = [i for i, event in enumerate(record.custody) if not event.matched]
    flowables.append(_table(("When", "Container", "Hand-off", "Scanned", "Where", "By", "Result"), rows,
                            _columns(15, 17, 16, 17, 14, 11, 10), flagged=flagged))
    return flowables


def _bags(record: BatchRecordData) -> list[Flowable]:
    """The product bags as their labels print them: cells, dose per kg with the weight, fill and expiry."""
    rows = [[_p(c.title, SMALL), _p(c.code, SMALL), _p(c.volume or "—", SMALL), _p(format_number(b.cells), SMALL),
             _p(f"{format_quantity(b.per_kg, 'cells/kg')} ({format_weight(b.weight_kg)})", SMALL),
             _p(format_utc(b.filled_at), SMALL), _p(format_utc(b.expires_at) if b.expires_at else "not set", SMALL)]
            for c in record.containers if (b := c.contents) is not None]
    if not rows:
        return []
    return [_p("Product bags", SUBHEADING),
            _table(("Bag", "Code", "Volume", "CAR+ viable T cells", "Dose", "Filled", "Expires"), rows,
                   _columns(13, 20, 9, 12, 18, 14, 14))]


# --- deviations, release results, decisions ----------------------------------------------------------


def _by(name: str | None, moment: datetime | None) -> str:
    return f"{name} at {format_utc(moment)}" if name and moment else ""


def _deviation(deviation: DeviationRecord) -> list[Flowable]:
    facts = _facts([
        ("Status", deviation.status),
        ("Opened by", deviation.source),
        ("Opened", _by(deviation.opened_by, deviation.opened_at)),
        ("Description", deviation.description),
        ("Classification", deviation.classification or "not classified"),
        ("Root cause", deviation.root_cause or ""),
        ("Impact", deviation.impact or ""),
        ("Corrective action", deviation.corrective_action or ""),
        ("Preventive action", deviation.preventive_action or ""),
        ("Investigated", _by(deviation.investigated_by, deviation.investigated_at)),
        ("Closed", _by(deviation.closed_by, deviation.closed_at)),
    ], TEXT_WIDTH)
    none = "Not signed (open)." if deviation.status == "open" else "Not signed."
    return [_p(f"Deviation {deviation.number}: {deviation.title}", SUBHEADING), facts,
            *_signatures(deviation.signatures, none)]


def _deviations(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [_p("Deviations", HEADING)]
    if not record.deviations:
        return [*flowables, _p("No deviation.", BODY)]
    for deviation in record.deviations:
        flowables += _deviation(deviation)
    return flowables


def _result_text(result: ResultRecord, test: ReleaseTestRecord) -> str:
    """The result as people read it; its stored text carries the unit after a space."""
    suffix = f" {test.unit}" if test.unit else ""
    if test.kind != "number" or not result.text.endswith(suffix):
        return result.text
    return format_recorded(result.text.removesuffix(suffix), test.kind, test.unit)


def _result(result: ResultRecord, test: ReleaseTestRecord) -> list[Flowable]:
    late = " — late (after release)" if result.late else ""
    final = "" if result.verdict == "interim" else (" (final)" if result.final else " (interim)")
    judged = "" if result.specification == test.specification else f" against {result.specification}"
    lines: list[Flowable] = [_p(f"{_result_text(result, test)}: {VERDICTS.get(result.verdict, result.verdict)}"
                                f"{final}{judged} — {result.recorded_by}, {format_utc(result.recorded_at)}{late}",
                                SMALL)]
    if result.reason is not None:
        lines += [_p(CHANGED, FLAG), _p(f"Correction. Reason: {result.reason}", TINY)]
    if result.superseded:
        lines.append(_p("SUPERSEDED by the correction below.", FLAG))
    if result.comment:
        lines.append(_p(f"Comment: {result.comment}", TINY))
    lines += [_p(signature_line(s), TINY) for s in result.signatures]
    return lines


def _test_row(test: ReleaseTestRecord) -> list[Flowable | list[Flowable]]:
    results = [f for result in test.results for f in _result(result, test)] or [_p("—", SMALL)]
    return [[_p(test.title, SMALL_BOLD), _p(test.method, TINY)], _p(test.specification, SMALL), results,
            _p(VERDICTS.get(test.status, test.status), SMALL_BOLD)]


def _release(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [_p("Release results against specifications", HEADING)]
    if not record.release_tests:
        return [*flowables, _p("The process defines no release test.", BODY)]
    flagged = [i for i, test in enumerate(record.release_tests) if test.status == "fail"]
    flowables.append(_table(("Test", "Specification", "Results, oldest first", "Verdict"),
                            [_test_row(test) for test in record.release_tests], _columns(18, 20, 48, 14),
                            flagged=flagged))
    return flowables


def _decision(decision: DecisionRecord) -> list[Flowable]:
    facts = _facts([
        ("Decided", _by(decision.decided_by, decision.decided_at)),
        ("Reason", decision.reason or ""),
        ("Treating physician", decision.physician_name or ""),
        ("Physician's request", decision.physician_request or ""),
        ("Risk assessment", decision.risk_assessment or ""),
        ("Physician's confirmation", decision.physician_confirmation or ""),
        ("Record digest at the decision", _p(f"sha256 {decision.record_sha256}", MONO)),
    ], TEXT_WIDTH)
    return [_p(f"{decision.title}: {decision.state_before} → {decision.state_after}", SUBHEADING), facts,
            *_signatures(decision.signatures)]


def _decisions(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [_p("Disposition", HEADING)]
    if not record.decisions:
        return [*flowables, _p("No QA decision yet.", BODY)]
    for decision in record.decisions:
        flowables += _decision(decision)
    return flowables


# --- appendix: audit trail --------------------------------------------------------------------------


def _change(entry: AuditRecord) -> str:
    if entry.operation != "insert":
        return f"{entry.field}: {entry.old_value or '—'} → {entry.new_value or '—'}"
    try:
        content = json.loads(entry.new_value or "{}")
    except ValueError:
        return f"new: {entry.new_value}"
    if not isinstance(content, dict):
        return f"new: {entry.new_value}"
    return "new: " + "; ".join(f"{key}={value}" for key, value in content.items() if value not in (None, ""))


def _trail_review(review: TrailReview | None) -> str:
    if review is None:
        return "Audit trail review: this trail has not been reviewed yet."
    later = (f" {review.later_entries} later entr{'y' if review.later_entries == 1 else 'ies'} of this batch "
             "not reviewed yet." if review.later_entries else "")
    return (f"Audit trail last reviewed by {clean(review.reviewed_by)} at {format_utc(review.reviewed_at)}, "
            f"period {review.period_from.isoformat()} to {review.period_to.isoformat()}, up to entry "
            f"{review.head_entry}.{later}")


def _appendix(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [PageBreak(), _p(f"Appendix: audit trail of batch {record.batch_number} "
                                                 f"({len(record.audit)} entries)", HEADING)]
    flowables.append(_p(_trail_review(record.trail_review), BODY))
    if not record.audit:
        return [*flowables, _p("No entry.", BODY)]
    rows = [[_p(str(e.id), TINY), _p(format_utc(e.occurred_at), TINY), _p(e.actor, TINY), _p(e.action, TINY),
             _p(f"{e.operation} {e.table} {e.row}", TINY), _p(_change(e), TINY), _p(e.reason or "", TINY)]
            for e in record.audit]
    flowables.append(_table(("#", "When", "Who", "Action", "Record", "Change", "Reason"), rows,
                            _columns(5, 12, 9, 11, 12, 37, 14)))
    return flowables


# --- the document ----------------------------------------------------------------------------------


def _story(record: BatchRecordData, digest: str) -> list[Flowable]:
    from labels.record_distribution import distribution_section  # here: it draws with this module's helpers

    return [*_header(record, digest), *_steps(record), *_materials(record), *_containers(record), *_deviations(record),
            *_release(record), *_decisions(record), *distribution_section(record.distribution), *_appendix(record)]


def _footer(record: BatchRecordData, digest: str, issue: Issue) -> Footer:
    issued = f"Executed batch record {record.batch_number}. {issue.verb} by {clean(issue.issued_to)} at " \
             f"{format_utc(issue.issued_at)}"
    return digest_footer(f"Record digest SHA-256 {digest}", issued, font=SANS, size=FOOTER_SIZE)


def render_record(record: BatchRecordData, issue: Issue) -> bytes:
    """The executed batch record as an A4 PDF, its digest (``labels.digest``) on every page.

    Raises UnprintableText for characters the fonts lack.
    """
    digest = record_digest(record)
    return render_counted(lambda: _story(record, digest), _footer(record, digest, issue),
                          title=f"Executed batch record {record.batch_number}", author=clean(record.facility_name),
                          bottom_margin=PAGE_MARGIN + 4 * MM)
