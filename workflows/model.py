"""The shape of a process definition once loaded: frozen dataclasses, no behaviour.

A definition file (TOML, under ``workflows/definitions/``) is parsed and validated by
``workflows.definition`` into these objects; the engine (``workflows.engine``) answers
questions about them. Nothing here knows about Flask or a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

ROLES = ("technician", "supervisor", "qc_analyst", "qa_officer", "auditor", "admin", "clinician")

# Field types an entry form can carry.
#   number    a real number in ``unit`` (e-notation allowed: 1.2e9)
#   integer   a whole number in ``unit`` (or unit-less)
#   text      free text up to ``max_length`` characters
#   choice    one of ``choices``
#   boolean   yes / no
#   datetime  a date and time (interpreted in the lab's time zone when naive)
#   lot       the code of a material lot of kind ``material`` (scanned or typed)
#   equipment the code of an equipment item of kind ``equipment``
#   coi       a chain-of-identity code that must match the batch's patient
#   container  the code of one container of kind ``container`` of this batch (a hand-off scan)
#   containers the codes of several such containers, one per line (``all_of_kind``: every one)
FIELD_TYPES = ("number", "integer", "text", "choice", "boolean", "datetime", "lot", "equipment", "coi",
               "container", "containers")
#: What a container can be; all but the first two end its use at steps. After shipping a bag is
#: "at site" once received, then "infused", "returned", "destroyed" or "unused" (its trail ends).
CONTAINER_STATUSES = ("in use", "stored", "consumed", "shipped", "discarded", "at site", "infused", "returned",
                      "destroyed", "unused")
FINISHED_CONTAINER_STATUSES = CONTAINER_STATUSES[2:]


@dataclass(frozen=True)
class Limits:
    """Bounds on a number. ``None`` means unbounded on that side. Inclusive."""

    min: float | None = None
    max: float | None = None

    def contains(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    @property
    def is_set(self) -> bool:
        return self.min is not None or self.max is not None


@dataclass(frozen=True)
class FieldSpec:
    """One value a step records.

    ``valid`` is the range outside which a value is impossible and refused outright
    (a negative cell count, a viability over 100 %). ``limits`` is the acceptance range:
    a value outside it is kept, flagged, needs a comment and opens a deviation.
    ``deviation_choices`` does the same for choice fields, ``expected`` for booleans.
    """

    key: str
    label: str
    type: str
    unit: str | None = None
    required: bool = True
    help: str = ""
    valid: Limits = Limits()
    limits: Limits = Limits()
    choices: tuple[str, ...] = ()
    deviation_choices: tuple[str, ...] = ()
    expected: bool | None = None
    max_length: int = 500
    material: str | None = None  # lot fields: the material kind the lot must be
    equipment: str | None = None  # equipment fields: the equipment kind
    default: str | None = None  # pre-filled text on the form
    unique_in_step: bool = False  # repeatable steps: no two entries share this value
    container: str | None = None  # container fields: the container kind scanned
    handoff: str | None = None  # container fields: what the scan records in the custody trail
    all_of_kind: bool = False  # containers fields: every open container of the kind must be scanned
    sets_status: str | None = None  # container fields: the status scanned containers move to
    location: str | None = None  # container fields: where they go, e.g. "{ln2_freezer} / rack {rack}"
    # datetime fields: events this one cannot precede. Each name is an earlier step (its
    # recording time), a datetime field of this step, or ``<earlier step>.<datetime field>``.
    not_before: tuple[str, ...] = ()
    days_since: str | None = None  # integer fields: a culture day, counted from this earlier step
    batch_dose: bool = False  # number fields: the batch's target dose, chosen at scheduling ([dose]), not typed
    # lot fields: what an entry uses of the lot, taken from its balance: the value of the number
    # field ``uses`` (in the lot's unit), or the fixed amount ``uses_amount``.
    uses: str | None = None
    uses_amount: float | None = None
    from_lot: str | None = None  # number fields: not typed, the titer of the lot in this lot field


@dataclass(frozen=True)
class DerivedSpec:
    """A value computed from raw inputs, never typed (MOI, fold expansion, dose)."""

    key: str
    label: str
    formula: str
    unit: str | None = None
    limits: Limits = Limits()
    integer: bool = False  # shown and compared as a whole number (number of bags)


@dataclass(frozen=True)
class WindowSpec:
    """When a step is due, counted in whole culture days since ``after`` was recorded."""

    after: str
    min_days: int | None = None
    max_days: int | None = None


@dataclass(frozen=True)
class HoldRule:
    """Recording ``field`` with ``equals`` puts the batch on hold (a rejected bag)."""

    field: str
    equals: str


@dataclass(frozen=True)
class ContainerKind:
    """A kind of physical container the process makes, and what its label says."""

    key: str
    title: str
    stock: str  # label stock: "bag" (4 x 4 in) or "tube" (38 x 19 mm)
    storage: str = ""  # storage condition printed on the label
    regulatory: tuple[str, ...] = ()  # statements the label must carry (21 CFR 1271.90(c))
    description: str = ""  # what the container holds, printed on its label (default: the product)
    dates: tuple[str, ...] = ()  # which of LABEL_DATES its label prints, in this order
    shelf_life_days: int | None = None  # expiry = the time it was filled + this (needs "expires")
    warnings: tuple[str, ...] = ()  # route and handling warnings ("For intravenous use only")


#: Dates a label can print: the collection of the starting material (date and time), when
#: the container was filled or sampled (its creating entry), and its expiry (shelf life).
LABEL_DATES = ("collected", "filled", "sampled", "expires")
#: No single entry creates more containers of one kind than this, whatever a definition says.
MAX_CREATED = 50


@dataclass(frozen=True)
class CreateSpec:
    """Containers a step creates when it is recorded (so labels to print).

    ``count`` is a number or the key of an integer field or derived value of the step
    (the number of product bags), at most ``max``; ``volume`` the key of a number field or
    derived value in mL; ``parent`` the key of a container field of the step the new ones
    come from.
    """

    kind: str
    count: int | str = 1
    volume: str | None = None
    parent: str | None = None
    max: int = MAX_CREATED  # a computed count above this is refused before anything is written


@dataclass(frozen=True)
class StepSpec:
    key: str
    title: str
    role: str  # the role that performs it (a supervisor may act for a technician)
    verify: bool  # a second, different person must verify each entry
    fields: tuple[FieldSpec, ...]
    derived: tuple[DerivedSpec, ...] = ()
    instructions: str = ""
    repeatable: bool = False  # several entries (daily counts); closed when a later step starts
    min_entries: int = 1
    window: WindowSpec | None = None
    hold: HoldRule | None = None
    verifier_role: str = "technician"
    creates: tuple[CreateSpec, ...] = ()

    def field(self, key: str) -> FieldSpec:
        for spec in self.fields:
            if spec.key == key:
                return spec
        raise KeyError(key)

    @property
    def materials(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.type == "lot")

    @property
    def equipment(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.type == "equipment")

    @property
    def handoffs(self) -> tuple[FieldSpec, ...]:
        """The fields where a container is scanned: each scan is a custody event."""
        return tuple(f for f in self.fields if f.type in ("container", "containers"))


#: The meanings a signature can carry (21 CFR 11.50(a)(3)).
SIGNATURE_MEANINGS = ("performed", "verified", "corrected", "reviewed", "approved for release", "rejected",
                      "returned to service", "released for use", "recalled", "approved for use", "received",
                      "administered", "witnessed", "acknowledged")

# Kinds of release test.
#   number  a measured value in ``unit``, judged against a specification interval
#   result  one of ``choices`` (negative / positive, conforms / does not conform), or an
#           interim result such as "no growth to date" before the final one
RESULT_KINDS = ("number", "result")
# What a release test needs before the batch may be released.
#   final    a final result in specification
#   interim  an interim result in specification is enough (sterility at day 7); the final follows
#   none     nothing: the result may come after release (vector copy number), or never (optional test)
BEFORE_RELEASE = ("final", "interim", "none")
# What a QA decision requires besides its source state.
#   release              every step done, verified and signed, every result needed in specification,
#                        no open deviation
#   exceptional_release  as release, but at least one result is out of specification and only the
#                        deviations those results opened may still be open (DOMAIN §4.4)
#   no_open_deviation    every deviation of the batch is closed
REQUIREMENTS = ("release", "exceptional_release", "no_open_deviation")


@dataclass(frozen=True)
class Bound:
    """One side of a specification: ``value`` itself passes when ``inclusive``."""

    value: float
    inclusive: bool = True


@dataclass(frozen=True)
class Specification:
    """The acceptance interval of a number test; ``None`` is unbounded on that side."""

    low: Bound | None = None
    high: Bound | None = None


@dataclass(frozen=True)
class ReleaseTestSpec:
    """One test of the release panel and its specification.

    A ``number`` test has a unit, a valid range (impossible values are refused) and a
    specification. A ``result`` test has final ``choices`` of which ``passing`` meet the
    specification, and optional ``interim`` results, each acceptable to date.
    """

    key: str
    title: str
    method: str
    kind: str
    required: bool = True  # a result is expected for every batch
    before_release: str = "final"
    unit: str | None = None
    valid: Limits = Limits()
    spec: Specification = Specification()
    choices: tuple[str, ...] = ()
    passing: tuple[str, ...] = ()
    interim: tuple[str, ...] = ()
    specification: str = ""  # result tests: the specification in words (default: the passing choices)
    # number tests judged relative to a batch value instead of (or besides) ``spec``: the
    # result must lie within target_low_pct..target_high_pct % of ``target``
    # ("<step>.<field>", e.g. the target dose typed at formulation).
    target: str | None = None
    target_low_pct: float | None = None
    target_high_pct: float | None = None
    # ``computed``: a formula over ``<step>.<field or derived value>`` and patient.weight_kg
    # giving the value the process made (the dose from formulation). Without a typed result it
    # is the result; a typed result differing from it by more than ``tolerance_pct`` % is flagged.
    computed: str | None = None
    tolerance_pct: float | None = None


@dataclass(frozen=True)
class DecisionSpec:
    """A decision a person takes on a batch (release, reject, hold), signed with ``meaning``.

    ``target`` None means the batch returns to the state it was held from. ``independent``
    decisions may not be taken by anyone who performed, corrected or verified a step of
    the batch (segregation of duties).
    """

    key: str
    title: str
    source: tuple[str, ...]
    target: str | None
    role: str
    meaning: str
    requires: str | None = None
    independent: bool = True
    reason_required: bool = True


@dataclass(frozen=True)
class ReleaseRules:
    """When QC results may be recorded, and what a result after release does."""

    result_states: tuple[str, ...]  # states in which results may be recorded
    released_states: tuple[str, ...]  # a result in these is late; a late failure moves the batch to:
    late_failure_state: str


@dataclass(frozen=True)
class TransitionSpec:
    """An automatic batch transition: fires when ``when`` holds in a ``source`` state."""

    event: str
    source: tuple[str, ...]
    target: str
    when: str
    title: str = ""


@dataclass(frozen=True)
class DoseRange:
    """The target dose a batch of this process is scheduled with: ``default`` within ``min``..``max``
    (inclusive), in ``unit`` (e.g. "cells/kg"); a field with ``batch_dose`` takes it from the batch."""

    unit: str
    min: float
    max: float
    default: float


@dataclass(frozen=True)
class ProcessDefinition:
    key: str
    version: int
    title: str
    product: str
    initial_state: str
    recording_states: tuple[str, ...]  # states in which steps may be recorded
    states: dict[str, str]  # state key -> title, in file order
    transitions: tuple[TransitionSpec, ...]
    steps: tuple[StepSpec, ...]
    sha256: str  # of the file's bytes (UTF-8 text)
    source_name: str  # the file it came from, for messages
    source_text: str = field(repr=False, default="")
    container_kinds: dict[str, ContainerKind] = field(default_factory=dict)
    release_tests: tuple[ReleaseTestSpec, ...] = ()
    decisions: tuple[DecisionSpec, ...] = ()
    release: ReleaseRules | None = None  # set whenever there are release tests
    investigational: str = ""  # the investigational-use statement product labels print, when set
    dose: DoseRange | None = None  # the target doses a batch may be scheduled with, when the process sets one
    #: The longest time from the start of thawing a bag to the end of its infusion, when the
    #: process sets one (commercial CAR-T labels: 30 minutes to 3 hours); the RfIC prints it.
    thaw_to_infusion_minutes: int | None = None
    #: The range (°C) a shipper's temperature logger must stay within from packing to receipt,
    #: when the process sets one; a reading outside quarantines the product at the site.
    shipping_temperature: Limits | None = None

    def step(self, key: str) -> StepSpec:
        for spec in self.steps:
            if spec.key == key:
                return spec
        raise KeyError(key)

    def index(self, key: str) -> int:
        return [s.key for s in self.steps].index(key)

    def release_test(self, key: str) -> ReleaseTestSpec:
        for spec in self.release_tests:
            if spec.key == key:
                return spec
        raise KeyError(key)

    def decision(self, key: str) -> DecisionSpec:
        for spec in self.decisions:
            if spec.key == key:
                return spec
        raise KeyError(key)


class StepState(str, Enum):
    PENDING = "pending"
    IN_PROGRESS = "in progress"
    DONE = "done"
    VERIFIED = "verified"
