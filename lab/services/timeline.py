"""One timeline per batch: steps recorded, verified and corrected, containers handed off,
results, deviations and QA decisions, in the order they happened (PEERS.md: "people want one
timeline per specimen or batch"). Built from what the batch page has already loaded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lab.models import Batch
from lab.services.progress import BatchOverview
from lab.services.release_status import QualityRecord
from workflows.formatting import format_recorded


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    kind: str  # a word a reader sees: "Step", "Verified", "Correction", "Custody", "Result", ...
    title: str
    who: str
    anchor: str = ""  # where on the batch page the full record is
    detail: str = ""
    problem: str = ""  # said in words (MISMATCH, OUT OF LIMIT, FAIL), never by colour alone


def batch_timeline(overview: BatchOverview, quality: QualityRecord) -> list[TimelineEvent]:
    """Every event of the batch, oldest first."""
    batch = overview.batch
    events = [TimelineEvent(batch.created_at, "Batch", f"Batch started ({overview.definition.title})",
                            batch.created_by.full_name)]
    for step in overview.steps:
        for view in step.entries:
            entry = view.entry
            name = f"{step.spec.title}{f' (entry {entry.occurrence})' if step.spec.repeatable else ''}"
            anchor = f"entry-{entry.id}"
            flagged = [v.spec.label for v in view.values if v.current is not None and v.current.out_of_limit]
            events.append(TimelineEvent(entry.performed_at, "Step", f"{name} recorded", entry.performed_by.full_name,
                                        anchor, problem=_out_of_limit(flagged)))
            for value in view.values:
                for stored in (*value.history, value.current):
                    if stored is not None and stored.is_correction:
                        events.append(TimelineEvent(
                            stored.recorded_at, "Correction", f"{name}: {value.spec.label} corrected to {stored.text}",
                            stored.recorded_by.full_name, anchor, f"Reason: {stored.reason}"))
            for signature, still_valid in view.signatures:
                if signature.meaning == "verified":
                    events.append(TimelineEvent(
                        signature.signed_at, "Verified", f"{name} verified", signature.printed_name, anchor,
                        "" if still_valid else "Signature no longer matches: the entry was corrected since."))
    for event in overview.custody:
        where = " → ".join(p for p in (event.from_location, event.to_location) if p)
        events.append(TimelineEvent(
            event.occurred_at, "Custody", f"{event.event[:1].upper()}{event.event[1:]}: {event.scanned_code}", event.actor.full_name,
            "containers", where, "" if event.matched else f"MISMATCH: {event.message}"))
    _add_quality(events, batch, quality)
    return sorted(events, key=lambda e: e.at)


def _out_of_limit(labels: list[str]) -> str:
    return f"OUT OF LIMIT: {', '.join(labels)}" if labels else ""


def _add_quality(events: list[TimelineEvent], batch: Batch, quality: QualityRecord) -> None:
    for row in quality.panel:
        for result, _signed in row.history:
            problem = "" if result.verdict != "fail" else f"OUT OF SPECIFICATION ({result.spec_text})"
            shown = format_recorded(result.text, row.test.kind, result.unit)
            events.append(TimelineEvent(result.recorded_at, "Result", f"{row.test.title}: {shown}",
                                        result.recorded_by.full_name, "release", problem=problem))
    for deviation, _signed in quality.deviations:
        events.append(TimelineEvent(deviation.opened_at, "Deviation", f"{deviation.number} opened: {deviation.title}",
                                    deviation.opened_by.full_name, "deviations"))
        if deviation.closed_at is not None and deviation.closed_by is not None:
            events.append(TimelineEvent(deviation.closed_at, "Deviation", f"{deviation.number} closed",
                                        deviation.closed_by.full_name, "deviations"))
    for decision in batch.dispositions:
        events.append(TimelineEvent(decision.decided_at, "Decision", decision.title, decision.decided_by.full_name,
                                    f"decision-{decision.id}"))
