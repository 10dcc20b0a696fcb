"""The executed batch record as plain data: a snapshot ``lab/`` builds and ``labels.record`` prints.

Everything in it comes from the stored record, so two snapshots of an unchanged batch are
equal and have the same digest (``labels.digest``). What belongs to one printout only
(who downloaded it, when) is not in here: it is passed to the printer beside the record.
Times are aware datetimes (printed in UTC); every list is in recording order. Values are
kept in their storage form (``1.8e9``, ``2026-11-13T00:05Z``), which the digest covers; the
printer writes them for people through ``workflows.formatting``, told how by the field's
type (outside the digest: the process definition its SHA-256 pins says it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from labels.chart import ExpansionChart
from labels.data import check_aware, check_code
from labels.digest import ABSENT_WHEN_NONE, NOT_CANONICAL
from workflows.codes import CodeKind

if TYPE_CHECKING:
    from labels.distribution_data import DistributionRecord

#: A censored result ("< 0.5", below the method's limit of quantitation): the sign, the number.


@dataclass(frozen=True)
class Signed:
    """An electronic signature as printed (21 CFR 11.50): printed name, meaning, time, and
    whether it still matches the content it signed (``False``: the record changed since)."""

    printed_name: str
    meaning: str
    signed_at: datetime
    valid: bool

    def __post_init__(self) -> None:
        check_aware("signed_at", self.signed_at)


@dataclass(frozen=True)
class ValueVersion:
    """One value of a field as recorded: the original (``reason`` None) or a correction."""

    text: str
    unit: str | None
    out_of_limit: bool
    message: str  # why it is out of limit
    item: str | None  # what a lot or equipment code names ("TexMACS GMP medium, expires 2027-11-25")
    recorded_by: str
    recorded_at: datetime
    reason: str | None

    def __post_init__(self) -> None:
        check_aware("recorded_at", self.recorded_at)


@dataclass(frozen=True)
class FieldRecord:
    """A field of an entry with every value it had, oldest first; the last one is current.

    ``kind`` is ``value``, ``material`` (a lot), ``equipment`` or ``container`` (a hand-off scan).
    """

    key: str
    label: str
    kind: str
    limit: str
    versions: tuple[ValueVersion, ...]
    #: The field's type in the process definition (number, integer, datetime, text...): how to print it.
    type: str = field(default="text", metadata=NOT_CANONICAL)

    @property
    def current(self) -> ValueVersion | None:
        return self.versions[-1] if self.versions else None

    @property
    def changed(self) -> bool:
        """Changed since original entry (EU GMP Annex 11 §8.2)."""
        return len(self.versions) > 1


@dataclass(frozen=True)
class DerivedRecord:
    """A value computed from the entry's current values (never typed)."""

    key: str
    label: str
    text: str  # empty: not computable
    unit: str | None
    limit: str
    out_of_limit: bool


@dataclass(frozen=True)
class OriginalFile:
    """The instrument's file an entry's values came from (a cell counter's export), kept with the
    record: its name and SHA-256, which a copy of the file is checked against."""

    filename: str
    sha256: str


@dataclass(frozen=True)
class EntryRecord:
    occurrence: int
    performed_by: str
    performed_at: datetime
    comment: str | None
    fields: tuple[FieldRecord, ...]
    derived: tuple[DerivedRecord, ...]
    signatures: tuple[Signed, ...]
    awaiting_verification: bool
    #: The file the values were imported from (None: typed in the form).
    original_file: OriginalFile | None = field(default=None, metadata=ABSENT_WHEN_NONE)

    def __post_init__(self) -> None:
        check_aware("performed_at", self.performed_at)


@dataclass(frozen=True)
class StepRecord:
    key: str
    title: str
    verify: bool  # a second person verifies each entry
    entries: tuple[EntryRecord, ...]


@dataclass(frozen=True)
class BagContents:
    """What a bag of the product holds and when it expires, as its label prints it: its CAR+
    viable T cells, their dose per kg of ``weight_kg``, its fill and its expiry (None where the
    process sets no shelf life)."""

    cells: Decimal
    per_kg: Decimal
    weight_kg: Decimal
    filled_at: datetime
    expires_at: datetime | None

    def __post_init__(self) -> None:
        check_aware("bag dates", self.filled_at, self.expires_at)


@dataclass(frozen=True)
class ContainerRecord:
    code: str
    title: str  # "Final product bag 1 of 2"
    volume: str | None
    status: str
    location: str | None
    labels_printed: int
    reprints: tuple[str, ...]  # the reason given for each reprint
    #: A product bag's contents. Outside the digest: computed from the concentration and the
    #: volume its entry recorded and from the process definition the record's SHA-256 pins.
    contents: BagContents | None = field(default=None, metadata=NOT_CANONICAL)


@dataclass(frozen=True)
class CustodyRecord:
    occurred_at: datetime
    container: str | None
    event: str
    step: str | None
    scanned: str
    from_location: str | None
    to_location: str | None
    actor: str
    matched: bool
    message: str

    def __post_init__(self) -> None:
        check_aware("occurred_at", self.occurred_at)


@dataclass(frozen=True)
class DeviationRecord:
    number: str
    title: str
    source: str  # what opened it, in words
    status: str
    description: str
    opened_at: datetime
    opened_by: str
    classification: str | None
    root_cause: str | None
    impact: str | None
    corrective_action: str | None
    preventive_action: str | None
    investigated_by: str | None
    investigated_at: datetime | None
    closed_by: str | None
    closed_at: datetime | None
    signatures: tuple[Signed, ...]

    def __post_init__(self) -> None:
        check_aware("deviation times", self.opened_at, self.investigated_at, self.closed_at)


@dataclass(frozen=True)
class ResultRecord:
    """One reported result of a release test; ``reason`` is set for a correction."""

    text: str  # with its unit
    verdict: str  # pass, fail or interim
    final: bool
    specification: str  # as judged
    comment: str | None
    recorded_by: str
    recorded_at: datetime
    late: bool  # recorded after release
    reason: str | None
    superseded: bool  # a later correction replaced it
    signatures: tuple[Signed, ...]

    def __post_init__(self) -> None:
        check_aware("recorded_at", self.recorded_at)


@dataclass(frozen=True)
class ReleaseTestRecord:
    key: str
    title: str
    method: str
    specification: str
    status: str  # pass, fail, interim, pending or n/a (optional, not reported)
    results: tuple[ResultRecord, ...]
    #: The test's kind (number or result) and unit in the process definition: how to print its results.
    kind: str = field(default="result", metadata=NOT_CANONICAL)
    unit: str | None = field(default=None, metadata=NOT_CANONICAL)


@dataclass(frozen=True)
class DecisionRecord:
    title: str
    state_before: str
    state_after: str
    reason: str | None
    physician_name: str | None
    physician_request: str | None
    risk_assessment: str | None
    physician_confirmation: str | None
    record_sha256: str  # digest of the entries and results the decision was taken on
    decided_by: str
    decided_at: datetime
    signatures: tuple[Signed, ...]

    def __post_init__(self) -> None:
        check_aware("decided_at", self.decided_at)


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the batch's audit trail (21 CFR 11.10(e))."""

    id: int
    occurred_at: datetime
    actor: str
    action: str
    operation: str
    table: str
    row: str
    field: str | None
    old_value: str | None
    new_value: str | None
    reason: str | None

    def __post_init__(self) -> None:
        check_aware("occurred_at", self.occurred_at)


@dataclass(frozen=True)
class LotUsed:
    """A material lot the batch used: its identity, its release (and any later recall), the
    quantity this batch took from it and the steps that scanned it."""

    code: str
    name: str
    lot_number: str
    supplier: str
    expiry: date
    status: str
    quantity: str  # as printed ("7.5 mL"), or "not counted" where the step takes no amount
    steps: tuple[str, ...]


@dataclass(frozen=True)
class EquipmentUsed:
    """An instrument the batch used and its calibration status on the days it was used."""

    code: str
    name: str
    calibration: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class TrailReview:
    """The newest review of the audit trail covering the batch's trail (Annex 11 §9): by whom,
    when, the period reviewed, the last entry it saw, and how many of the batch's entries
    were written after it (not yet reviewed)."""

    reviewed_by: str
    reviewed_at: datetime
    period_from: date
    period_to: date
    head_entry: int
    later_entries: int

    def __post_init__(self) -> None:
        check_aware("reviewed_at", self.reviewed_at)


@dataclass(frozen=True)
class BatchRecordData:
    """The executed batch record of one batch, as it stands."""

    batch_number: str
    coi: str
    patient_ref: str
    product: str
    process_key: str
    process_title: str
    process_version: int
    process_sha256: str
    facility_name: str
    state: str  # in words
    started_at: datetime
    started_by: str
    steps: tuple[StepRecord, ...]
    containers: tuple[ContainerRecord, ...]
    custody: tuple[CustodyRecord, ...]
    deviations: tuple[DeviationRecord, ...]
    release_tests: tuple[ReleaseTestRecord, ...]
    decisions: tuple[DecisionRecord, ...]
    audit: tuple[AuditRecord, ...]
    lots: tuple[LotUsed, ...] = ()
    equipment: tuple[EquipmentUsed, ...] = ()
    #: The expansion chart, printed after its step. Outside the digest: it draws the current
    #: values of entries the record holds (and the windows of the process its SHA-256 pins).
    expansion: ExpansionChart | None = field(default=None, metadata=NOT_CANONICAL)
    #: When the trail was last reviewed (None: not yet). Outside the digest: a review of the
    #: trail is not a change to the batch's record.
    trail_review: TrailReview | None = field(default=None, metadata=NOT_CANONICAL)
    #: After release: shipments, receipts, bedside checks, infusions, disposals, the vein-to-vein
    #: time and the notices of late results (None: nothing shipped yet).
    distribution: DistributionRecord | None = field(default=None, metadata=ABSENT_WHEN_NONE)

    def __post_init__(self) -> None:
        check_code(self.batch_number, CodeKind.BATCH)
        check_code(self.coi, CodeKind.COI)
        check_aware("started_at", self.started_at)


@dataclass(frozen=True)
class Issue:
    """Who a printout was issued to and when: the footer's "Downloaded by <name> at <time>"."""

    issued_to: str
    issued_at: datetime
    verb: str = "Downloaded"

    def __post_init__(self) -> None:
        check_aware("issued_at", self.issued_at)
