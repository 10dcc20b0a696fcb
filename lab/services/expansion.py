"""The expansion chart's data (``labels.chart.ExpansionChart``) from a batch's current values.

What to draw is read from the definition the batch pinned, not hard-coded: the daily counts
are the entries of the repeatable step that records a ``culture_day`` and ``viable_cells``;
the cells seeded are the divisor of that step's derived ``viable_cells / <step>.<field>``
(the fold expansion), and the recording of that step is culture day 0; a step with a
time window counted from it is a shaded window, and if it counts viable cells too (a
field in cells whose key ends in ``viable_cells``: transduction, harvest) its count is a
point, on the whole culture day the engine's windows count. Values are the current ones
(a correction replaces what it corrects); viability flags are those the values were
recorded with. Reads only the entries and values the batch has loaded; writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from lab.models import Batch, StepEntry, StepValue
from lab.services.progress import definition_for
from lab.services.signatures import current_values
from labels.chart import ExpansionChart, ExpansionPoint, ExpansionWindow
from workflows.engine import typed_value
from workflows.model import FieldSpec, ProcessDefinition, StepSpec
from workflows.timing import culture_day

DAY_FIELD = "culture_day"
CELLS_FIELD = "viable_cells"
_RATIO = re.compile(r"\s*(\w+)\s*/\s*(\w+)\.(\w+)\s*")


@dataclass(frozen=True)
class _Fields:
    """The fields of a step that a point is made of."""

    cells: FieldSpec
    viability: FieldSpec | None


def count_step(definition: ProcessDefinition) -> StepSpec | None:
    """The repeatable step of the daily counts, or None when the process has none."""
    for step in definition.steps:
        keys = {f.key for f in step.fields}
        if step.repeatable and {DAY_FIELD, CELLS_FIELD} <= keys:
            return step
    return None


def seeded_reference(step: StepSpec) -> tuple[str, str] | None:
    """(step key, field key) of the seeded count: the divisor of the step's fold expansion."""
    for derived in step.derived:
        match = _RATIO.fullmatch(derived.formula)
        if match and match.group(1) == CELLS_FIELD:
            return match.group(2), match.group(3)
    return None


def expansion_chart(batch: Batch, definition: ProcessDefinition | None = None) -> ExpansionChart | None:
    """The expansion chart of ``batch``; None when its process has no daily counts or none
    is recorded yet."""
    definition = definition or definition_for(batch)
    step = count_step(definition)
    if step is None:
        return None
    by_step: dict[str, list[StepEntry]] = {}
    for entry in batch.entries:
        by_step.setdefault(entry.step_key, []).append(entry)
    counts = by_step.get(step.key, [])
    if not counts:
        return None
    reference = seeded_reference(step)
    zero_key = reference[0] if reference else None
    seeded: float | None = None
    seeded_title = ""
    zero_at: datetime | None = None
    if reference is not None and reference[0] in {s.key for s in definition.steps}:
        zero_step = definition.step(reference[0])
        seeded_title = zero_step.title
        zero_entries = by_step.get(zero_step.key, [])
        if zero_entries:
            zero_at = zero_entries[0].performed_at  # as the engine counts windows
            value = current_values(zero_entries[-1]).get(reference[1])  # as formulas read it
            seeded = _number(zero_step, reference[1], value)
    if zero_key is None:  # no seeded count: the windows still tell day 0
        zero_key = next((s.window.after for s in definition.steps if s.window is not None), None)
    viability = viability_field(step)
    points = [_point(step, _Fields(step.field(CELLS_FIELD), viability), entry, seeded,
                     day=_number(step, DAY_FIELD, current_values(entry).get(DAY_FIELD)), own=True)
              for entry in counts]
    windows = []
    for other in definition.steps:
        if other.window is None or other.window.after != zero_key or other.key == step.key:
            continue
        windows.append(ExpansionWindow(other.title, other.window.min_days, other.window.max_days))
        cells = cells_field(other)
        if cells is None or zero_at is None:
            continue
        for entry in by_step.get(other.key, []):
            day = culture_day(zero_at, entry.performed_at)
            points.append(_point(other, _Fields(cells, viability_field(other)), entry, seeded, day=day, own=False))
    kept = sorted((p for p in points if p is not None), key=lambda p: (p.day, p.step != ""))
    return ExpansionChart(
        points=tuple(kept),
        seeded_cells=seeded,
        viability_limit_min=viability.limits.min if viability else None,
        viability_limit_max=viability.limits.max if viability else None,
        windows=tuple(windows),
        step_key=step.key,
        seeded_step=seeded_title,
    )


def _number(step: StepSpec, key: str, value: StepValue | None) -> float | None:
    if value is None:
        return None
    typed = typed_value(step.field(key), value.text)
    return float(typed) if isinstance(typed, (int, float)) and not isinstance(typed, bool) else None


def viability_field(step: StepSpec) -> FieldSpec | None:
    """The step's viability: a number in % whose key says viability (``post_viability_pct``)."""
    return next((f for f in step.fields if f.type == "number" and f.unit == "%" and "viability" in f.key),
                None)


def cells_field(step: StepSpec) -> FieldSpec | None:
    """The step's viable cell count: a number of cells whose key ends in ``viable_cells``."""
    return next((f for f in step.fields if f.type == "number" and f.unit == "cells"
                 and f.key.endswith(CELLS_FIELD)), None)


def _point(step: StepSpec, fields: _Fields, entry: StepEntry, seeded: float | None, *, day: float | None,
           own: bool) -> ExpansionPoint | None:
    """One count; None without a culture day (an entry that could not say which day it was)."""
    if day is None:
        return None
    values = current_values(entry)
    cells = _number(step, fields.cells.key, values.get(fields.cells.key))
    shown = [values.get(fields.cells.key)]
    viability_pct = None
    flagged = False
    limits = fields.viability.limits if fields.viability else None
    if fields.viability is not None:
        value = values.get(fields.viability.key)
        viability_pct = _number(step, fields.viability.key, value)
        flagged = bool(value is not None and value.out_of_limit)
        shown.append(value)
    if own:
        shown.append(values.get(DAY_FIELD))
    return ExpansionPoint(
        day=int(day),
        viable_cells=cells,
        viability_pct=viability_pct,
        fold_expansion=cells / seeded if cells is not None and seeded else None,
        viability_out_of_limit=flagged,
        viability_limit_min=limits.min if limits else None,
        viability_limit_max=limits.max if limits else None,
        step="" if own else step.title,
        corrected=any(v is not None and v.is_correction for v in shown),
    )
