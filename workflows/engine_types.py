"""Plain values passed to and returned by the engine (``workflows.engine``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

Value = float | int | str | bool | datetime


@dataclass(frozen=True)
class LotInfo:
    """A material lot as lab/ found it by its code."""

    code: str
    material: str  # kind, e.g. "lentiviral_vector"
    name: str
    expiry_date: date
    status: str  # "released", "quarantined", "rejected" or "recalled"
    balance: float | None = None  # what is left, in ``unit``; None: not counted
    unit: str | None = None
    titer: float | None = None  # vector lots: functional titer (TU/mL) from the certificate


@dataclass(frozen=True)
class EquipmentInfo:
    code: str
    kind: str
    name: str
    calibration_due: date | None  # None: no calibration needed
    is_active: bool = True
    qualified: bool = True
    out_of_service_reason: str | None = None


@dataclass(frozen=True)
class ContainerInfo:
    """A container as lab/ found it by its scanned code."""

    code: str
    kind: str
    title: str  # e.g. "Final product bag 1 of 2"
    batch_number: str
    coi: str
    status: str


@dataclass(frozen=True)
class PriorEntry:
    """The current (corrected) typed values of one earlier entry of the batch."""

    values: Mapping[str, Value | None]
    recorded_at: datetime  # aware UTC


@dataclass(frozen=True)
class EntryContext:
    """What the engine needs to know besides the typed text of the entry.

    ``prior`` maps a step key to its entries in recording order (the entry being
    corrected excluded). ``lots``, ``equipment`` and ``containers`` hold what lab/ found
    for each code typed into a lot, equipment or container field (None when no such code
    exists); ``containers`` also holds every container of the batch.
    """

    now: datetime  # aware UTC: the server's time of recording
    tz: ZoneInfo  # the lab's time zone, for naive date-times typed on the form
    patient: Mapping[str, Any]  # at least weight_kg and coi
    batch_coi: str
    prior: Mapping[str, list[PriorEntry]] = field(default_factory=dict)
    lots: Mapping[str, LotInfo | None] = field(default_factory=dict)
    equipment: Mapping[str, EquipmentInfo | None] = field(default_factory=dict)
    batch_number: str = ""
    #: Every container of the batch, and any other code scanned (None when unknown).
    containers: Mapping[str, ContainerInfo | None] = field(default_factory=dict)
    #: Step key -> title, to name the events a date-time must follow (default: the key in words).
    step_titles: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldValue:
    """One checked value (typed or derived), ready to store and to show."""

    key: str
    label: str
    text: str  # canonical text; parsing it again gives the same value
    value: Value | None
    unit: str | None = None
    out_of_limit: bool = False
    limit_text: str = ""  # the acceptance limit in words, e.g. "≥ 70 %"
    message: str = ""  # why it is out of limit, in words a technician understands


@dataclass(frozen=True)
class EntryResult:
    values: dict[str, FieldValue]  # raw fields, in definition order (only valid ones)
    derived: dict[str, FieldValue]
    errors: dict[str, str]  # field key (or "" for the step) -> why it is refused
    window_message: str = ""  # non-empty when the step is outside its time window
    hold: bool = False  # the entry puts the batch on hold

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def exceptions(self) -> list[FieldValue]:
        """Out-of-limit raw and derived values: each needs a comment and a deviation."""
        return [v for v in (*self.values.values(), *self.derived.values()) if v.out_of_limit]

    @property
    def needs_comment(self) -> bool:
        return bool(self.exceptions or self.window_message)


@dataclass(frozen=True)
class StepProgress:
    """How far one step of a batch has got, as lab/ counts it."""

    entries: int = 0
    unverified: int = 0  # entries still waiting for (re-)verification
    hold: bool = False  # an entry asked for the batch to be held
