"""What a step form shows beside its fields so the technician can decide: the value each field
had in the last entry of a repeatable step (the previous daily count) with its culture day and
time, what the engine computed from that entry (the fold expansion), and today's culture day
against the step's time window.

Only links the definition makes are followed: the previous entry of the same repeatable step,
and day 0 as the step's window (``after``) or a ``days_since`` field names it. Time windows are
judged by ``workflows.timing`` exactly as the dashboard and the engine judge them.

Read only, and no query of its own: it reads the entries (with their values) and the patient
the caller loaded with the batch (``lab.views.batches.get_batch_or_404`` loads them), so the
form costs the same whatever the number of earlier entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from lab.models import Batch, StepEntry, StepValue, utcnow
from lab.services.progress import entry_context, lab_timezone, typed_values
from lab.services.signatures import current_values
from workflows.engine import compute_derived, typed_value
from workflows.engine_types import FieldValue
from workflows.formatting import format_datetime
from workflows.model import FieldSpec, ProcessDefinition, StepSpec, WindowSpec
from workflows.timing import Timing, culture_day, judge, window_words


@dataclass(frozen=True)
class PreviousValue:
    """A field's current value in the last entry of its repeatable step."""

    spec: FieldSpec
    value: StepValue
    culture_day: int | None  # None when day 0 is not known
    recorded_at: datetime  # when that entry was performed (aware UTC)

    @property
    def out_of_limit(self) -> bool:
        return self.value.out_of_limit


@dataclass(frozen=True)
class LastEntry:
    """The last entry of a repeatable step: its number, day, time and derived values."""

    occurrence: int
    culture_day: int | None
    recorded_at: datetime
    derived: tuple[FieldValue, ...]  # as the engine computes them for the batch page


@dataclass(frozen=True)
class DayLine:
    """Today's culture day and where the step stands against its window.

    ``day`` is None when day 0 (``zero_title``) is not recorded yet; ``timing`` is None for a
    step without a window, or whose window has not started counting.
    """

    zero_title: str
    zero_at: datetime | None
    day: int | None
    step_title: str
    window: WindowSpec | None
    timing: Timing | None
    zone: ZoneInfo  # the lab's, to write day 0's time in

    @property
    def today(self) -> str:
        """"Today is culture day 6 (day 0: Activation, 2026-11-23 09:00 UTC).\""""
        if self.zero_at is None or self.day is None:
            return f"{self.zero_title} is not recorded yet: culture day 0 is not set."
        return (f"Today is culture day {self.day} "
                f"(day 0: {self.zero_title}, {format_datetime(self.zero_at, self.zone)}).")

    @property
    def due(self) -> str:
        """"Harvest and wash is due on culture day 12–13 after Activation." ("" without a window)."""
        if self.window is None:
            return ""
        return f"{self.step_title} is due {window_words(self.window)} after {self.zero_title}."


@dataclass(frozen=True)
class StepContext:
    """Everything ``templates/batches/record.html`` shows beside the fields."""

    repeatable: bool
    previous: dict[str, PreviousValue]  # field key -> its value in the last entry (empty: first entry)
    last: LastEntry | None
    day: DayLine | None  # None: the step counts no culture day

    @property
    def first_entry(self) -> bool:
        """A repeatable step with nothing recorded yet (the first count)."""
        return self.repeatable and self.last is None


def step_context(batch: Batch, definition: ProcessDefinition, step: StepSpec, *,
                 now: datetime | None = None) -> StepContext:
    """The context of a new entry of ``step`` for ``batch`` at ``now`` (default: the clock)."""
    now = now or utcnow()
    by_step: dict[str, list[StepEntry]] = {}
    for entry in batch.entries:
        by_step.setdefault(entry.step_key, []).append(entry)
    zero_key = zero_step(definition, step)
    zero_entries = by_step.get(zero_key, []) if zero_key else []
    zero_at = zero_entries[0].performed_at if zero_entries else None  # as the engine counts windows
    day = None
    if zero_key is not None:
        timing = None
        today = None
        if zero_at is not None:
            today, timing = judge(step.window, zero_at, now) if step.window else (culture_day(zero_at, now), None)
        # Named by its key in words, as the engine's window message names it ("Activation"): the
        # step's title may say "(day 0)" itself.
        day = DayLine(zero_key.replace("_", " ").capitalize(), zero_at, today, step.title, step.window, timing,
                      lab_timezone())
    previous: dict[str, PreviousValue] = {}
    last = None
    own = by_step.get(step.key, []) if step.repeatable else []
    if own:
        entry = own[-1]
        values = current_values(entry)
        entry_day = _entry_day(step, entry, values, zero_at)
        previous = {spec.key: PreviousValue(spec, values[spec.key], entry_day, entry.performed_at)
                    for spec in step.fields if spec.key in values}
        ctx = entry_context(batch, definition, now=entry.performed_at, exclude=entry)
        derived = compute_derived(step, typed_values(step, entry), ctx)
        last = LastEntry(entry.occurrence, entry_day, entry.performed_at,
                         tuple(d for d in derived.values() if d.value is not None))
    return StepContext(step.repeatable, previous, last, day)


def zero_step(definition: ProcessDefinition, step: StepSpec) -> str | None:
    """The step whose recording is culture day 0 for ``step``: its window's ``after``, or the
    step a ``days_since`` field of it counts from; None when the step names neither."""
    if step.window is not None:
        return step.window.after
    counted = next((f.days_since for f in step.fields if f.days_since is not None), None)
    return counted if counted is not None and counted in {s.key for s in definition.steps} else None


def _entry_day(step: StepSpec, entry: StepEntry, values: dict[str, StepValue],
               zero_at: datetime | None) -> int | None:
    """An entry's culture day: the one it recorded (a count's ``days_since`` field), else the
    whole days from day 0 to its recording."""
    for spec in step.fields:
        if spec.days_since is not None and spec.key in values:
            typed = typed_value(spec, values[spec.key].text)
            if isinstance(typed, int) and not isinstance(typed, bool):
                return typed
    return culture_day(zero_at, entry.performed_at) if zero_at is not None else None
