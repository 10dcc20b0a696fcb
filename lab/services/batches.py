"""Starting a batch: a batch number, and the process definition it pins for good."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from lab import audit
from lab.exceptions import ProcessUnavailable, StepNotAllowed
from lab.extensions import db
from lab.models import Batch, Patient, ProcessDefinitionRecord, User, utcnow
from lab.permissions import require
from lab.services.sequences import next_code
from lab.workflow_registry import DEFAULT_PROCESS, current_definition, workflow_dir
from workflows.codes import CodeKind
from workflows.definition import DefinitionError
from workflows.model import ProcessDefinition

#: States in which a batch is still being made or decided for its patient.
OPEN_STATES = frozenset({"scheduled", "in_process", "qc_testing", "qa_review", "on_hold"})


def _pin(definition: ProcessDefinition) -> ProcessDefinitionRecord:
    """The stored copy of ``definition``, stored now if no batch used it before.

    A file edited without a new version number is refused: batches already made under
    that version must keep meaning what they meant (change control).
    """
    stored = db.session.scalar(select(ProcessDefinitionRecord).where(ProcessDefinitionRecord.sha256 == definition.sha256))
    if stored is not None:
        return stored
    clash = db.session.scalar(select(ProcessDefinitionRecord).where(
        ProcessDefinitionRecord.key == definition.key, ProcessDefinitionRecord.version == definition.version))
    if clash is not None:
        raise StepNotAllowed(
            f"{definition.source_name} changed since batches started under {definition.key} version "
            f"{definition.version} (stored hash {clash.sha256[:12]}…, file hash {definition.sha256[:12]}…). "
            "Give the edited definition a new version number."
        )
    record = ProcessDefinitionRecord(key=definition.key, version=definition.version, sha256=definition.sha256,
                                     source_name=definition.source_name, source_text=definition.source_text)
    db.session.add(record)
    return record


def start_batch(patient: Patient, *, actor: User, now: datetime | None = None,
                definition: ProcessDefinition | None = None) -> Batch:
    """Schedule a new batch for ``patient`` under the current process definition.

    One patient has one open batch at a time; raises StepNotAllowed otherwise.
    """
    require(actor, "start_batch", "start a batch")
    now = now or utcnow()
    open_batch = next((b for b in patient.batches if b.state in OPEN_STATES), None)
    if open_batch is not None:
        raise StepNotAllowed(f"Patient {patient.patient_ref} already has an open batch, {open_batch.batch_number}.")
    if definition is None:
        try:
            definition = current_definition()
        except DefinitionError as error:
            raise ProcessUnavailable(f"No batch can start: {error}. Ask the process owner to fix the "
                                     "definition (`flask --app lab check-workflows` checks it).") from None
        except KeyError:
            raise ProcessUnavailable(f"No batch can start: no definition of process {DEFAULT_PROCESS} "
                                     f"is installed in {workflow_dir()}.") from None
    with audit.action("batch.start", actor=actor):
        batch = Batch(
            batch_number=next_code(CodeKind.BATCH, now),
            patient=patient,
            definition=_pin(definition),
            state=definition.initial_state,
            created_at=now,
            created_by_id=actor.id,
            updated_at=now,
            updated_by_id=actor.id,
        )
        db.session.add(batch)
    return batch
