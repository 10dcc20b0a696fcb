"""Starting a batch: a batch number, the product's effective process version, which the batch
pins for good, and its target dose when the process sets one."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from lab import audit
from lab.exceptions import InvalidInput, ProcessUnavailable, StepNotAllowed
from lab.extensions import db
from lab.models import Batch, Patient, ProcessDefinitionRecord, User, utcnow
from lab.permissions import require
from lab.services.processes import definition_of, effective_versions, store_text
from lab.services.sequences import next_code
from workflows.codes import CodeKind
from workflows.formatting import format_quantity
from workflows.model import ProcessDefinition, StepSpec

#: States in which a batch is still being made or decided for its patient.
OPEN_STATES = frozenset({"scheduled", "in_process", "qc_testing", "qa_review", "on_hold"})


def _pin(definition: ProcessDefinition) -> ProcessDefinitionRecord:
    """The stored copy of ``definition`` (stored now if no batch or version stored it before)."""
    return store_text(definition)


def choose_definition(process_key: str | None, now: datetime) -> ProcessDefinition:
    """The effective version of product ``process_key`` at ``now``; without a key, the only
    effective product. Raises ProcessUnavailable when none is effective, InvalidInput when
    the key names none or several products could be meant."""
    effective = {v.key: v for v in effective_versions(now)}
    if not effective:
        raise ProcessUnavailable("No batch can start: no process version is approved and effective. QA approves "
                                 "one on /processes (on a new installation: `flask --app lab "
                                 "approve-shipped-processes`).")
    if process_key is None or not process_key.strip():
        if len(effective) == 1:
            return definition_of(next(iter(effective.values())))
        raise InvalidInput("Choose the product to make.", {"product": "Choose the product to make."})
    version = effective.get(process_key.strip())
    if version is None:
        raise InvalidInput(f"No product {process_key[:64]!r} has an effective process version.",
                           {"product": "Choose one of the products offered."})
    return definition_of(version)


def check_dose(definition: ProcessDefinition, target_dose: float | None) -> float | None:
    """The batch's target dose: the definition's default when none is given, refused outside its range.
    None for a process without a [dose] range (its dose is typed at formulation)."""
    dose = definition.dose
    if dose is None:
        return None
    if target_dose is None:
        return dose.default
    if not math.isfinite(target_dose) or not dose.min <= target_dose <= dose.max:
        raise InvalidInput("The batch was not scheduled.", {"target_dose": (
            f"Choose a target dose from {format_quantity(dose.min, dose.unit)} to "
            f"{format_quantity(dose.max, dose.unit)} (the range {definition.key} version {definition.version} "
            "allows).")})
    return target_dose


def start_batch(patient: Patient, *, actor: User, now: datetime | None = None,
                definition: ProcessDefinition | None = None, process_key: str | None = None,
                target_dose: float | None = None) -> Batch:
    """Schedule a new batch for ``patient`` under the effective version of ``process_key``
    (the only effective product when not given), with ``target_dose`` within the definition's
    [dose] range (its default when not given). ``definition`` pins a given version instead
    (tests only: a version 1 batch); the pages never pass it.

    One patient has one open batch at a time; raises StepNotAllowed otherwise, InvalidInput
    for an unknown product or a dose outside the range, ProcessUnavailable when nothing is
    effective. Nothing is written then.
    """
    require(actor, "start_batch", "start a batch")
    now = now or utcnow()
    open_batch = next((b for b in patient.batches if b.state in OPEN_STATES), None)
    if open_batch is not None:
        raise StepNotAllowed(f"Patient {patient.patient_ref} already has an open batch, {open_batch.batch_number}.")
    if definition is None:
        definition = choose_definition(process_key, now)
    dose = check_dose(definition, target_dose)
    with audit.action("batch.start", actor=actor):
        batch = Batch(
            batch_number=next_code(CodeKind.BATCH, now),
            patient=patient,
            definition=_pin(definition),
            state=definition.initial_state,
            target_dose=dose,
            created_at=now,
            created_by_id=actor.id,
            updated_at=now,
            updated_by_id=actor.id,
        )
        db.session.add(batch)
    return batch


def dose_text(dose: float) -> str:
    """The batch's target dose as a step field's text: ``2000000``, ``1500000``."""
    return f"{dose:.12g}"


def with_batch_dose(batch: Batch, step: StepSpec, raw: Mapping[str, str]) -> dict[str, str]:
    """``raw`` with every field of ``step`` that takes the batch's target dose (``batch_dose``) set
    to it: the dose is chosen when the batch is scheduled, never typed again at the step."""
    values = dict(raw)
    if batch.target_dose is not None:
        for spec in step.fields:
            if spec.batch_dose:
                values[spec.key] = dose_text(batch.target_dose)
    return values
