"""Patient registration: a pseudonymous record and its chain-of-identity code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select

from lab import audit
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Patient, User, utcnow
from lab.permissions import require
from lab.services.sequences import next_code
from workflows.codes import CodeKind

PATIENT_REF_RE = re.compile(r"[A-Z0-9][A-Z0-9-]{1,31}")
INITIALS_RE = re.compile(r"[A-Z]{2,4}")


@dataclass(frozen=True)
class PatientInput:
    patient_ref: str
    initials: str
    date_of_birth: date
    weight_kg: float
    indication: str


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
    if not 1 <= data.weight_kg <= 400:
        errors["weight_kg"] = "Weight must be between 1 and 400 kg."
    if not 2 <= len(indication) <= 128:
        errors["indication"] = "Enter the indication (2 to 128 characters), e.g. systemic lupus erythematosus."
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
        )
        db.session.add(patient)
    return patient
