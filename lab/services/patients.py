"""Patient registration: a pseudonymous record and its chain-of-identity code."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from lab import audit
from lab.exceptions import InvalidInput, LabError
from lab.extensions import db
from lab.models import Patient, User, utcnow
from lab.models.patients import WeightCorrection
from lab.permissions import require, require_role
from lab.services.batch_state import touch
from lab.services.containers import batch_figures
from lab.services.progress import definition_for
from lab.services.sequences import next_code
from lab.services.signatures import Credentials, reauthenticate, sign
from lab.services.sites import active_site
from lab.services.steps import MAX_COMMENT, lock_batch, recompute
from workflows.codes import CodeKind
from workflows.formatting import format_weight

PATIENT_REF_RE = re.compile(r"[A-Z0-9][A-Z0-9-]{1,31}")
INITIALS_RE = re.compile(r"[A-Z]{2,4}")
#: Body weights the lab accepts, in kg (at registration and in a correction).
WEIGHT_MIN_KG, WEIGHT_MAX_KG = 1, 400
#: Who may correct a patient's weight: the dose of every batch is computed from it.
WEIGHT_CORRECTORS = ("supervisor", "qa_officer")


class WeightConflict(LabError):
    """A batch of the patient changed while its weight was being corrected (a lost race)."""

    status = 409


@dataclass(frozen=True)
class PatientInput:
    patient_ref: str
    initials: str
    date_of_birth: date
    weight_kg: float
    indication: str
    #: The site that will treat the patient (an active one), if known at registration.
    treating_site_id: int | None = None


def register_patient(data: PatientInput, *, actor: User, now: datetime | None = None) -> Patient:
    """Register a patient and assign the COI. Raises InvalidInput naming the field at fault."""
    require(actor, "register_patient", "register a patient")
    now = now or utcnow()
    ref = data.patient_ref.strip().upper()
    initials = data.initials.strip().upper()
    indication = " ".join(data.indication.split())
    errors: dict[str, str] = {}
    if not PATIENT_REF_RE.fullmatch(ref):
        errors["patient_ref"] = "Use 2 to 32 letters, digits or hyphens (a pseudonymous ID, never a name)."
    elif db.session.scalar(select(Patient.id).where(Patient.patient_ref == ref)) is not None:
        errors["patient_ref"] = f"Patient {ref} is already registered."
    if not INITIALS_RE.fullmatch(initials):
        errors["initials"] = "Use 2 to 4 letters."
    if not date(1900, 1, 1) <= data.date_of_birth <= now.date():
        errors["date_of_birth"] = "The date of birth must be in the past (and after 1900)."
    weight_error = _weight_error(data.weight_kg)
    if weight_error:
        errors["weight_kg"] = weight_error
    if not 2 <= len(indication) <= 128:
        errors["indication"] = "Enter the indication (2 to 128 characters), e.g. systemic lupus erythematosus."
    if data.treating_site_id is not None and active_site(data.treating_site_id) is None:
        errors["treating_site"] = "Choose an active treatment site, or leave it empty."
    if errors:
        raise InvalidInput("The patient was not registered.", errors)
    with audit.action("patient.register", actor=actor):
        patient = Patient(
            patient_ref=ref,
            initials=initials,
            date_of_birth=data.date_of_birth,
            weight_kg=round(data.weight_kg, 2),
            indication=indication,
            coi=next_code(CodeKind.COI, now),
            registered_at=now,
            registered_by_id=actor.id,
            treating_site_id=data.treating_site_id,
        )
        db.session.add(patient)
    return patient


def _weight_error(weight_kg: float) -> str:
    if not math.isfinite(weight_kg) or not WEIGHT_MIN_KG <= weight_kg <= WEIGHT_MAX_KG:
        return f"Weight must be between {WEIGHT_MIN_KG} and {WEIGHT_MAX_KG} kg."
    return ""


def correct_weight(patient: Patient, weight_kg: float, *, reason: str, actor: User, credentials: Credentials,
                   now: datetime | None = None) -> WeightCorrection:
    """Correct ``patient``'s weight; the old value stays on record (WeightCorrection, audit trail).

    A supervisor or QA officer corrects it, with a reason, signing (meaning "corrected",
    ``credentials`` re-entered). Every batch of the patient is recomputed from the new
    weight: derived values out of limit and product bags that no longer match the dose open
    deviations (steps.recompute). Raises NotAllowed, InvalidInput naming the field, or
    SignatureError; nothing is written then.
    """
    now = now or utcnow()
    require_role(actor, WEIGHT_CORRECTORS, "correct a patient's weight")
    reason = reason.strip()
    errors: dict[str, str] = {}
    weight_error = _weight_error(weight_kg)
    if weight_error:
        errors["weight_kg"] = weight_error
    elif round(weight_kg, 2) == patient.weight_kg:
        errors["weight_kg"] = f"The weight on record is already {format_weight(patient.weight_kg)}."
    if not reason:
        errors["reason"] = "Say why the weight is corrected (e.g. the source document it was checked against)."
    elif len(reason) > MAX_COMMENT:
        errors["reason"] = f"Use at most {MAX_COMMENT} characters."
    if errors:
        raise InvalidInput("The weight was not corrected.", errors)
    db.session.execute(select(Patient).where(Patient.id == patient.id).with_for_update()
                       .execution_options(populate_existing=True))
    batches = [(batch, definition_for(batch)) for batch in patient.batches]
    for batch, _ in batches:
        lock_batch(batch, None)
    before = [batch_figures(batch, definition) for batch, definition in batches]
    reauthenticate(actor, credentials, meaning="corrected", subject=f"correction of the weight of patient "
                   f"{patient.patient_ref}", batch_id=None)
    old, new = patient.weight_kg, round(weight_kg, 2)
    change = (f"Weight of patient {patient.patient_ref} corrected from {format_weight(old)} to "
              f"{format_weight(new)} by {actor.full_name}")
    try:
        with audit.action("patient.correct_weight", actor=actor, reason=reason):
            correction = WeightCorrection(patient=patient, old_weight_kg=old, new_weight_kg=new, reason=reason,
                                          corrected_at=now, corrected_by_id=actor.id)
            db.session.add(correction)
            patient.weight_kg = new
            db.session.flush()
            sign(correction, actor=actor, meaning="corrected", now=now)
            for (batch, definition), figures in zip(batches, before, strict=True):
                recompute(batch, definition, figures, corrected=None, change=change, reason=reason, actor=actor,
                          now=now)
                touch(batch, actor, now)
    except (StaleDataError, IntegrityError):
        db.session.rollback()
        raise WeightConflict("A batch of this patient changed while the weight was corrected: nothing was saved. "
                             "Reload the page, check the weight and correct it again.") from None
    return correction
