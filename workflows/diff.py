"""What changed from one version of a process definition to the next, in words, for the
person who approves it (change control: every change assessed before it takes effect,
EU GMP Part I ch. 4, Annex 11 §10).

``describe_changes(old, new)`` lists one sentence per change: steps, fields, derived values,
limits and valid ranges, time windows, release tests and their specifications, container
kinds, QA decisions, states, transitions and the scheduled dose. Pure: no Flask, no database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from workflows.formatting import format_number
from workflows.model import (
    ContainerKind,
    CreateSpec,
    DecisionSpec,
    DerivedSpec,
    DoseRange,
    FieldSpec,
    HoldRule,
    Limits,
    ProcessDefinition,
    ReleaseTestSpec,
    Specification,
    StepSpec,
    TransitionSpec,
    WindowSpec,
)
from workflows.release import format_spec

#: Never list more than this many changes (a rewritten file says so instead).
MAX_CHANGES = 500

T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    """One change: where it is (a step, "Release tests", ...) and what it is, in words."""

    area: str
    text: str

    def __str__(self) -> str:
        return f"{self.area}: {self.text}"


def _num(value: float | None, unit: str | None = None) -> str:
    """A setting as it was written: ``70``, ``1 × 10⁶``, ``0.5`` (no digits it was not written with)."""
    if value is None:
        return "none"
    text = format_number(Decimal(repr(value)).normalize(), None)
    return f"{text} {unit}" if unit else text


def _words(value: Any, unit: str | None = None) -> str:
    """A setting's value as a reader says it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _num(value, unit)
    if isinstance(value, tuple):
        return ", ".join(_words(v) for v in value) if value else "none"
    if isinstance(value, Limits):
        return _range(value, unit)
    if isinstance(value, Specification):
        return format_spec(value, unit) if value.low is not None or value.high is not None else "none"
    if isinstance(value, HoldRule):
        return f"hold when {value.field} is {value.equals}"
    if isinstance(value, WindowSpec):
        return _window(value)
    if isinstance(value, str):
        return f"“{value}”" if value else "none"
    return str(value)


def _range(limits: Limits, unit: str | None) -> str:
    if limits.min is None and limits.max is None:
        return "none"
    if limits.min is not None and limits.max is not None:
        return f"{_num(limits.min)}–{_num(limits.max, unit)}"
    if limits.min is not None:
        return f"≥ {_num(limits.min, unit)}"
    return f"≤ {_num(limits.max, unit)}"


def _window(window: WindowSpec | None) -> str:
    if window is None:
        return "none"
    if window.min_days is not None and window.max_days is not None:
        days = f"day {window.min_days}–{window.max_days}"
    elif window.min_days is not None:
        days = f"from day {window.min_days}"
    elif window.max_days is not None:
        days = f"by day {window.max_days}"
    else:
        days = "any day"
    return f"{days} after {window.after}"


def _by_key(items: Iterable[T], key: Callable[[T], str]) -> dict[str, T]:
    return {key(item): item for item in items}


def _compare(area: str, what: str, old: Any, new: Any, settings: Sequence[tuple[str, str]],
             unit: str | None, out: list[Change]) -> None:
    """One sentence per setting of ``settings`` (attribute, words) that differs."""
    for attribute, words in settings:
        before, after = getattr(old, attribute), getattr(new, attribute)
        if before == after:
            continue
        if attribute == "limits":
            _limit_changes(area, what, before, after, unit, out)
            continue
        if attribute in ("instructions", "help"):
            out.append(Change(area, f"{what}: {words} changed"))
            continue
        said_in = unit if attribute in _WITH_UNIT else None
        out.append(Change(area, f"{what}: {words} {_words(before, said_in)} → {_words(after, said_in)}"))


def _limit_changes(area: str, what: str, old: Limits, new: Limits, unit: str | None, out: list[Change]) -> None:
    """``Viability limit_min 70 → 80 %``: each side of an acceptance range on its own."""
    for side, before, after in (("limit_min", old.min, new.min), ("limit_max", old.max, new.max)):
        if before == after:
            continue
        if before is None:
            out.append(Change(area, f"{what}: {side} {_num(after, unit)} added"))
        elif after is None:
            out.append(Change(area, f"{what}: {side} {_num(before, unit)} removed"))
        else:
            out.append(Change(area, f"{what} {side} {_num(before)} → {_num(after, unit)}"))


def _collection(area: str, noun: str, old: Mapping[str, T], new: Mapping[str, T], name: Callable[[T], str],
                compare: Callable[[T, T], None], out: list[Change]) -> None:
    for key, item in new.items():
        if key not in old:
            out.append(Change(area, f"{noun} added: {name(item)} ({key})"))
    for key, item in old.items():
        if key not in new:
            out.append(Change(area, f"{noun} removed: {name(item)} ({key})"))
    for key, item in new.items():
        if key in old and old[key] != item:
            compare(old[key], item)


#: Settings said in the field's or test's unit (the others are counts, percentages or words).
_WITH_UNIT = frozenset({"valid", "limits", "spec"})
_FIELD_SETTINGS = (
    ("label", "label"), ("type", "type"), ("unit", "unit"), ("required", "required"), ("valid", "valid range"),
    ("limits", "limits"), ("choices", "choices"), ("deviation_choices", "choices that open a deviation"),
    ("expected", "expected answer"), ("max_length", "maximum length"), ("material", "material"),
    ("equipment", "equipment kind"), ("default", "default"), ("unique_in_step", "unique per entry"),
    ("container", "container kind"), ("handoff", "hand-off"), ("all_of_kind", "every container of the kind"),
    ("sets_status", "sets the status"), ("location", "location"), ("not_before", "not before"),
    ("days_since", "days counted since"), ("batch_dose", "taken from the batch's dose"), ("help", "help text"),
)
_DERIVED_SETTINGS = (("label", "label"), ("formula", "formula"), ("unit", "unit"), ("limits", "limits"),
                     ("integer", "whole number"))
_STEP_SETTINGS = (
    ("title", "title"), ("role", "performed by"), ("verify", "second-person verification"),
    ("verifier_role", "verified by"), ("repeatable", "repeatable"), ("min_entries", "minimum entries"),
    ("window", "time window"), ("hold", "hold rule"), ("instructions", "instructions"),
)
_TEST_SETTINGS = (
    ("title", "title"), ("method", "method"), ("kind", "kind"), ("required", "required"),
    ("before_release", "needed before release"), ("unit", "unit"), ("valid", "valid range"),
    ("spec", "specification"), ("choices", "results"), ("passing", "passing results"),
    ("interim", "interim results"), ("specification", "specification"), ("target", "relative to"),
    ("target_low_pct", "lowest % of the target"), ("target_high_pct", "highest % of the target"),
    ("computed", "computed as"), ("tolerance_pct", "tolerance %"),
)
_KIND_SETTINGS = (("title", "title"), ("stock", "label stock"), ("storage", "storage"),
                  ("regulatory", "regulatory statements"), ("description", "description"), ("dates", "dates"),
                  ("shelf_life_days", "shelf life (days)"), ("warnings", "warnings"))
_DECISION_SETTINGS = (("title", "title"), ("source", "from states"), ("target", "to state"), ("role", "taken by"),
                      ("meaning", "signature meaning"), ("requires", "requires"),
                      ("independent", "independent of the batch's work"), ("reason_required", "reason required"))
_TRANSITION_SETTINGS = (("source", "from states"), ("target", "to state"), ("when", "when"), ("title", "title"))
_CREATE_SETTINGS = (("count", "count"), ("volume", "volume"), ("parent", "made from"), ("max", "at most"))


def _step_changes(old: StepSpec, new: StepSpec, out: list[Change]) -> None:
    area = f"Step {new.title} ({new.key})"
    _compare(area, "step", old, new, _STEP_SETTINGS, None, out)
    old_fields, new_fields = _by_key(old.fields, lambda f: f.key), _by_key(new.fields, lambda f: f.key)

    def field_changes(a: FieldSpec, b: FieldSpec) -> None:
        _compare(area, b.label, a, b, _FIELD_SETTINGS, b.unit, out)

    _collection(area, "field", old_fields, new_fields, lambda f: f.label, field_changes, out)
    if [f.key for f in old.fields if f.key in new_fields] != [f.key for f in new.fields if f.key in old_fields]:
        out.append(Change(area, "fields reordered"))

    def derived_changes(a: DerivedSpec, b: DerivedSpec) -> None:
        _compare(area, b.label, a, b, _DERIVED_SETTINGS, b.unit, out)

    _collection(area, "computed value", _by_key(old.derived, lambda d: d.key), _by_key(new.derived, lambda d: d.key),
                lambda d: d.label, derived_changes, out)

    def create_changes(a: CreateSpec, b: CreateSpec) -> None:
        _compare(area, f"containers made ({b.kind})", a, b, _CREATE_SETTINGS, None, out)

    _collection(area, "containers made", _by_key(old.creates, lambda c: c.kind), _by_key(new.creates, lambda c: c.kind),
                lambda c: c.kind, create_changes, out)


def _dose(old: DoseRange | None, new: DoseRange | None, out: list[Change]) -> None:
    def said(dose: DoseRange) -> str:
        return f"{_num(dose.min)}–{_num(dose.max, dose.unit)}, default {_num(dose.default, dose.unit)}"

    if old == new:
        return
    if old is None and new is not None:
        out.append(Change("Dose", f"target dose chosen at scheduling added: {said(new)}"))
    elif new is None and old is not None:
        out.append(Change("Dose", f"target dose chosen at scheduling removed (was {said(old)})"))
    elif old is not None and new is not None:
        out.append(Change("Dose", f"target dose at scheduling {said(old)} → {said(new)}"))


def describe_changes(old: ProcessDefinition, new: ProcessDefinition) -> list[Change]:
    """Every change from ``old`` to ``new``, in the order a reader follows the file."""
    out: list[Change] = []
    _compare("Definition", "process", old, new, (("key", "key"), ("title", "title"), ("product", "product"),
                                                 ("investigational", "investigational-use statement"),
                                                 ("thaw_to_infusion_minutes", "thaw-to-infusion limit (minutes)"),
                                                 ("shipping_temperature", "shipping temperature range"),
                                                 ("initial_state", "initial state"),
                                                 ("recording_states", "states in which steps are recorded")),
             None, out)
    _dose(old.dose, new.dose, out)
    if old.states != new.states:
        _collection("States", "state", {k: (k, v) for k, v in old.states.items()},
                    {k: (k, v) for k, v in new.states.items()}, lambda s: s[1],
                    lambda a, b: out.append(Change("States", f"state {b[0]}: title {_words(a[1])} → {_words(b[1])}")),
                    out)

    def transition_changes(a: TransitionSpec, b: TransitionSpec) -> None:
        _compare("Transitions", b.event, a, b, _TRANSITION_SETTINGS, None, out)

    _collection("Transitions", "transition", _by_key(old.transitions, lambda t: t.event),
                _by_key(new.transitions, lambda t: t.event), lambda t: t.title or t.event, transition_changes, out)

    def kind_changes(a: ContainerKind, b: ContainerKind) -> None:
        _compare("Containers", b.title, a, b, _KIND_SETTINGS, None, out)

    _collection("Containers", "container kind", old.container_kinds, new.container_kinds, lambda k: k.title,
                kind_changes, out)
    old_steps, new_steps = _by_key(old.steps, lambda s: s.key), _by_key(new.steps, lambda s: s.key)
    _collection("Steps", "step", old_steps, new_steps, lambda s: s.title,
                lambda a, b: _step_changes(a, b, out), out)
    if [s.key for s in old.steps if s.key in new_steps] != [s.key for s in new.steps if s.key in old_steps]:
        out.append(Change("Steps", "steps reordered: " + " → ".join(s.key for s in new.steps)))

    def test_changes(a: ReleaseTestSpec, b: ReleaseTestSpec) -> None:
        _compare("Release tests", b.title, a, b, _TEST_SETTINGS, b.unit, out)

    _collection("Release tests", "release test", _by_key(old.release_tests, lambda t: t.key),
                _by_key(new.release_tests, lambda t: t.key), lambda t: t.title, test_changes, out)
    if old.release != new.release:
        out.append(Change("Release", "rules for recording results changed"))

    def decision_changes(a: DecisionSpec, b: DecisionSpec) -> None:
        _compare("Decisions", b.title, a, b, _DECISION_SETTINGS, None, out)

    _collection("Decisions", "decision", _by_key(old.decisions, lambda d: d.key), _by_key(new.decisions, lambda d: d.key),
                lambda d: d.title, decision_changes, out)
    if len(out) > MAX_CHANGES:
        return [*out[:MAX_CHANGES], Change("Definition", f"and {len(out) - MAX_CHANGES} more changes")]
    return out
