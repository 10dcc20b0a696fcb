"""The read side of release: each test's current result, the signatures a record lacks, and
the facts QA decisions are judged on. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.models import Batch, Deviation, Disposition, QcResult, Signature
from lab.services.progress import batch_progress, definition_for, entry_context, typed_values
from lab.services.signatures import batch_signatures, marked
from workflows.engine import compute_derived
from workflows.engine_types import Value
from workflows.formatting import format_quantity
from workflows.model import ProcessDefinition, ReleaseTestSpec
from workflows.release import (
    Basis,
    BatchFacts,
    CurrentResult,
    basis_steps,
    batch_basis,
    discrepancy,
    spec_text,
)

#: Meanings that make someone the author of an entry or result.
AUTHORSHIP = ("performed", "corrected")


@dataclass(frozen=True)
class SignatureGap:
    """A record (an entry, result, deviation or decision) without the valid signature it
    needs; ``anchor`` locates it on its page."""

    kind: str
    description: str
    anchor: str


def current_results(batch: Batch) -> dict[str, QcResult]:
    """test key -> the latest result not superseded by a correction."""
    superseded = {r.supersedes_id for r in batch.results if r.supersedes_id is not None}
    return {r.test_key: r for r in batch.results if r.id not in superseded}  # ordered by id: latest wins


def as_current(result: QcResult) -> CurrentResult:
    return CurrentResult(result.verdict, result.is_final, result.text, result.spec_text)


def release_basis(batch: Batch, test: ReleaseTestSpec, definition: ProcessDefinition | None = None) -> Basis | None:
    """What ``test`` reads from ``batch``'s record (its target dose, the dose formulation
    filled), from the current values of the latest entry of each step it names; None for a
    test judged on its own specification alone."""
    steps = basis_steps(test)
    if not steps:
        return None
    definition = definition or definition_for(batch)
    values: dict[str, Value | None] = {"patient.weight_kg": batch.patient.weight_kg}
    latest = {entry.step_key: entry for entry in batch.entries if entry.step_key in steps}  # by id: latest wins
    for key, entry in latest.items():
        step = definition.step(key)
        typed = typed_values(step, entry)
        derived = compute_derived(step, typed, entry_context(batch, definition, now=entry.performed_at, exclude=entry))
        values.update({f"{key}.{name}": value for name, value in typed.items()})
        values.update({f"{key}.{name}": value.value for name, value in derived.items()})
    return batch_basis(definition, test, values)


def result_flags(batch: Batch, test: ReleaseTestSpec, found: Basis | None) -> dict[int, str]:
    """result id -> how that result of ``test`` differs from the value computed from the batch
    record as it stands, for each measured result beyond the test's tolerance."""
    return {r.id: flag for r in batch.results
            if r.test_key == test.key and r.number is not None and not r.text.startswith(("<", ">"))
            and (flag := discrepancy(test, found, r.text))}


def batch_spec_text(batch: Batch, test: ReleaseTestSpec, definition: ProcessDefinition | None = None) -> str:
    """The specification of ``test`` for ``batch`` in words, as the pages, the batch record and
    the CoA print it (a dose relative to the batch's target dose reads with that target)."""
    return spec_text(test, release_basis(batch, test, definition))


def was_released(batch: Batch, definition: ProcessDefinition) -> bool:
    """True once any decision released the batch (even if it is on hold since)."""
    released_states = definition.release.released_states if definition.release else ()
    releases = {d.key for d in definition.decisions if d.target in released_states}
    return any(d.decision in releases for d in batch.dispositions)


def signature_gaps(batch: Batch, definition: ProcessDefinition) -> list[SignatureGap]:
    """Entries and results without a valid author's signature, closed deviations and decisions
    whose signature is missing or no longer matches. Verification is counted apart."""
    signatures = batch_signatures(batch)
    gaps = []
    for entry in batch.entries:
        own = marked(entry, signatures)
        if not any(valid and s.meaning in AUTHORSHIP for s, valid in own):
            step = definition.step(entry.step_key)
            name = f"{step.title}{f' (entry {entry.occurrence})' if step.repeatable else ''}"
            gaps.append(SignatureGap("entry", f"{name}: {_why(own)}", f"entry-{entry.id}"))
    titles = {t.key: t.title for t in definition.release_tests}
    for result in batch.results:
        own = marked(result, signatures)
        if not any(valid and s.meaning in AUTHORSHIP for s, valid in own):
            gaps.append(SignatureGap("result", f"{titles.get(result.test_key, result.test_key)} result "
                                     f"{result.text}: {_why(own)}", f"result-{result.id}"))
    for deviation in batch.deviations:
        if not deviation.is_open and not any(valid for _, valid in marked(deviation, signatures)):
            gaps.append(SignatureGap("deviation", f"Deviation {deviation.number} closed without a valid QA "
                                     "signature", "deviations"))
    for disposition in batch.dispositions:
        if not any(valid for _, valid in marked(disposition, signatures)):
            gaps.append(SignatureGap("decision", f"Decision '{disposition.title}' without a valid signature",
                                     f"decision-{disposition.id}"))
    return gaps


def _why(own: list[tuple[Signature, bool]]) -> str:
    if own:
        return "the author's signature no longer matches (the record changed after it was signed)"
    return "not signed by its author"


def batch_facts(batch: Batch, definition: ProcessDefinition | None = None) -> BatchFacts:
    """What a QA decision on ``batch`` is judged on (workflows.release.blockers)."""
    definition = definition or definition_for(batch)
    gaps = [g.description for g in signature_gaps(batch, definition) if g.kind in ("entry", "result")]
    return BatchFacts(
        progress=batch_progress(batch, definition),
        results={key: as_current(result) for key, result in current_results(batch).items()},
        open_deviations={d.number: d.source for d in batch.deviations if d.is_open},
        unsigned=tuple(gaps),
    )


Signed = list[tuple[Signature, bool]]  # each signature, and whether it still matches its record


@dataclass
class TestRow:
    """One release test on the release panel: its current result and every result reported."""

    test: ReleaseTestSpec
    specification: str
    current: QcResult | None
    history: list[tuple[QcResult, Signed]]  # oldest first
    superseded: set[int]  # ids of the results a correction replaced
    basis: Basis | None = None  # what the test reads from the batch record, if anything
    #: result id -> how it differs from the value computed from the batch record, for the
    #: results that differ by more than the test's tolerance
    flags: dict[int, str] = field(default_factory=dict)

    @property
    def computed(self) -> str:
        """The value computed from the batch record with its unit, "" when there is none (yet)."""
        if self.basis is None or self.basis.computed is None:
            return ""
        return format_quantity(self.basis.computed, self.test.unit)

    @property
    def status(self) -> str:
        """pass, fail, interim, pending (expected, none yet) or n/a (optional, none reported)."""
        if self.current is not None:
            return self.current.verdict
        return "pending" if self.test.required else "n/a"


@dataclass
class QualityRecord:
    """The release side of a batch as its pages show it: results, deviations and decisions,
    each with its signatures."""

    panel: list[TestRow]
    deviations: list[tuple[Deviation, Signed]]
    decisions: list[tuple[Disposition, Signed]]

    @property
    def open_deviations(self) -> list[Deviation]:
        return [d for d, _ in self.deviations if d.is_open]


def quality_record(batch: Batch, definition: ProcessDefinition | None = None) -> QualityRecord:
    definition = definition or definition_for(batch)
    signatures = batch_signatures(batch)
    current = current_results(batch)
    superseded = {r.supersedes_id for r in batch.results if r.supersedes_id is not None}
    panel = []
    for test in definition.release_tests:
        found = release_basis(batch, test, definition)
        history = [(r, marked(r, signatures)) for r in batch.results if r.test_key == test.key]
        panel.append(TestRow(test, spec_text(test, found), current.get(test.key), history, superseded, found,
                             result_flags(batch, test, found)))
    return QualityRecord(panel, [(d, marked(d, signatures)) for d in batch.deviations],
                         [(d, marked(d, signatures)) for d in batch.dispositions])
