"""Where a batch stands in time: its current step, the culture day, and the step windows of
the process definition (due, not yet due, overdue). Pure: the caller gives the times.

A window counts whole culture days since its ``after`` step was first recorded, exactly as
the engine judges an entry (``workflows.engine``): day 0 is the day of that step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from workflows.model import ProcessDefinition, StepSpec, StepState, WindowSpec


class Timing(str, Enum):
    EARLY = "not yet due"
    DUE = "due"
    OVERDUE = "overdue"


@dataclass(frozen=True)
class WindowStatus:
    """A windowed step not yet recorded, judged at a moment."""

    step: StepSpec
    culture_day: int
    timing: Timing

    @property
    def text(self) -> str:
        """"Harvest and wash due on culture day 12–13 (today: day 14): OVERDUE"."""
        return f"{self.step.title} due {window_words(self.step.window)} (now day {self.culture_day})" + (
            ": OVERDUE" if self.timing is Timing.OVERDUE else "")


def culture_day(started: datetime, now: datetime) -> int:
    """Whole days since ``started`` (day 0 is the first 24 hours)."""
    return math.floor((now - started).total_seconds() / 86400)


def day_range(low: int | None, high: int | None, noun: str = "day") -> str:
    """"day 12–13", "day 12", "from day 3", "by day 5" ("" when open on both sides)."""
    if low is not None and high is not None:
        return f"{noun} {low}–{high}" if low != high else f"{noun} {low}"
    if low is not None:
        return f"from {noun} {low}"
    return f"by {noun} {high}" if high is not None else ""


def window_words(window: WindowSpec | None) -> str:
    """"on culture day 12–13", "from culture day 3", "by culture day 5"."""
    if window is None:
        return ""
    words = day_range(window.min_days, window.max_days, "culture day")
    return f"on {words}" if window.min_days is not None and window.max_days is not None else words


def judge(window: WindowSpec, started: datetime, now: datetime) -> tuple[int, Timing]:
    """The culture day at ``now`` of a window counted from ``started``, and where it stands."""
    day = culture_day(started, now)
    if window.max_days is not None and day > window.max_days:
        return day, Timing.OVERDUE
    if window.min_days is not None and day < window.min_days:
        return day, Timing.EARLY
    return day, Timing.DUE


def current_step(definition: ProcessDefinition, states: Mapping[str, StepState]) -> StepSpec | None:
    """The first step still to be recorded or still open (a repeatable step in progress);
    None once every step has its entries."""
    return next((s for s in definition.steps if states[s.key] in (StepState.PENDING, StepState.IN_PROGRESS)), None)


def next_window(
    definition: ProcessDefinition,
    states: Mapping[str, StepState],
    first_recorded: Mapping[str, datetime],
    now: datetime,
) -> WindowStatus | None:
    """The first step not yet recorded whose window has started counting (its ``after`` step
    is recorded), judged at ``now``; None when no such step is waiting."""
    for step in definition.steps:
        window = step.window
        if window is None or states[step.key] is not StepState.PENDING or window.after not in first_recorded:
            continue
        return WindowStatus(step, *judge(window, first_recorded[window.after], now))
    return None


def duration_words(delta: timedelta) -> str:
    """"3 d 04 h", "5 h 07 min", "12 min": a clock a technician reads at a glance."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min"
