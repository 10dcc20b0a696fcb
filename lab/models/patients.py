"""Patients, known to the lab only by a pseudonymous ID and their chain-of-identity code."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, Audited, fixed_once_stored, utcnow

if TYPE_CHECKING:
    from lab.models.batches import Batch
    from lab.models.clinic import Site
    from lab.models.users import User


class Patient(Audited, Model):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Pseudonymous subject ID from the clinic or trial (no name is stored).
    patient_ref: Mapped[str] = mapped_column(String(32), unique=True)
    initials: Mapped[str] = mapped_column(String(4))
    date_of_birth: Mapped[date]
    #: Body weight in kg: the dose is prescribed per kg.
    weight_kg: Mapped[float] = mapped_column(Numeric(6, 2, asdecimal=False))
    indication: Mapped[str] = mapped_column(String(128))
    #: Chain-of-identity code, assigned at registration and printed on every container.
    coi: Mapped[str] = mapped_column(String(32), unique=True)
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    registered_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: The site that treats the patient: its clinicians see the patient, their products go there.
    #: Chosen at registration, or by the first shipment when none was.
    treating_site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)

    registered_by: Mapped[User] = relationship()
    treating_site: Mapped[Site | None] = relationship()
    batches: Mapped[list[Batch]] = relationship(back_populates="patient", order_by="Batch.id")
    weight_corrections: Mapped[list[WeightCorrection]] = relationship(
        back_populates="patient", order_by="WeightCorrection.id")


#: Every label, record and shipment carries them; pages that list batches keep them per patient
#: (lab/services/batch_summary.py).
fixed_once_stored("A patient's reference and chain-of-identity code never change once registered.",
                  Patient.patient_ref, Patient.coi)


class WeightCorrection(AppendOnly, Model):
    """A correction of a patient's weight: the value it replaced, who, when and why.

    ``Patient.weight_kg`` holds the current value (the dose is computed from it); the
    values it had before stay here, and each correction is signed (meaning "corrected").
    """

    __tablename__ = "weight_corrections"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    old_weight_kg: Mapped[float] = mapped_column(Numeric(6, 2, asdecimal=False))
    new_weight_kg: Mapped[float] = mapped_column(Numeric(6, 2, asdecimal=False))
    reason: Mapped[str] = mapped_column(Text)
    corrected_at: Mapped[datetime] = mapped_column(default=utcnow)
    corrected_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    patient: Mapped[Patient] = relationship(back_populates="weight_corrections")
    corrected_by: Mapped[User] = relationship()

    @property
    def batch_id(self) -> int | None:
        """A weight belongs to the patient, not to one batch: its signature names no batch."""
        return None
