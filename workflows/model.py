"""The shape of a process definition once loaded: frozen dataclasses, no behaviour.

A definition file (TOML, under ``workflows/definitions/``) is parsed and validated by
``workflows.definition`` into these objects; the engine (``workflows.engine``) answers
questions about them. Nothing here knows about Flask or a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

ROLES = ("technician", "supervisor", "qc_analyst", "qa_officer", "auditor", "admin")

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
FIELD_TYPES = ("number", "integer", "text", "choice", "boolean", "datetime", "lot", "equipment", "coi")


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


@dataclass(frozen=True)
class TransitionSpec:
    """An automatic batch transition: fires when ``when`` holds in a ``source`` state."""

    event: str
    source: tuple[str, ...]
    target: str
    when: str
    title: str = ""


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

    def step(self, key: str) -> StepSpec:
        for spec in self.steps:
            if spec.key == key:
                return spec
        raise KeyError(key)

    def index(self, key: str) -> int:
        return [s.key for s in self.steps].index(key)


class StepState(str, Enum):
    PENDING = "pending"
    IN_PROGRESS = "in progress"
    DONE = "done"
    VERIFIED = "verified"
