"""Where a batch stands in time, judged purely from the definition and the times given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workflows.definition import DEFINITIONS_DIR, load_definition
from workflows.model import StepState
from workflows.timing import Timing, culture_day, current_step, duration_words, next_window

DEFINITION = load_definition(DEFINITIONS_DIR / "cd19_car_t_v1.toml")
ACTIVATED = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _states(recorded: list[str], in_progress: tuple[str, ...] = ()) -> dict[str, StepState]:
    definition = DEFINITION
    return {s.key: StepState.IN_PROGRESS if s.key in in_progress else
            StepState.DONE if s.key in recorded else StepState.PENDING for s in definition.steps}


@pytest.mark.parametrize(("hours", "day"), [(0, 0), (23.9, 0), (24, 1), (12 * 24 + 1, 12), (-1, -1)])
def test_culture_day_counts_whole_days(hours: float, day: int) -> None:
    assert culture_day(ACTIVATED, ACTIVATED + timedelta(hours=hours)) == day


@pytest.mark.parametrize(("days", "timing", "text"), [
    (1.5, Timing.EARLY, "Harvest and wash due on culture day 12–13 (now day 1)"),
    (12.2, Timing.DUE, "Harvest and wash due on culture day 12–13 (now day 12)"),
    (13.9, Timing.DUE, "Harvest and wash due on culture day 12–13 (now day 13)"),
    (14.0, Timing.OVERDUE, "Harvest and wash due on culture day 12–13 (now day 14): OVERDUE"),
])
def test_the_harvest_window_is_judged_from_activation(days: float, timing: Timing, text: str) -> None:
    definition = DEFINITION
    states = _states(["receipt", "enrichment", "activation", "transduction"], in_progress=("expansion",))
    status = next_window(definition, states, {"activation": ACTIVATED}, ACTIVATED + timedelta(days=days))
    assert status is not None
    assert (status.step.key, status.timing, status.text) == ("harvest", timing, text)


def test_the_first_waiting_window_is_the_one_reported() -> None:
    definition = DEFINITION
    states = _states(["receipt", "enrichment", "activation"])
    status = next_window(definition, states, {"activation": ACTIVATED}, ACTIVATED + timedelta(days=3))
    assert status is not None and (status.step.key, status.timing) == ("transduction", Timing.OVERDUE)


def test_no_window_before_its_start_step_nor_once_recorded() -> None:
    definition = DEFINITION
    assert next_window(definition, _states(["receipt"]), {}, ACTIVATED) is None
    everything = _states([s.key for s in definition.steps])
    assert next_window(definition, everything, {"activation": ACTIVATED}, ACTIVATED + timedelta(days=40)) is None


def test_current_step_is_the_first_open_one() -> None:
    definition = DEFINITION
    assert current_step(definition, _states([])).key == "receipt"  # type: ignore[union-attr]
    expanding = _states(["receipt", "enrichment", "activation", "transduction"], in_progress=("expansion",))
    assert current_step(definition, expanding).key == "expansion"  # type: ignore[union-attr]
    assert current_step(definition, _states([s.key for s in definition.steps])) is None


@pytest.mark.parametrize(("delta", "words"), [
    (timedelta(minutes=12, seconds=59), "12 min"),
    (timedelta(hours=5, minutes=7), "5 h 07 min"),
    (timedelta(days=3, hours=4, minutes=59), "3 d 04 h"),
    (timedelta(seconds=-30), "0 min"),
])
def test_durations_read_at_a_glance(delta: timedelta, words: str) -> None:
    assert duration_words(delta) == words
