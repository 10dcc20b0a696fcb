"""QC release results: recorded and corrected by QC analysts, each judged on entry and signed.

A result out of specification opens a deviation by itself. A result after release is
accepted (sterility is final at day 14); if it fails, the released batch goes on hold and
the deviation is the investigation (21 CFR 211.192). Results are never overwritten: a
correction supersedes the current result and gives a reason.

A test judged against its batch (the dose, against the target dose typed at formulation)
is recorded once that target is recorded. Its result is either the value computed from
the batch record (``record_computed_result``: the analyst checks the calculation and signs
it as any result) or a measured one; a measured result that differs from the computed
value by more than the definition's tolerance is kept, and flagged by a deviation naming
both values (in the OOS deviation when it also fails its specification).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from lab import audit
from lab.exceptions import InvalidInput, StepNotAllowed
from lab.extensions import db
from lab.models import Batch, Deviation, QcResult, User, utcnow
from lab.permissions import require
from lab.services.batch_state import automatic_state, move, touch
from lab.services.deviations import open_deviation
from lab.services.progress import definition_for
from lab.services.release_status import as_current, current_results, release_basis, was_released
from lab.services.signatures import Credentials, reauthenticate, sign
from lab.services.site_notices import notify_late_failure
from lab.services.steps import MAX_COMMENT, lock_batch
from workflows.model import ProcessDefinition, ReleaseTestSpec
from workflows.release import (
    FAIL,
    Basis,
    ResultCheck,
    ResultRefused,
    basis_refusal,
    check_result,
    computed_refusal,
    computed_result_text,
    correction_refusal,
    is_late,
    result_refusal,
    state_after_result,
)


def record_result(batch: Batch, test_key: str, text: str, *, comment: str, actor: User,
                  credentials: Credentials, now: datetime | None = None,
                  expected_version: int | None = None,
                  opened: Mapping[tuple[str, str], Deviation] | None = None) -> QcResult:
    """Record a result of release test ``test_key``, signed by ``actor`` as performed.

    Raises KeyError (no such test), NotAllowed (role), StepNotAllowed (the batch's state,
    the test already has its final result, or its target is not recorded yet), InvalidInput
    (the result's type, unit or range; the comment) or SignatureError. Nothing is written
    on refusal. ``opened``: deviations already open for a result of this test (test key,
    canonical text), opened when an instrument submitted it (lab.services.submissions): that
    result, recorded unchanged, is named in the deviation instead of opening a second one.
    """
    return _record(batch, test_key, text, computed=False, comment=comment, actor=actor, credentials=credentials,
                   now=now, expected_version=expected_version, opened=opened)


def record_computed_result(batch: Batch, test_key: str, *, comment: str, actor: User, credentials: Credentials,
                           now: datetime | None = None, expected_version: int | None = None) -> QcResult:
    """Record the value computed from the batch record (the dose formulation filled) as the
    result of ``test_key``: the analyst who checked the calculation signs it as performed.

    The value is computed here, from the record as it stands, never taken from the form;
    the result's comment says where it comes from. Raises as record_result does, and
    StepNotAllowed when the test is not computed or its inputs are not recorded yet.
    """
    return _record(batch, test_key, "", computed=True, comment=comment, actor=actor, credentials=credentials,
                   now=now, expected_version=expected_version)


def _record(batch: Batch, test_key: str, text: str, *, computed: bool, comment: str, actor: User,
            credentials: Credentials, now: datetime | None, expected_version: int | None,
            opened: Mapping[tuple[str, str], Deviation] | None = None) -> QcResult:
    now = now or utcnow()
    definition = definition_for(batch)
    test = definition.release_test(test_key)
    require(actor, "record_result", "record QC results")
    lock_batch(batch, expected_version)
    basis = release_basis(batch, test, definition)
    refusal = new_result_refusal(batch, definition, test, basis, computed=computed)
    if refusal:
        raise StepNotAllowed(refusal)
    comment = _clean(comment, "comment")
    if computed:
        assert basis is not None  # computed_refusal
        text = computed_result_text(basis)
        origin = f"Computed from the batch record ({' and '.join(basis.steps)}): {test.computed}."
        comment = f"{origin}\n{comment}" if comment else origin
    check = checked_result(test, text, basis)
    reauthenticate(actor, credentials, meaning="performed", subject=f"{test.title} result of batch "
                   f"{batch.batch_number}", batch_id=batch.id)
    with audit.action("result.record", actor=actor, reason=comment or None):
        result = _new_result(batch, test, check, actor, now, comment=comment or None,
                             late=_after_release(batch, definition))
        _follow_up(batch, definition, test, result, check, actor, now, previous=None, opened=opened)
    return result


def new_result_refusal(batch: Batch, definition: ProcessDefinition, test: ReleaseTestSpec, basis: Basis | None, *,
                       computed: bool = False) -> str | None:
    """Why a new result of ``test`` cannot be recorded now (the batch's state, a final result
    already there, its target or the values it is computed from not recorded yet), else None."""
    current = current_results(batch).get(test.key)
    return (result_refusal(definition, test, batch.state, as_current(current) if current else None)
            or (computed_refusal(test, basis) if computed else basis_refusal(test, basis)))


def correct_result(batch: Batch, result: QcResult, text: str, *, reason: str, actor: User,
                   credentials: Credentials, now: datetime | None = None,
                   expected_version: int | None = None) -> QcResult:
    """Supersede ``result`` (its test's current result) with a corrected one, signed by
    ``actor`` as corrected; the old result stays on record. Refused once the batch was
    released. Raises as record_result does."""
    now = now or utcnow()
    definition = definition_for(batch)
    test = definition.release_test(result.test_key)
    require(actor, "record_result", "correct QC results")
    lock_batch(batch, expected_version)
    refusal = correction_refusal(definition, batch.state, was_released=was_released(batch, definition))
    if refusal:
        raise StepNotAllowed(refusal)
    if current_results(batch).get(result.test_key) is not result:
        raise StepNotAllowed(f"This {test.title} result was followed by a later one: correct the current result.")
    reason = _clean(reason, "reason")
    if not reason:
        raise InvalidInput("A reason is required.", {"reason": "Say why the result is corrected."})
    check = checked_result(test, text, release_basis(batch, test, definition))
    if check.text == result.text:
        raise InvalidInput("No change.", {"value": "The corrected result is the same as the current one."})
    reauthenticate(actor, credentials, meaning="corrected", subject=f"correction of the {test.title} result "
                   f"of batch {batch.batch_number}", batch_id=batch.id)
    with audit.action("result.correct", actor=actor, reason=reason):
        corrected = _new_result(batch, test, check, actor, now, supersedes_id=result.id, reason=reason,
                                late=result.is_late)
        _follow_up(batch, definition, test, corrected, check, actor, now, previous=result)
    return corrected


def checked_result(test: ReleaseTestSpec, text: str, basis: Basis | None) -> ResultCheck:
    """The result judged against its specification; InvalidInput (on ``value``) when refused."""
    try:
        return check_result(test, text, basis)
    except ResultRefused as error:
        raise InvalidInput("The result was not recorded.", {"value": str(error)}) from None


def _clean(text: str, key: str) -> str:
    text = text.strip()
    if len(text) > MAX_COMMENT:
        raise InvalidInput("Too long.", {key: f"Use at most {MAX_COMMENT} characters."})
    return text


def _new_result(batch: Batch, test: ReleaseTestSpec, check: ResultCheck, actor: User, now: datetime, *,
                late: bool, comment: str | None = None, supersedes_id: int | None = None,
                reason: str | None = None) -> QcResult:
    result = QcResult(batch=batch, test_key=test.key, text=check.text, number=check.number, unit=check.unit,
                      verdict=check.verdict, is_final=check.final, spec_text=check.specification[:128],
                      message=check.message[:255], comment=comment, is_late=late, recorded_at=now,
                      recorded_by_id=actor.id, supersedes_id=supersedes_id, reason=reason)
    db.session.add(result)
    db.session.flush()
    return result


@dataclass(frozen=True)
class DueDeviation:
    """The deviation a result opens: its source, title and description."""

    source: str
    title: str
    description: str


def deviation_due(batch: Batch, definition: ProcessDefinition, test: ReleaseTestSpec, check: ResultCheck,
                  why: str) -> DueDeviation | None:
    """The deviation a result judged ``check`` opens, or None: a failure (one open per test), or a
    result far from the computed value (in the OOS deviation when it also fails)."""
    if check.verdict == FAIL and not _open_deviation(batch, test.key, "oos"):
        title = (f"Late failing result after release: {check.message}" if _after_release(batch, definition)
                 else f"Out of specification: {check.message}")
        return DueDeviation("oos", title, "\n".join(filter(None, (check.discrepancy, why))))
    if check.discrepancy and check.verdict != FAIL and not _open_deviation(batch, test.key, "limit"):
        return DueDeviation("limit", check.discrepancy, why)
    return None


def _follow_up(batch: Batch, definition: ProcessDefinition, test: ReleaseTestSpec, result: QcResult,
               check: ResultCheck, actor: User, now: datetime, *, previous: QcResult | None,
               opened: Mapping[tuple[str, str], Deviation] | None = None) -> None:
    """Sign the result; open the deviation it is due (``deviation_due``), or name the result in
    the one its submission opened (``opened``); a failure after release puts the batch on hold;
    otherwise the automatic transitions may move the batch on."""
    sign(result, actor=actor, meaning="corrected" if previous else "performed", now=now)
    due = deviation_due(batch, definition, test, check, result.comment or result.reason or "")
    known = (opened or {}).get((test.key, result.text))
    if due and known is not None and known.source == due.source:
        known.result = result
    elif due:
        open_deviation(batch, source=due.source, title=due.title, description=due.description, result=result,
                       actor=actor, now=now)
    if check.verdict == FAIL:  # after shipment, every site the product went to is told (issue 15)
        notify_late_failure(result, now=now)
    state = state_after_result(definition, batch.state, check) or automatic_state(batch, definition)
    if move(batch, definition, state):
        touch(batch, actor, now)


def _after_release(batch: Batch, definition: ProcessDefinition) -> bool:
    """True when the batch is released, or on hold from a released state."""
    return is_late(definition, batch.state) or (batch.held_from is not None and is_late(definition, batch.held_from))


def _open_deviation(batch: Batch, test_key: str, source: str) -> bool:
    """True when a deviation from ``source`` that a result of ``test_key`` opened is still open."""
    return any(d.is_open and d.source == source and d.result is not None and d.result.test_key == test_key
               for d in batch.deviations)
