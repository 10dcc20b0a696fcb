"""Equipment that steps record by its scanned code, and its logbook (21 CFR 211.67, 211.182).

An instrument is registered with a code carrying a check character; its logbook records, in
order, calibration, maintenance, cleaning and qualification, and every change of its service
status. A step refuses equipment that is out of service, not qualified, or past its
calibration date (workflows.engine).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, Audited, utcnow

if TYPE_CHECKING:
    from lab.models.attachments import Attachment
    from lab.models.users import User

#: Qualification status (IQ/OQ/PQ done and accepted, or not).
QUALIFICATIONS = {"qualified": "Qualified", "not_qualified": "Not qualified"}
#: Logbook entries a person records, and the service changes the app records in the same logbook.
WORK_KINDS = {"calibration": "Calibration", "maintenance": "Maintenance", "cleaning": "Cleaning",
              "qualification": "Qualification"}
SERVICE_KINDS = {"out_of_service": "Taken out of service", "returned_to_service": "Returned to service"}
LOG_KINDS = {**WORK_KINDS, **SERVICE_KINDS}
RESULTS = {"pass": "Pass", "fail": "Fail"}


def kind_title(kind: str) -> str:
    words = kind.replace("_", " ").replace("ln2", "LN2").replace("co2", "CO2")
    return words[:1].upper() + words[1:]


class Equipment(Audited, Model):
    __tablename__ = "equipment"
    __table_args__ = (UniqueConstraint("kind", "serial_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: E-<FIN>-<yy>-<5 digits>-<K> for equipment registered in the app (older rows keep their free-form code).
    code: Mapped[str] = mapped_column(String(64), unique=True)
    #: Equipment kind, matching ``equipment`` in the process definition (e.g. ``incubator``).
    kind: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    #: Last day the instrument may be used before it must be calibrated again.
    calibration_due: Mapped[date | None]
    #: In service; False: out of service (``out_of_service_reason`` says why).
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    serial_number: Mapped[str | None] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(128), default="")
    qualification: Mapped[str] = mapped_column(String(16), default="qualified", server_default="qualified")
    out_of_service_reason: Mapped[str | None] = mapped_column(Text)
    registered_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    registered_by: Mapped[User | None] = relationship()
    log: Mapped[list[EquipmentLogEntry]] = relationship(back_populates="equipment", order_by="EquipmentLogEntry.id")

    @property
    def is_qualified(self) -> bool:
        return self.qualification == "qualified"

    @property
    def kind_title(self) -> str:
        """``ln2_freezer`` -> ``LN2 freezer``, ``cell_processor`` -> ``Cell processor``."""
        return kind_title(self.kind)

    @property
    def status_text(self) -> str:
        """``In service, qualified``; ``Out of service``; ``In service, not qualified``."""
        if not self.active:
            return "Out of service"
        return f"In service, {QUALIFICATIONS.get(self.qualification, self.qualification).lower()}"


class EquipmentLogEntry(AppendOnly, Model):
    """One line of an instrument's logbook, never changed: who did what, when, with what result.

    A passing calibration moves ``Equipment.calibration_due`` to its ``next_due``; a
    qualification sets the qualification status; a return to service is signed by QA
    (meaning "returned to service").
    """

    __tablename__ = "equipment_log"
    signature_record_type: ClassVar[str] = "equipment_log_entry"

    id: Mapped[int] = mapped_column(primary_key=True)
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    #: The day the work was done (not in the future).
    performed_on: Mapped[date]
    #: Who did the work: a user's name or an outside engineer's, as written on the certificate.
    performed_by: Mapped[str] = mapped_column(String(128))
    what: Mapped[str] = mapped_column(Text)
    #: ``pass`` or ``fail`` for work; None for a change of service status.
    result: Mapped[str | None] = mapped_column(String(8))
    next_due: Mapped[date | None]
    attachment_id: Mapped[int | None] = mapped_column(ForeignKey("attachments.id"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    equipment: Mapped[Equipment] = relationship(back_populates="log")
    attachment: Mapped[Attachment | None] = relationship()
    recorded_by: Mapped[User] = relationship()

    @property
    def kind_title(self) -> str:
        return LOG_KINDS.get(self.kind, self.kind)

    def signed_content(self) -> dict[str, Any]:
        """What the signer attests to: the instrument, the entry and its certificate's hash."""
        return {
            "equipment": self.equipment.code,
            "kind": self.kind,
            "performed_on": self.performed_on.isoformat(),
            "performed_by": self.performed_by,
            "what": self.what,
            "result": self.result,
            "next_due": self.next_due.isoformat() if self.next_due else None,
            "attachment_sha256": self.attachment.sha256 if self.attachment else None,
            "recorded_by": self.recorded_by.username,
            "recorded_at": self.recorded_at.isoformat(),
        }
