"""Batches, the process definition each one pins, and the step entries recorded for it.

Entries and values are append-only: a correction is a new value that points to the one
it supersedes, with who, when and why; the old value stays in the record.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Float, ForeignKey, Index, String, Text, UniqueConstraint, bindparam, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lab.extensions import Model
from lab.models.base import AppendOnly, Audited, utcnow

if TYPE_CHECKING:
    from lab.models.containers import Container
    from lab.models.inventory import Equipment, MaterialLot
    from lab.models.patients import Patient
    from lab.models.quality import Deviation
    from lab.models.release import Disposition, QcResult
    from lab.models.users import User


class ProcessDefinitionRecord(AppendOnly, Model):
    """The exact text of a process definition some batch started with."""

    __tablename__ = "process_definitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    source_name: Mapped[str] = mapped_column(String(255))
    source_text: Mapped[str] = mapped_column(Text)
    stored_at: Mapped[datetime] = mapped_column(default=utcnow)


#: Batches no longer being made or tested.
CLOSED_STATES = ("released", "rejected", "shipped")
#: The open batches, as the partial index ``ix_batches_open_created_at`` says it: a query whose
#: condition is written the same way (``Batch.is_open``) reads that index alone.
OPEN_BATCHES = "state NOT IN ('released', 'rejected', 'shipped')"


class Batch(Audited, Model):
    """One manufacturing run for one patient; its ``state`` is decided by workflows/."""

    __tablename__ = "batches"
    # The dashboard's and the quality alerts' newest batches of some states: each index is read
    # from its newest end, its state checked in the index, until the page is full (no sort).
    __table_args__ = (
        Index("ix_batches_created_at_state", "created_at", "state"),
        Index("ix_batches_updated_at_state", "updated_at", "state"),
        # However many batches are closed, the open ones are read without passing them.
        Index("ix_batches_open_created_at", "created_at", sqlite_where=text(OPEN_BATCHES),
              postgresql_where=text(OPEN_BATCHES)),
    )
    __audit_ignore__ = frozenset({"version", "updated_at", "updated_by_id"})

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_number: Mapped[str] = mapped_column(String(32), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    definition_id: Mapped[int] = mapped_column(ForeignKey("process_definitions.id"))
    state: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: Who last changed the batch and when: what a user who lost a concurrent save is told.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: Optimistic lock: every change to the batch or its entries increments it.
    version: Mapped[int] = mapped_column(default=1)
    #: While on hold: the state it was held from, where lifting the hold returns it.
    held_from: Mapped[str | None] = mapped_column(String(32))
    #: The dose chosen at scheduling from the definition's [dose] range (its unit), when it has one.
    target_dose: Mapped[float | None] = mapped_column(Float)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy reads it as is)

    @classmethod
    def is_open(cls) -> ColumnElement[bool]:
        """The condition "not closed", with the states written into the SQL as OPEN_BATCHES has them
        (not bound), so that the planner sees the partial index's own condition."""
        return cls.state.not_in(bindparam("closed_states", CLOSED_STATES, expanding=True, literal_execute=True))

    patient: Mapped[Patient] = relationship(back_populates="batches")
    definition: Mapped[ProcessDefinitionRecord] = relationship()
    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id])
    updated_by: Mapped[User] = relationship(foreign_keys=[updated_by_id])
    entries: Mapped[list[StepEntry]] = relationship(back_populates="batch", order_by="StepEntry.id")
    deviations: Mapped[list[Deviation]] = relationship(back_populates="batch", order_by="Deviation.id")
    results: Mapped[list[QcResult]] = relationship(back_populates="batch", order_by="QcResult.id")
    dispositions: Mapped[list[Disposition]] = relationship(back_populates="batch", order_by="Disposition.id")
    containers: Mapped[list[Container]] = relationship(back_populates="batch", order_by="Container.id")

    @property
    def audit_batch_id(self) -> int | None:
        return self.id


class StepEntry(AppendOnly, Model):
    """One recording of a step (a repeatable step such as a daily count has several)."""

    __tablename__ = "step_entries"
    __table_args__ = (UniqueConstraint("batch_id", "step_key", "occurrence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    step_key: Mapped[str] = mapped_column(String(64))
    occurrence: Mapped[int] = mapped_column(default=1)
    performed_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    performed_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Why out-of-limit values or a late step are acceptable, as the performer saw it.
    comment: Mapped[str | None] = mapped_column(Text)

    batch: Mapped[Batch] = relationship(back_populates="entries")
    performed_by: Mapped[User] = relationship()
    values: Mapped[list[StepValue]] = relationship(back_populates="entry", order_by="StepValue.id")

    @property
    def audit_batch_id(self) -> int | None:
        return self.batch_id


class StepValue(AppendOnly, Model):
    """A value of one field of an entry. Current unless a later value supersedes it."""

    __tablename__ = "step_values"

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("step_entries.id"), index=True)
    field_key: Mapped[str] = mapped_column(String(64))
    #: Canonical text as the engine returned it; parsing it again gives the same value.
    text: Mapped[str] = mapped_column(Text)
    number: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(32))
    out_of_limit: Mapped[bool] = mapped_column(default=False)
    limit_text: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(String(255), default="")
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("material_lots.id"))
    equipment_id: Mapped[int | None] = mapped_column(ForeignKey("equipment.id"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: The value this one corrects; a value is superseded at most once.
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("step_values.id"), unique=True)
    #: Mandatory for a correction; empty for a value recorded with its entry.
    reason: Mapped[str | None] = mapped_column(Text)

    entry: Mapped[StepEntry] = relationship(back_populates="values")
    recorded_by: Mapped[User] = relationship()
    lot: Mapped[MaterialLot | None] = relationship()
    equipment: Mapped[Equipment | None] = relationship()

    @property
    def is_correction(self) -> bool:
        return self.reason is not None

    @property
    def audit_batch_id(self) -> int | None:
        return self.entry.batch_id
