"""QA decisions on a batch (release, exceptional release, reject, hold, lifting a hold), as
the process definition lists them: checked, signed with their meaning, and recorded.

Only the decision's role may take it; an independent decision is refused to anyone who
performed, corrected or verified a step of the batch. Release requires every step done,
verified and signed, every result needed in specification and no open deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lab import audit
from lab.exceptions import InvalidInput, NotAllowed, StepNotAllowed
from lab.extensions import db
from lab.models import Batch, Disposition, User, utcnow
from lab.permissions import require_role
from lab.services.batch_state import automatic_state, move, touch
from lab.services.progress import definition_for
from lab.services.release_status import batch_facts
from lab.services.signatures import Credentials, batch_signatures, reauthenticate, record_sha256, sign
from lab.services.steps import lock_batch
from workflows.formatting import format_recorded
from workflows.model import DecisionSpec, ProcessDefinition
from workflows.release import FAIL, blockers, decision_refusal, spec_text

MAX_TEXT = 4000
#: What an exceptional release records besides its reason (EU GMP for ATMPs §11.5).
EXCEPTIONAL_FIELDS = {
    "physician_name": "the treating physician's name",
    "physician_request": "the treating physician's request",
    "risk_assessment": "the risk assessment given to the physician",
    "physician_confirmation": "the physician's confirmation that the out-of-specification product is accepted",
}


@dataclass(frozen=True)
class DecisionInput:
    """What the QA officer entered. The physician fields are for an exceptional release only."""

    decision: str
    reason: str = ""
    physician_name: str = ""
    physician_request: str = ""
    risk_assessment: str = ""
    physician_confirmation: str = ""


def available_decisions(batch: Batch, definition: ProcessDefinition, actor: User) -> list[DecisionSpec]:
    """The decisions ``actor``'s role may take on ``batch`` in its current state."""
    return [d for d in definition.decisions if batch.state in d.source and actor.can_act_as(d.role)]


@dataclass(frozen=True)
class DecisionsNow:
    """What the disposition page offers ``actor``: the decisions that may be taken now, the
    others of their role and the batch's state with every reason each is refused now, and the
    results out of specification (in words) that an exceptional release would release."""

    offered: list[DecisionSpec]
    refused: list[tuple[DecisionSpec, list[str]]]
    out_of_spec: list[str]


def decisions_now(batch: Batch, definition: ProcessDefinition, actor: User) -> DecisionsNow:
    """Judge each decision open to ``actor``'s role in the batch's state as ``decide`` does
    (what blocks it, segregation of duties). An exceptional release is not listed at all
    while no result is out of specification: there is nothing it could release."""
    facts = batch_facts(batch, definition)
    out_of_spec = [f"{t.title} {format_recorded(c.text, t.kind, t.unit)} (specification {c.specification or spec_text(t)})"
                   for t in definition.release_tests if (c := facts.results.get(t.key)) is not None and c.verdict == FAIL]
    try:
        _require_independence(batch, definition, actor)
        dependent = None
    except NotAllowed as error:
        dependent = str(error)
    offered: list[DecisionSpec] = []
    refused: list[tuple[DecisionSpec, list[str]]] = []
    for spec in available_decisions(batch, definition, actor):
        reasons = blockers(definition, spec, facts) + ([dependent] if spec.independent and dependent else [])
        if not reasons:
            offered.append(spec)
        elif spec.requires != "exceptional_release" or out_of_spec:
            refused.append((spec, reasons))
    return DecisionsNow(offered, refused, out_of_spec)


def decide(batch: Batch, data: DecisionInput, *, expected_version: int | None, actor: User,
           credentials: Credentials, now: datetime | None = None) -> Disposition:
    """Take and sign a decision on ``batch``.

    Raises InvalidInput (unknown decision, missing reason or physician record),
    NotAllowed (role, segregation of duties), StepNotAllowed (state, or what blocks it),
    ConcurrentChangeError or SignatureError. Nothing is written on refusal.
    """
    now = now or utcnow()
    definition = definition_for(batch)
    try:
        spec = definition.decision(data.decision)
    except KeyError:
        choices = ", ".join(d.key for d in definition.decisions)
        raise InvalidInput("Unknown decision.", {"decision": f"Choose one of: {choices}."}) from None
    require_role(actor, spec.role, f"take the decision '{spec.title}'")
    lock_batch(batch, expected_version)
    refusal = decision_refusal(definition, spec, batch.state)
    if refusal:
        raise StepNotAllowed(refusal)
    if spec.independent:
        _require_independence(batch, definition, actor)
    texts = _validated(spec, data)
    reasons = blockers(definition, spec, batch_facts(batch, definition))
    if reasons:
        raise StepNotAllowed(f"{spec.title} refused. " + " ".join(reasons))
    target = spec.target or _resume_state(batch, definition)
    reauthenticate(actor, credentials, meaning=spec.meaning, subject=f"{spec.title} of batch {batch.batch_number}",
                   batch_id=batch.id)
    with audit.action(f"batch.{spec.key}", actor=actor, reason=texts.get("reason")):
        disposition = Disposition(batch=batch, decision=spec.key, title=spec.title, state_before=batch.state,
                                  state_after=target, record_sha256=record_sha256(batch), decided_at=now,
                                  decided_by=actor, **texts)
        db.session.add(disposition)
        db.session.flush()
        sign(disposition, actor=actor, meaning=spec.meaning, now=now)
        move(batch, definition, target)
        touch(batch, actor, now)
    return disposition


def _require_independence(batch: Batch, definition: ProcessDefinition, actor: User) -> None:
    """Refuse a decider who performed, corrected or verified any step of the batch."""
    performed = {e.step_key for e in batch.entries
                 if e.performed_by_id == actor.id or any(v.recorded_by_id == actor.id for v in e.values)}
    signatures = batch_signatures(batch)
    verified = {e.step_key for e in batch.entries
                if any(s.signer_id == actor.id and s.meaning == "verified"
                       for s in signatures.get(("step_entry", e.id), []))}
    if performed or verified:
        steps = [s.title for s in definition.steps if s.key in performed | verified]
        raise NotAllowed(f"You performed or verified {', '.join(steps)} of this batch: its disposition must be "
                         "taken by someone independent of its production (segregation of duties).")


def _validated(spec: DecisionSpec, data: DecisionInput) -> dict[str, str | None]:
    texts = {"reason": data.reason.strip(), **{key: getattr(data, key).strip() for key in EXCEPTIONAL_FIELDS}}
    errors = {key: f"Use at most {MAX_TEXT} characters." for key, value in texts.items() if len(value) > MAX_TEXT}
    if spec.reason_required and not texts["reason"]:
        errors["reason"] = f"Give the reason for '{spec.title}'."
    exceptional = spec.requires == "exceptional_release"
    for key, words in EXCEPTIONAL_FIELDS.items():
        if exceptional and not texts[key]:
            errors[key] = f"Record {words}."
        elif not exceptional and texts[key]:
            errors[key] = "Only an exceptional release records the treating physician's request."
    if len(texts["physician_name"]) > 128:
        errors["physician_name"] = "Use at most 128 characters."
    if errors:
        raise InvalidInput(f"'{spec.title}' was not recorded: complete the fields marked below.", errors)
    return {key: value or None for key, value in texts.items()}


def _resume_state(batch: Batch, definition: ProcessDefinition) -> str:
    """Where lifting the hold returns the batch: the state it was held from, carried on by
    the automatic transitions as far as its record allows."""
    start = batch.held_from or definition.initial_state
    state = automatic_state(batch, definition, start)
    if state == batch.state:
        raise StepNotAllowed("Lifting the hold would put the batch straight back on hold: an entry still asks "
                             "for it (a rejected starting material). Correct that entry, or reject the batch.")
    return state
