"""The validation report of one test run as an A4 PDF (issue 16, item 6; 21 CFR 11.10(a), EU GMP
Annex 11 §4): plain data in, PDF bytes out.

The first page says when the run was, which version it tested (the git commit), in which
environment (Python, database, package versions), the counts, and every gap (a requirement
without a passing test) by ID and text, or "No gaps"; then the traceability matrix: each
requirement with its status and its tests. Parametrised cases of one test function are one
line with their outcomes counted (the CSV lists every case).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, PageBreak, Spacer

from labels.data import check_aware
from labels.document import LEFT, PAGE_MARGIN, RIGHT, TEXT_WIDTH, Footer, render_counted
from labels.layout import MM
from labels.tables import (
    BODY,
    FLAG,
    HEADING,
    LINE,
    SMALL,
    SMALL_BOLD,
    TITLE,
    column_widths,
    fact_table,
    grid_table,
    para,
)
from labels.text import SANS
from workflows.formatting import format_utc

#: A requirement's status: passed (tests, all passed), failed (a test failed or errored), gap (no
#: passing test), procedural (the lab's own procedure: no test can show it).
STATUSES = ("passed", "failed", "gap", "procedural")
PLURALS = {"passed": "passed", "failed": "failed", "gap": "gaps", "procedural": "procedural"}
OUTCOMES = ("passed", "failed", "skipped", "error")
FOOTER_SIZE = 7


@dataclass(frozen=True)
class TracedTest:
    nodeid: str
    outcome: str  # one of OUTCOMES


@dataclass(frozen=True)
class TraceRow:
    """One requirement of the matrix and the tests that claim to demonstrate it."""

    id: str
    source: str
    text: str
    status: str  # one of STATUSES
    tests: tuple[TracedTest, ...] = ()
    procedural: str = ""  # why software cannot demonstrate it


@dataclass(frozen=True)
class ValidationReportData:
    started_at: datetime
    finished_at: datetime
    commit: str
    python: str
    platform: str
    database: str  # the dialect and its server version
    packages: tuple[tuple[str, str], ...]
    test_outcomes: tuple[str, ...]  # every test of the run, marked or not
    rows: tuple[TraceRow, ...]
    unknown: tuple[tuple[str, tuple[str, ...]], ...] = ()  # an ID no requirement has, and the tests using it

    def __post_init__(self) -> None:
        check_aware("The run's times", self.started_at, self.finished_at)
        bad = {row.status for row in self.rows} - set(STATUSES)
        bad |= {test.outcome for row in self.rows for test in row.tests} - set(OUTCOMES)
        bad |= set(self.test_outcomes) - set(OUTCOMES)
        if bad:
            raise ValueError(f"Unknown status or outcome: {', '.join(sorted(bad))}.")

    def with_status(self, status: str) -> tuple[TraceRow, ...]:
        return tuple(row for row in self.rows if row.status == status)


def counted(outcomes: Sequence[str]) -> str:
    """"3 passed, 1 skipped", in the order of OUTCOMES; "not run" for none."""
    counts = Counter(outcomes)
    return ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o]) or "not run"


def by_function(tests: Sequence[TracedTest]) -> list[tuple[str, list[str]]]:
    """Tests grouped by test function (a node ID without its parameters), in order, with their outcomes."""
    groups: dict[str, list[str]] = {}
    for test in tests:
        groups.setdefault(test.nodeid.split("[", 1)[0], []).append(test.outcome)
    return list(groups.items())


def _summary(data: ValidationReportData) -> list[Flowable]:
    statuses = Counter(row.status for row in data.rows)
    gaps = data.with_status("gap")
    failed = data.with_status("failed")
    flowables: list[Flowable] = [
        para("Validation report: requirements traced to tests", TITLE),
        para("CellTrail — 21 CFR 11.10(a), EU GMP Annex 11 §4", SMALL),
        Spacer(0, 3 * MM),
        fact_table([
            ("Run", f"{format_utc(data.started_at)} to {format_utc(data.finished_at)}"),
            ("Version (git commit)", data.commit),
            ("Python", f"{data.python} on {data.platform}"),
            ("Database", data.database),
            ("Packages", ", ".join(f"{name} {version}" for name, version in data.packages)),
            ("Requirements", f"{len(data.rows)}: " + ", ".join(f"{statuses[s]} {PLURALS[s]}" for s in STATUSES)),
            ("Tests", f"{len(data.test_outcomes)}: {counted(data.test_outcomes)}"),
        ], TEXT_WIDTH),
        para("Gaps: requirements without a passing test", HEADING),
    ]
    flowables += [para(f"{row.id} — {row.text}", FLAG) for row in gaps] or [para("No gaps.", BODY)]
    if failed:
        flowables += [para("Failed: requirements with a failing test", HEADING),
                      *(para(f"{row.id} — {row.text}", FLAG) for row in failed)]
    if data.unknown:
        flowables += [para("Errors: requirement IDs the tests use that the list does not have", HEADING),
                      *(para(f"{rid}: {', '.join(nodeids)}", FLAG) for rid, nodeids in data.unknown)]
    procedural = data.with_status("procedural")
    if procedural:
        flowables += [para("Procedural requirements (the lab's SOPs)", HEADING),
                      para(", ".join(row.id for row in procedural) + ": see the matrix and the README.", SMALL)]
    return flowables


def _tests_cell(row: TraceRow) -> list[Flowable]:
    if row.status == "procedural":
        return [para(f"Procedural (lab's SOP): {row.procedural}", SMALL)]
    if not row.tests:
        return [para("No test.", LINE)]
    return [para(f"{name}: {counted(outcomes)}", LINE) for name, outcomes in by_function(row.tests)]


def _matrix(data: ValidationReportData) -> list[Flowable]:
    rows = [[para(row.id, SMALL_BOLD), [para(row.text, SMALL), para(row.source, LINE)],
             para(row.status.upper(), FLAG if row.status in ("failed", "gap") else SMALL), _tests_cell(row)]
            for row in data.rows]
    flagged = [i for i, row in enumerate(data.rows) if row.status in ("failed", "gap")]
    return [para("Traceability matrix", HEADING),
            grid_table(("ID", "Requirement and source", "Status", "Tests (outcomes)"), rows,
                   column_widths(11, 35, 13, 50), flagged=flagged)]


def _footer(data: ValidationReportData) -> Footer:
    def draw(canvas: Canvas, page: int, total: int) -> None:
        canvas.setFont(SANS, FOOTER_SIZE)
        y = PAGE_MARGIN / 2
        canvas.drawString(LEFT, y, f"CellTrail validation report — commit {data.commit} — "
                                   f"run of {format_utc(data.started_at)}")
        canvas.drawRightString(RIGHT, y, f"Page {page} of {total}")

    return draw


def render_validation_report(data: ValidationReportData) -> bytes:
    """The report as PDF bytes, byte-reproducible for the same data."""
    return render_counted(lambda: [*_summary(data), PageBreak(), *_matrix(data)], _footer(data),
                          title="CellTrail validation report", author="CellTrail")
