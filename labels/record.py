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

from reportlab.platypus import Flowable, KeepTogether, PageBreak, Spacer, Table, TableStyle

from labels.chart import ExpansionChart, expansion_drawing, expansion_summary
from labels.digest import qr_payload, record_digest
from labels.document import (
    PAGE_MARGIN,
    TEXT_WIDTH,
    Footer,
    QrFlowable,
    digest_footer,
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
    TrailReview,
    ValueVersion,
)
from labels.record_distribution import distribution_section
from labels.tables import (
    BODY,
    ENTRY,
    FLAG,
    HEADING,
    LABEL,
    LINE,
    MONO,
    SMALL,
    SMALL_BOLD,
    SUBHEADING,
    TINY,
    TITLE,
    column_widths,
    done_by,
    fact_table,
    grid_table,
    para,
    signature_line,
    signature_paragraphs,
)
from labels.text import SANS, clean
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





# --- header ------------------------------------------------------------------------------------


def _header(record: BatchRecordData, digest: str) -> list[Flowable]:
    details = fact_table([
        ("Batch number", record.batch_number),
        ("COI", record.coi),
        ("Patient reference", record.patient_ref),
        ("Product", record.product),
        ("Process", f"{record.process_title} ({record.process_key}, version {record.process_version})"),
        ("Process SHA-256", para(record.process_sha256, MONO)),
        ("State", record.state),
        ("Started", f"{format_utc(record.started_at)} by {record.started_by}"),
    ], TEXT_WIDTH - QR_SIZE)
    qr = Table([[QrFlowable(qr_payload(digest), QR_SIZE)], [para("Scan to verify this copy", SMALL)]],
               colWidths=(QR_SIZE,), style=TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 0),
                                                       ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    identity = Table([[details, qr]], colWidths=(TEXT_WIDTH - QR_SIZE, QR_SIZE),
                     style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                       ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    return [
        para("Executed batch record", TITLE),
        para(record.facility_name, SMALL),
        Spacer(0, 3 * MM),
        identity,
        para("Record digest (SHA-256)", LABEL),
        para(digest, MONO),
        Spacer(0, 2 * MM),
        para(LEGEND, SMALL),
    ]


# --- steps -------------------------------------------------------------------------------------


def _value_text(field: FieldRecord, version: ValueVersion) -> str:
    text = format_recorded(version.text, field.type, version.unit)
    return f"{text} ({version.item})" if version.item else text


def _history(field: FieldRecord) -> list[Flowable]:
    lines: list[Flowable] = [para(CHANGED, FLAG)]
    for number, version in enumerate(field.versions):
        out = " (out of limit)" if version.out_of_limit else ""
        if version.reason is None:
            text = f"Original entry: {_value_text(field, version)}{out}, recorded by {version.recorded_by} at " \
                   f"{format_utc(version.recorded_at)}."
        else:
            text = f"Correction {number}: changed to {_value_text(field, version)}{out} by {version.recorded_by} " \
                   f"at {format_utc(version.recorded_at)}. Reason: {version.reason}"
        lines.append(para(text, LINE))
    return lines


def _check(current: ValueVersion | None, limit: str) -> list[Flowable]:
    if current is None or not limit:
        return [para("—", SMALL)]
    if current.out_of_limit:
        return [para("OUT OF LIMIT", FLAG), *([para(current.message, TINY)] if current.message else [])]
    return [para("in limit", SMALL)]


def _field_row(field: FieldRecord) -> list[Flowable | list[Flowable]]:
    name = f"{field.label}\n({KINDS[field.kind]})" if field.kind in KINDS else field.label
    current = field.current
    value: list[Flowable] = [para(_value_text(field, current) if current else "not recorded", SMALL)]
    if field.changed:
        value += _history(field)
    return [para(name, SMALL), value, para(field.limit or "—", SMALL), _check(current, field.limit)]


def _entry(entry: EntryRecord) -> list[Flowable]:
    rows = [_field_row(field) for field in entry.fields]
    flagged = [i for i, field in enumerate(entry.fields) if field.current and field.current.out_of_limit]
    for derived in entry.derived:
        if derived.out_of_limit:
            flagged.append(len(rows))
        text = f"{derived.text} {derived.unit}" if derived.text and derived.unit else derived.text
        check = [para("OUT OF LIMIT", FLAG)] if derived.out_of_limit else [para("in limit" if derived.limit else "—",
                                                                            SMALL)]
        rows.append([para(f"{derived.label} (computed)", SMALL), para(text or "not computed", SMALL),
                     para(derived.limit or "—", SMALL), check])
    flowables: list[Flowable] = [
        para(f"Entry {entry.occurrence}: performed by {entry.performed_by} at {format_utc(entry.performed_at)}", ENTRY),
        grid_table(("Field", "Value", "Limit", "Check"), rows, column_widths(26, 46, 14, 14), flagged=flagged),
    ]
    if entry.comment:
        flowables.append(para(f"Comment: {entry.comment}", LINE))
    if entry.original_file:
        flowables.append(para(f"Original instrument record: {entry.original_file.filename}, "
                            f"SHA-256 {entry.original_file.sha256}", LINE))
    flowables += signature_paragraphs(entry.signatures)
    if entry.awaiting_verification:
        flowables.append(para("Awaiting verification by a second person.", FLAG))
    return flowables


def _steps(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [para("Steps", HEADING)]
    for number, step in enumerate(record.steps, start=1):
        verify = " (second-person verification)" if step.verify else ""
        flowables.append(para(f"{number}. {step.title}{verify}", SUBHEADING))
        if not step.entries:
            flowables.append(para("Not recorded.", BODY))
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
    return [KeepTogether([Spacer(0, 2 * MM), para("Expansion chart", ENTRY), expansion_drawing(chart, TEXT_WIDTH),
                          para(caption, SMALL)])]


# --- containers and custody ----------------------------------------------------------------------


def _materials(record: BatchRecordData) -> list[Flowable]:
    """Each lot with its release status and the quantity taken; each instrument with its
    calibration status on the days of use (21 CFR 211.188(b)(3), 211.182)."""
    flowables: list[Flowable] = [para("Materials and equipment used", HEADING), para("Material lots", SUBHEADING)]
    if not record.lots:
        flowables.append(para("No material lot recorded.", BODY))
    else:
        rows = [[[para(lot.code, SMALL), para(f"lot {lot.lot_number}", TINY)], para(f"{lot.name} ({lot.supplier})", SMALL),
                 para(lot.expiry.isoformat(), SMALL), para(lot.status, SMALL), para(lot.quantity, SMALL),
                 para(", ".join(lot.steps), SMALL)] for lot in record.lots]
        flagged = [i for i, lot in enumerate(record.lots) if "RECALLED" in lot.status or "REJECTED" in lot.status]
        flowables.append(grid_table(("Lot", "Material", "Expiry", "Release status", "Used by this batch", "Steps"),
                                rows, column_widths(21, 17, 11, 24, 11, 16), flagged=flagged))
    flowables.append(para("Equipment", SUBHEADING))
    if not record.equipment:
        flowables.append(para("No equipment recorded.", BODY))
        return flowables
    rows = [[para(item.code, SMALL), para(item.name, SMALL), para(item.calibration, SMALL), para(", ".join(item.steps), SMALL)]
            for item in record.equipment]
    flagged = [i for i, item in enumerate(record.equipment) if "OVERDUE" in item.calibration]
    flowables.append(grid_table(("Code", "Equipment", "Calibration when used", "Steps"), rows,
                            column_widths(18, 22, 40, 20), flagged=flagged))
    return flowables


def _containers(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [para("Containers and labels", HEADING)]
    if not record.containers:
        flowables.append(para("No container yet.", BODY))
    else:
        rows = [[para(c.code, SMALL), para(c.title, SMALL), para(c.volume or "—", SMALL), para(c.status, SMALL),
                 para(c.location or "—", SMALL),
                 para("; ".join([f"printed {c.labels_printed}", *(f"reprint: {r}" for r in c.reprints)]), SMALL)]
                for c in record.containers]
        flowables.append(grid_table(("Code", "Container", "Volume", "Status", "Location", "Labels"), rows,
                                column_widths(19, 16, 9, 11, 20, 25)))
        flowables += _bags(record)
    flowables.append(para("Custody timeline", SUBHEADING))
    if not record.custody:
        flowables.append(para("No hand-off recorded.", BODY))
        return flowables
    rows = []
    for event in record.custody:
        where = " → ".join(x for x in (event.from_location, event.to_location) if x) or "—"
        result = [para("match", SMALL)] if event.matched else [para("MISMATCH", FLAG), para(event.message, TINY)]
        rows.append([para(format_utc(event.occurred_at), SMALL), para(event.container or "—", SMALL),
                     para(f"{event.event} ({event.step})" if event.step else event.event, SMALL),
                     para(event.scanned, SMALL), para(where, SMALL), para(event.actor, SMALL), result])
    flagged = [i for i, event in enumerate(record.custody) if not event.matched]
    flowables.append(grid_table(("When", "Container", "Hand-off", "Scanned", "Where", "By", "Result"), rows,
                            column_widths(15, 17, 16, 17, 14, 11, 10), flagged=flagged))
    return flowables


def _bags(record: BatchRecordData) -> list[Flowable]:
    """The product bags as their labels print them: cells, dose per kg with the weight, fill and expiry."""
    rows = [[para(c.title, SMALL), para(c.code, SMALL), para(c.volume or "—", SMALL), para(format_number(b.cells), SMALL),
             para(f"{format_quantity(b.per_kg, 'cells/kg')} ({format_weight(b.weight_kg)})", SMALL),
             para(format_utc(b.filled_at), SMALL), para(format_utc(b.expires_at) if b.expires_at else "not set", SMALL)]
            for c in record.containers if (b := c.contents) is not None]
    if not rows:
        return []
    return [para("Product bags", SUBHEADING),
            grid_table(("Bag", "Code", "Volume", "CAR+ viable T cells", "Dose", "Filled", "Expires"), rows,
                   column_widths(13, 20, 9, 12, 18, 14, 14))]


# --- deviations, release results, decisions ----------------------------------------------------------


def _deviation(deviation: DeviationRecord) -> list[Flowable]:
    facts = fact_table([
        ("Status", deviation.status),
        ("Opened by", deviation.source),
        ("Opened", done_by(deviation.opened_by, deviation.opened_at)),
        ("Description", deviation.description),
        ("Classification", deviation.classification or "not classified"),
        ("Root cause", deviation.root_cause or ""),
        ("Impact", deviation.impact or ""),
        ("Corrective action", deviation.corrective_action or ""),
        ("Preventive action", deviation.preventive_action or ""),
        ("Investigated", done_by(deviation.investigated_by, deviation.investigated_at)),
        ("Closed", done_by(deviation.closed_by, deviation.closed_at)),
    ], TEXT_WIDTH)
    none = "Not signed (open)." if deviation.status == "open" else "Not signed."
    return [para(f"Deviation {deviation.number}: {deviation.title}", SUBHEADING), facts,
            *signature_paragraphs(deviation.signatures, none)]


def _deviations(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [para("Deviations", HEADING)]
    if not record.deviations:
        return [*flowables, para("No deviation.", BODY)]
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
    lines: list[Flowable] = [para(f"{_result_text(result, test)}: {VERDICTS.get(result.verdict, result.verdict)}"
                                f"{final}{judged} — {result.recorded_by}, {format_utc(result.recorded_at)}{late}",
                                SMALL)]
    if result.reason is not None:
        lines += [para(CHANGED, FLAG), para(f"Correction. Reason: {result.reason}", TINY)]
    if result.superseded:
        lines.append(para("SUPERSEDED by the correction below.", FLAG))
    if result.comment:
        lines.append(para(f"Comment: {result.comment}", TINY))
    lines += [para(signature_line(s), TINY) for s in result.signatures]
    return lines


def _test_row(test: ReleaseTestRecord) -> list[Flowable | list[Flowable]]:
    results = [f for result in test.results for f in _result(result, test)] or [para("—", SMALL)]
    return [[para(test.title, SMALL_BOLD), para(test.method, TINY)], para(test.specification, SMALL), results,
            para(VERDICTS.get(test.status, test.status), SMALL_BOLD)]


def _release(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [para("Release results against specifications", HEADING)]
    if not record.release_tests:
        return [*flowables, para("The process defines no release test.", BODY)]
    flagged = [i for i, test in enumerate(record.release_tests) if test.status == "fail"]
    flowables.append(grid_table(("Test", "Specification", "Results, oldest first", "Verdict"),
                            [_test_row(test) for test in record.release_tests], column_widths(18, 20, 48, 14),
                            flagged=flagged))
    return flowables


def _decision(decision: DecisionRecord) -> list[Flowable]:
    facts = fact_table([
        ("Decided", done_by(decision.decided_by, decision.decided_at)),
        ("Reason", decision.reason or ""),
        ("Treating physician", decision.physician_name or ""),
        ("Physician's request", decision.physician_request or ""),
        ("Risk assessment", decision.risk_assessment or ""),
        ("Physician's confirmation", decision.physician_confirmation or ""),
        ("Record digest at the decision", para(f"sha256 {decision.record_sha256}", MONO)),
    ], TEXT_WIDTH)
    return [para(f"{decision.title}: {decision.state_before} → {decision.state_after}", SUBHEADING), facts,
            *signature_paragraphs(decision.signatures)]


def _decisions(record: BatchRecordData) -> list[Flowable]:
    flowables: list[Flowable] = [para("Disposition", HEADING)]
    if not record.decisions:
        return [*flowables, para("No QA decision yet.", BODY)]
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
    flowables: list[Flowable] = [PageBreak(), para(f"Appendix: audit trail of batch {record.batch_number} "
                                                 f"({len(record.audit)} entries)", HEADING)]
    flowables.append(para(_trail_review(record.trail_review), BODY))
    if not record.audit:
        return [*flowables, para("No entry.", BODY)]
    rows = [[para(str(e.id), TINY), para(format_utc(e.occurred_at), TINY), para(e.actor, TINY), para(e.action, TINY),
             para(f"{e.operation} {e.table} {e.row}", TINY), para(_change(e), TINY), para(e.reason or "", TINY)]
            for e in record.audit]
    flowables.append(grid_table(("#", "When", "Who", "Action", "Record", "Change", "Reason"), rows,
                            column_widths(5, 12, 9, 11, 12, 37, 14), text=TINY))
    return flowables


# --- the document ----------------------------------------------------------------------------------


def _story(record: BatchRecordData, digest: str) -> list[Flowable]:

    return [*_header(record, digest), *_steps(record), *_materials(record), *_containers(record), *_deviations(record),
            *_release(record), *_decisions(record), *distribution_section(record.distribution), *_appendix(record)]


def _footer(record: BatchRecordData, digest: str, issue: Issue) -> Footer:
    issued = f"Executed batch record {record.batch_number}. {issue.verb} by {clean(issue.issued_to)} at " \
             f"{format_utc(issue.issued_at)}"
    return digest_footer(f"Record digest SHA-256 {digest}", issued, font=SANS, size=FOOTER_SIZE)


def render_record(record: BatchRecordData, issue: Issue, digest: str | None = None) -> bytes:
    """The executed batch record as an A4 PDF, its digest (``labels.digest``) on every page.
    ``digest`` is the record's digest when the caller has worked it out already (a snapshot).

    Raises UnprintableText for characters the fonts lack.
    """
    digest = digest or record_digest(record)
    return render_counted(lambda: _story(record, digest), _footer(record, digest, issue),
                          title=f"Executed batch record {record.batch_number}", author=clean(record.facility_name),
                          bottom_margin=PAGE_MARGIN + 4 * MM)
