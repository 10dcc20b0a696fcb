"""The certificate of analysis of one batch, as an A4 PDF.

What QA signs: the product (fill, expiry, bags with their volume and CAR+ viable T cells,
the dose per kg and the weight it was counted for), every release result against its
specification, the batch's deviations with their classification and closure, who recorded
the QC results, the disposition with its signature, and a statement when release relied on
an interim result. Every value is written by ``workflows.formatting``, as on the bag labels
and in the executed batch record. Every verdict is printed as a word (PASS, FAIL, PENDING),
never as colour alone. The document is built twice: the first pass counts the pages so that
every footer can say "Page X of Y". Output is byte-reproducible (``invariant``).
"""

from __future__ import annotations

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Paragraph, Spacer, Table, TableStyle

from labels.data import CoaBag, CoaData, CoaDeviation, CoaResult, ResultStatus, SignatureData
from labels.document import LEFT, PAGE_MARGIN, RIGHT, TEXT_WIDTH, Footer, QrFlowable, paragraph, render_counted
from labels.layout import MM
from labels.text import SANS, SANS_BOLD, clean
from workflows.formatting import format_date, format_datetime, format_number, format_quantity, format_utc, format_weight

CELL_PADDING = 3
FOOTER_SIZE = 7.5
QR_SIZE = 25 * MM
# Test, method, specification, result, verdict, analyst, date; wide enough that a date or
# "PENDING" is never split across lines.
RESULT_SHARES = (29, 23, 33, 24, 18, 23, 20)
RESULT_COLUMNS = tuple(TEXT_WIDTH * share / sum(RESULT_SHARES) for share in RESULT_SHARES)
BAG_SHARES = (14, 30, 18, 38)  # bag n of m, code, volume, CAR+ viable T cells
DEVIATION_SHARES = (18, 36, 16, 30)  # number, title, classification, closure
HEADER_ROW = colors.Color(0.9, 0.9, 0.9)

BODY = ParagraphStyle("coa-body", fontName=SANS, fontSize=9, leading=11.5, embeddedHyphenation=1)
SMALL = ParagraphStyle("coa-small", parent=BODY, fontSize=8, leading=10)
SMALL_BOLD = ParagraphStyle("coa-small-bold", parent=SMALL, fontName=SANS_BOLD)
LABEL = ParagraphStyle("coa-label", parent=BODY, fontName=SANS_BOLD)
TITLE = ParagraphStyle("coa-title", parent=BODY, fontName=SANS_BOLD, fontSize=16, leading=20, spaceAfter=2)
HEADING = ParagraphStyle(
    "coa-heading", parent=BODY, fontName=SANS_BOLD, fontSize=11, leading=14, spaceBefore=8, spaceAfter=4
)
NOTICE = ParagraphStyle("coa-notice", parent=BODY, fontName=SANS_BOLD, fontSize=10, leading=13, spaceBefore=4)

VERDICTS = {ResultStatus.PASS: "PASS", ResultStatus.FAIL: "FAIL", ResultStatus.PENDING: "PENDING"}


def _text(text: str, style: ParagraphStyle = BODY) -> Paragraph:
    return paragraph(text, style)


def _grid(header: tuple[str, ...], rows: list[list[Paragraph]], shares: tuple[int, ...]) -> Table:
    style = [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), HEADER_ROW),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), CELL_PADDING),
        ("RIGHTPADDING", (0, 0), (-1, -1), CELL_PADDING),
    ]
    widths = tuple(TEXT_WIDTH * share / sum(shares) for share in shares)
    return Table([[_text(title, SMALL_BOLD) for title in header], *rows], colWidths=widths, repeatRows=1,
                 style=TableStyle(style))


def _facts(rows: list[tuple[str, str]]) -> Table:
    return Table(
        [[_text(name, LABEL), _text(value)] for name, value in rows],
        colWidths=(34 * MM, TEXT_WIDTH - 34 * MM),
        style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (0, -1), 0)]),
        hAlign="LEFT",
    )


def dose_text(coa: CoaData) -> str:
    """``1.00 × 10⁶ cells/kg (CAR+ viable T cells per kg of a patient weight of 64.5 kg)``; empty without a dose."""
    if coa.dose_per_kg is None or coa.weight_kg is None:
        return ""
    return (f"{format_quantity(coa.dose_per_kg, 'cells/kg')} (CAR+ viable T cells per kg of a patient weight of "
            f"{format_weight(coa.weight_kg)})")


def _bag_row(bag: CoaBag) -> list[Paragraph]:
    return [
        _text(f"{bag.number} of {bag.count}", SMALL),
        _text(bag.code, SMALL),
        _text(format_quantity(bag.volume_ml, "mL") if bag.volume_ml is not None else "—", SMALL),
        _text(format_number(bag.cells) if bag.cells is not None else "—", SMALL),
    ]


def product_section(coa: CoaData) -> list[Flowable]:
    flowables: list[Flowable] = [_text("Product", HEADING)]
    if not coa.bags:
        return [*flowables, _text("No product bag has been filled yet.", NOTICE)]
    if coa.expires_at is not None:
        expiry = format_datetime(coa.expires_at)
    else:
        expiry = f"not set: version {coa.process_version} of the process defines no shelf life"
    facts = [
        ("Filled", format_datetime(coa.filled_at) if coa.filled_at else "—"),
        ("Expires", expiry),
        ("Number of bags", str(len(coa.bags))),
        ("Dose", dose_text(coa) or "not computed: no CAR+ T-cell concentration or patient weight recorded"),
    ]
    header = ("Bag", "Code", "Volume", "CAR+ viable T cells")
    return [*flowables, _facts(facts), Spacer(0, 2 * MM),
            _grid(header, [_bag_row(bag) for bag in coa.bags], BAG_SHARES)]


def _identity(coa: CoaData) -> Table:
    rows = [
        ("Batch number", coa.batch_number),
        ("COI", coa.coi),
        ("Product", coa.product),
        ("Patient reference", coa.patient_ref),
        ("Process", f"{coa.process_key}, version {coa.process_version}"),
    ]
    details = Table(
        [[_text(name, LABEL), _text(value)] for name, value in rows],
        colWidths=(34 * MM, TEXT_WIDTH - QR_SIZE - 34 * MM),
        style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (0, -1), 0)]),
    )
    return Table(
        [[details, QrFlowable(coa.batch_number, QR_SIZE)]],
        colWidths=(TEXT_WIDTH - QR_SIZE, QR_SIZE),
        style=TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ]
        ),
    )


def _result_row(result: CoaResult) -> list[Paragraph]:
    return [
        _text(result.test, SMALL),
        _text(result.method, SMALL),
        _text(result.specification, SMALL),
        _text(result.result or "—", SMALL),
        _text(VERDICTS[result.status], SMALL_BOLD),
        _text(result.analyst or "—", SMALL),
        _text(format_date(result.tested_on) if result.tested_on else "—", SMALL),
    ]


def _results(coa: CoaData) -> list[Flowable]:
    if not coa.results:
        return [_text("No release test results have been recorded.", NOTICE)]
    header = [
        _text(title, SMALL_BOLD)
        for title in ("Test", "Method", "Specification", "Result", "Verdict", "Analyst", "Date")
    ]
    style = [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.9, 0.9, 0.9)),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), CELL_PADDING),
        ("RIGHTPADDING", (0, 0), (-1, -1), CELL_PADDING),
    ]
    style += [
        ("BACKGROUND", (0, row), (-1, row), colors.Color(1, 0.88, 0.88))
        for row, result in enumerate(coa.results, start=1)
        if result.status is ResultStatus.FAIL
    ]
    table = Table(
        [header, *(_result_row(result) for result in coa.results)],
        colWidths=RESULT_COLUMNS,
        repeatRows=1,
        style=TableStyle(style),
    )
    flowables: list[Flowable] = [table]
    pending = [result.test for result in coa.results if result.status is ResultStatus.PENDING]
    if pending:
        flowables.append(
            _text(
                f"{len(pending)} of {len(coa.results)} results pending: {', '.join(pending)}. "
                "This certificate is not final until every result is in.",
                NOTICE,
            )
        )
    if coa.released_on_interim:
        flowables.append(_text(interim_statement(coa), NOTICE))
    return flowables


def interim_statement(coa: CoaData) -> str:
    """What a release on an interim result must say: which results, and that the final ones follow."""
    interim = "; ".join(f"{result.test}: {result.result}" for result in coa.results if result.interim)
    return (f"This batch was released on an interim result ({interim}). The final result follows: it is "
            "recorded after release, and a result out of specification puts the batch on hold.")


def _closure(deviation: CoaDeviation) -> str:
    if deviation.closed_by is not None and deviation.closed_at is not None:
        return f"Closed by {deviation.closed_by} at {format_utc(deviation.closed_at)}"
    return f"Not closed ({deviation.status})"


def _deviations(coa: CoaData) -> list[Flowable]:
    flowables: list[Flowable] = [_text("Deviations", HEADING)]
    if not coa.deviations:
        return [*flowables, _text("No deviation was opened for this batch.")]
    rows = [[_text(d.number, SMALL), _text(d.title, SMALL), _text(d.classification or "not classified", SMALL),
             _text(_closure(d), SMALL)] for d in coa.deviations]
    return [*flowables, _grid(("Deviation", "Title", "Classification", "Closure"), rows, DEVIATION_SHARES)]


def _qc_review(coa: CoaData) -> list[Flowable]:
    """Who stands behind the results. CellTrail keeps no separate signature for a review of
    QC results: the analysts sign each result, QA reviews them with the record (Disposition)."""
    flowables: list[Flowable] = [_text("QC results recorded by", HEADING)]
    if not coa.qc_analysts:
        return [*flowables, _text("No QC result has been recorded.")]
    return [*flowables, _text(
        f"Recorded and signed (meaning: performed) by {', '.join(coa.qc_analysts)}. No separate QC review "
        "signature is kept: QA reviews the results with the batch record before the disposition decision.")]


def signature_text(signature: SignatureData | None) -> str:
    if signature is None:
        return "Not signed."
    return f"Signed by {signature.printed_name}. Meaning: {signature.meaning}. Signed at {format_utc(signature.signed_at)}."


def _disposition(coa: CoaData) -> list[Flowable]:
    flowables: list[Flowable] = [_text("Disposition", HEADING)]
    if coa.disposition is None:
        flowables.append(_text("Disposition: not yet decided. This batch has not been released.", NOTICE))
    else:
        flowables.append(_text(f"Disposition: {coa.disposition}", NOTICE))
        flowables.append(_text(signature_text(coa.disposition_signature)))
    if coa.exceptional_release_notes:
        flowables.append(_text("Exceptional release", HEADING))
        flowables.append(_text(coa.exceptional_release_notes))
    return flowables


def _story(coa: CoaData) -> list[Flowable]:
    return [
        _text("Certificate of Analysis", TITLE),
        _text("\n".join((coa.facility_name, *coa.facility_address)), SMALL),
        Spacer(0, 4 * MM),
        _identity(coa),
        *product_section(coa),
        _text("Release test results", HEADING),
        *_results(coa),
        *_deviations(coa),
        *_qc_review(coa),
        *_disposition(coa),
    ]


def _footer(coa: CoaData) -> Footer:
    generated = f"Certificate of analysis {coa.batch_number}, generated {format_utc(coa.generated_at)}"
    downloaded = (
        f"Downloaded by {clean(coa.downloaded_by)} at {format_utc(coa.generated_at)}" if coa.downloaded_by else None
    )

    def draw(canvas: Canvas, page: int, total: int) -> None:
        canvas.setFont(SANS, FOOTER_SIZE)
        y = PAGE_MARGIN / 2
        canvas.drawString(LEFT, y, generated)
        canvas.drawRightString(RIGHT, y, f"Page {page} of {total}")
        if downloaded:
            canvas.drawString(LEFT, y - FOOTER_SIZE * 1.3, downloaded)

    return draw


def render_coa(coa: CoaData) -> bytes:
    """The certificate of analysis as an A4 PDF. Raises UnprintableText for characters the font lacks."""
    return render_counted(lambda: _story(coa), _footer(coa), title=f"Certificate of analysis {coa.batch_number}",
                          author=clean(coa.facility_name))
