"""QA review by exception: what in a batch's record needs a QA eye, section by section.

Everything else (conforming values, on-time steps, signed and verified entries, results in
specification) was checked by the system as it was entered; the full record stays one
click away. A section is one function that lists the exceptions of one kind: adding a
kind of exception means adding one function to SECTIONS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from sqlalchemy import select

from lab.extensions import db
from lab.models import Batch, CustodyEvent, LabelPrint, QcResult, StepValue
from lab.services.deviations import SOURCES
from lab.services.progress import BatchOverview, batch_overview
from lab.services.release_status import as_current, current_results, release_basis, result_flags, signature_gaps
from workflows.model import ReleaseTestSpec
from workflows.release import FAIL, pending


@dataclass(frozen=True)
class Link:
    """Where an exception is in the full record: an endpoint, its URL values and an anchor."""

    endpoint: str
    values: dict[str, str]
    anchor: str | None = None


@dataclass(frozen=True)
class ReviewItem:
    text: str
    link: Link
    detail: str = ""
    by: str = ""
    at: datetime | None = None


@dataclass
class ReviewSection:
    key: str
    title: str
    items: list[ReviewItem] = field(default_factory=list)


@dataclass
class Review:
    overview: BatchOverview
    sections: list[ReviewSection]

    @property
    def count(self) -> int:
        return sum(len(section.items) for section in self.sections)


def review_batch(batch: Batch) -> Review:
    """Every exception of ``batch``'s record, by kind (SECTIONS), in record order."""
    overview = batch_overview(batch)
    return Review(overview, [ReviewSection(key, title, builder(overview)) for key, title, builder in SECTIONS])


def _on_batch_page(overview: BatchOverview, anchor: str) -> Link:
    return Link("batches.detail", {"batch_number": overview.batch.batch_number}, anchor)


def _results_link(overview: BatchOverview, result: QcResult) -> Link:
    return Link("quality.results", {"batch_number": overview.batch.batch_number}, f"result-{result.id}")


def _test_titles(overview: BatchOverview) -> dict[str, ReleaseTestSpec]:
    return {t.key: t for t in overview.definition.release_tests}


def _shown(result: QcResult) -> str:
    return f"{result.text} {result.unit}" if result.unit else result.text


BEFORE_RELEASE_WORDS = {"final": "the final result is needed before release",
                        "interim": "an interim result is needed before release; the final may follow",
                        "none": "may follow release"}


def out_of_limit(overview: BatchOverview) -> list[ReviewItem]:
    """Values recorded or computed outside their acceptance limits, and measured results
    further from the value computed from the batch record than the test allows."""
    items = []
    for step_view in overview.steps:
        for entry_view in step_view.entries:
            entry = entry_view.entry
            flagged = [v.current.message for v in entry_view.values if v.current and v.current.out_of_limit]
            flagged += [d.message for d in entry_view.derived.values() if d.out_of_limit]
            items += [ReviewItem(message, _on_batch_page(overview, f"entry-{entry.id}"),
                                 f"Comment: {entry.comment}" if entry.comment else "",
                                 entry.performed_by.full_name, entry.performed_at) for message in flagged]
    return items + _results_far_from_computed(overview)


def _results_far_from_computed(overview: BatchOverview) -> list[ReviewItem]:
    """Measured results (the dose) further from the value computed from the batch record than
    the test's tolerance."""
    by_id = {r.id: r for r in overview.batch.results}
    current = {r.id for r in current_results(overview.batch).values()}
    items = []
    for test in overview.definition.release_tests:
        if test.computed is None:
            continue
        flags = result_flags(overview.batch, test, release_basis(overview.batch, test, overview.definition))
        items += [ReviewItem(flag, _results_link(overview, by_id[result_id]),
                             "current result" if result_id in current else "corrected since",
                             by_id[result_id].recorded_by.full_name, by_id[result_id].recorded_at)
                  for result_id, flag in flags.items()]
    return items


def corrections(overview: BatchOverview) -> list[ReviewItem]:
    """Every correction of a step value or a QC result, with its reason."""
    items = []
    for step_view in overview.steps:
        for entry_view in step_view.entries:
            for value_view in entry_view.values:
                for old, new in _pairs(value_view.history, value_view.current):
                    text = f"{step_view.spec.title}: {value_view.spec.label} {old.text} → {new.text}"
                    items.append(ReviewItem(text, _on_batch_page(overview, f"entry-{entry_view.entry.id}"),
                                            f"Reason: {new.reason}", new.recorded_by.full_name, new.recorded_at))
    tests = _test_titles(overview)
    by_id = {r.id: r for r in overview.batch.results}
    for result in overview.batch.results:
        if result.supersedes_id is not None:
            replaced = by_id[result.supersedes_id]
            text = f"{tests[result.test_key].title}: {_shown(replaced)} → {_shown(result)}"
            items.append(ReviewItem(text, _results_link(overview, result), f"Reason: {result.reason}",
                                    result.recorded_by.full_name, result.recorded_at))
    return items


def _pairs(history: list[StepValue], current: StepValue | None) -> list[tuple[StepValue, StepValue]]:
    """(superseded value, the value that corrected it) along a value's history."""
    chain = [*history, current] if current is not None else list(history)
    return [(old, new) for old, new in pairwise(chain) if new.is_correction]


def deviations(overview: BatchOverview) -> list[ReviewItem]:
    """Every deviation, open or closed, with its classification and status."""
    return [ReviewItem(f"{d.number}: {d.title}", Link("deviations.detail", {"number": d.number}),
                       f"{SOURCES.get(d.source, d.source)} · {d.classification or 'not classified'} · "
                       f"{'OPEN' if d.is_open else 'closed'}", d.opened_by.full_name, d.opened_at)
            for d in overview.batch.deviations]


def oos_results(overview: BatchOverview) -> list[ReviewItem]:
    """Every result out of specification, including those corrected since."""
    tests = _test_titles(overview)
    current = {r.id for r in current_results(overview.batch).values()}
    return [ReviewItem(r.message, _results_link(overview, r),
                       "current result" if r.id in current else "corrected since",
                       r.recorded_by.full_name, r.recorded_at)
            for r in overview.batch.results if r.verdict == FAIL and r.test_key in tests]


def late_entries(overview: BatchOverview) -> list[ReviewItem]:
    """Steps recorded outside their time window, and results recorded after release."""
    items = [ReviewItem(d.title, _on_batch_page(overview, f"entry-{d.entry_id}"), d.description,
                        d.opened_by.full_name, d.opened_at)
             for d in overview.batch.deviations if d.source == "window"]
    tests = _test_titles(overview)
    items += [ReviewItem(f"{tests[r.test_key].title}: {_shown(r)} recorded after release", _results_link(overview, r),
                         r.message, r.recorded_by.full_name, r.recorded_at)
              for r in overview.batch.results if r.is_late and r.test_key in tests]
    return items


def missing_results(overview: BatchOverview) -> list[ReviewItem]:
    """Expected results not in yet, or in only as an interim result."""
    results = current_results(overview.batch)
    link = Link("quality.results", {"batch_number": overview.batch.batch_number})
    facts = {key: as_current(r) for key, r in results.items()}
    return [ReviewItem(f"{t.title}: " + (f"interim only ({results[t.key].text})" if t.key in results
                                          else "no result yet"), link,
                       BEFORE_RELEASE_WORDS[t.before_release])
            for t in pending(overview.definition, facts)]


def signature_gaps_section(overview: BatchOverview) -> list[ReviewItem]:
    """Entries awaiting verification, and records whose signature is missing or invalidated."""
    items = [ReviewItem(f"{sv.spec.title}: awaiting verification by a second person",
                        _on_batch_page(overview, f"entry-{ev.entry.id}"))
             for sv in overview.steps for ev in sv.entries if ev.awaiting_verification]
    for gap in signature_gaps(overview.batch, overview.definition):
        page = "quality.results" if gap.kind == "result" else "batches.detail"
        items.append(ReviewItem(gap.description, Link(page, {"batch_number": overview.batch.batch_number}, gap.anchor)))
    return items


def label_reprints(overview: BatchOverview) -> list[ReviewItem]:
    """Labels printed again, with the reason given."""
    rows = db.session.scalars(select(LabelPrint).where(LabelPrint.batch_id == overview.batch.id,
                                                       LabelPrint.is_reprint.is_(True)).order_by(LabelPrint.id))
    return [ReviewItem(f"Label of {p.container.code} reprinted", Link("containers.detail", {"code": p.container.code}),
                       f"Reason: {p.reason}" if p.reason else "", p.printed_by.full_name, p.printed_at)
            for p in rows]


def custody_mismatches(overview: BatchOverview) -> list[ReviewItem]:
    """Scans at a hand-off that did not match this batch (the hand-off was refused)."""
    rows = db.session.scalars(select(CustodyEvent).where(CustodyEvent.batch_id == overview.batch.id,
                                                         CustodyEvent.matched.is_(False)).order_by(CustodyEvent.id))
    return [ReviewItem(f"{e.scanned_code} scanned at {e.event}", _on_batch_page(overview, "containers"), e.message,
                       e.actor.full_name, e.occurred_at)
            for e in rows]


#: The review page's sections, in order: (key, title, what lists its exceptions).
SECTIONS: list[tuple[str, str, Callable[[BatchOverview], list[ReviewItem]]]] = [
    ("out_of_limit", "Out-of-limit values", out_of_limit),
    ("corrections", "Corrections", corrections),
    ("deviations", "Deviations", deviations),
    ("oos", "Results out of specification", oos_results),
    ("late", "Late entries", late_entries),
    ("missing", "Missing results", missing_results),
    ("signatures", "Signature gaps", signature_gaps_section),
    ("label_reprints", "Label reprints", label_reprints),
    ("custody", "Custody mismatches", custody_mismatches),
]
