"""The process engine: answers questions about a batch against its definition, stores nothing.

"Is this entry valid?" (``validate_entry``), "may this step be recorded now?"
(``can_start``), "where is each step?" (``step_states``), "which state comes next?"
(``next_state``). Every refusal is a sentence a technician at the bench understands and
names the field by its label.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from workflows import formula
from workflows.codes import CheckCharacterError, CodeError, CodeKind, identify, normalize, parse_code
from workflows.engine_types import (
    EntryContext,
    EntryResult,
    EquipmentInfo,
    FieldValue,
    LotInfo,
    StepProgress,
    Value,
)
from workflows.formatting import format_datetime, format_number
from workflows.model import (
    FINISHED_CONTAINER_STATUSES,
    DerivedSpec,
    FieldSpec,
    Limits,
    ProcessDefinition,
    StepSpec,
    StepState,
)
from workflows.timing import Timing, culture_day, judge, window_words

# A clock a few minutes fast on the tablet must not block an entry.
FUTURE_TOLERANCE = timedelta(minutes=5)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_CODE_LENGTH = 64

# ASCII digits only: int() and float() would also take Arabic-Indic or full-width digits.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}))?\s*(Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE | re.ASCII,
)
_UNIT_ALIASES = {"c": "°c", "degc": "°c", "pct": "%"}
_BOOLEANS = dict.fromkeys(("yes", "y", "true", "1", "on"), True) | dict.fromkeys(
    ("no", "n", "false", "0", "off"), False
)


class _Refused(ValueError):
    """A typed value is refused; the message is for the person who typed it."""


# --- public API -------------------------------------------------------------------------


def validate_entry(step: StepSpec, raw: Mapping[str, str], ctx: EntryContext) -> EntryResult:
    """Check the text typed for each field of ``step`` and compute its derived values.

    Refused values go to ``errors`` (field key -> message); accepted ones to ``values``,
    flagged when outside their acceptance limits. Derived values are computed only when
    nothing is refused. Keys of ``raw`` that are not fields of the step are ignored.
    """
    values: dict[str, FieldValue] = {}
    errors: dict[str, str] = {}
    raw, missing = _with_lot_values(step, raw, ctx)
    for spec in step.fields:
        try:
            values[spec.key] = _check_field(step, spec, raw.get(spec.key) or "", ctx)
        except _Refused as exc:
            errors[spec.key] = missing.get(spec.key, str(exc))
    for spec in step.fields:
        if spec.key in values and spec.key not in errors:
            message = _order_refusal(step, spec, values, ctx)
            if message:
                errors[spec.key] = message
    for key, message in _balance_refusals(step, values, ctx).items():
        errors.setdefault(key, message)
    typed = {k: v.value for k, v in values.items()}
    derived = {} if errors else compute_derived(step, typed, ctx)
    if not errors:
        errors.update(count_refusals(step, typed, derived))
    hold = (
        step.hold is not None
        and step.hold.field in values
        and values[step.hold.field].text == step.hold.equals
    )
    return EntryResult(values, derived, errors, _window_message(step, ctx), hold)


def typed_value(spec: FieldSpec, text: str | None) -> Value | None:
    """The typed value of stored canonical ``text`` (None when empty), without context checks.

    Raises ValueError when ``text`` is not a value of the field's type. Date-times
    without an offset are read as UTC, which is how canonical text stores them.
    """
    if text is None or not text.strip():
        return None
    return parse_text(spec, text)[1]


def parse_text(spec: FieldSpec, text: str) -> tuple[str, Value]:
    """The canonical text and typed value of non-empty ``text``, with the checks that need
    no context (type, unit). Raises ValueError with a message for the person who typed it."""
    return _parse(spec, text.strip(), UTC)


def compute_derived(
    step: StepSpec, values: Mapping[str, Value | None], ctx: EntryContext
) -> dict[str, FieldValue]:
    """The derived values of one entry of ``step``; ``ctx.now`` is that entry's time.

    A derived value whose inputs are missing, or that divides by zero, is "not computed":
    its FieldValue has ``value`` None and empty text.
    """
    names = _namespace(values, ctx)
    result: dict[str, FieldValue] = {}
    for spec in step.derived:
        value = formula.evaluate(spec.formula, names)
        if value is not None and spec.integer:
            value = round(value)
        names[spec.key] = value
        result[spec.key] = _derived_value(spec, value)
    return result


def _with_lot_values(step: StepSpec, raw: Mapping[str, str],
                     ctx: EntryContext) -> tuple[Mapping[str, str], dict[str, str]]:
    """``raw`` with each ``from_lot`` field holding the lot's value (the vector titer from its
    certificate) in place of anything typed, and why a field could not take one."""
    taken = [spec for spec in step.fields if spec.from_lot]
    if not taken:
        return raw, {}
    filled, missing = dict(raw), {}
    for spec in taken:
        assert spec.from_lot is not None
        code = _code_text(raw.get(spec.from_lot) or "")
        lot = ctx.lots.get(code)
        filled[spec.key] = "" if lot is None or lot.titer is None else repr(float(lot.titer))
        if lot is None:
            missing[spec.key] = f"{spec.label} is taken from the {step.field(spec.from_lot).label.lower()}: scan it."
        elif lot.titer is None:
            missing[spec.key] = (f"Lot {code} has no {spec.label.lower()} on record: it is entered from the lot's "
                                 "certificate when the lot is received.")
    return filled, missing


def lot_uses(step: StepSpec, values: Mapping[str, FieldValue]) -> list[tuple[str, str, float]]:
    """What an accepted entry uses of each lot: (lot field key, lot code, amount in the lot's unit)."""
    uses = []
    for spec in step.fields:
        if spec.type != "lot" or spec.key not in values or values[spec.key].value is None:
            continue
        amount: float | None = spec.uses_amount
        if spec.uses is not None:
            used = values.get(spec.uses)
            amount = None if used is None or not isinstance(used.value, (int, float)) else float(used.value)
        if amount is not None and amount > 0:
            uses.append((spec.key, str(values[spec.key].value), amount))
    return uses


def _balance_refusals(step: StepSpec, values: Mapping[str, FieldValue], ctx: EntryContext) -> dict[str, str]:
    """Refuse an entry that uses more of a lot than is left, or an amount in another unit."""
    errors: dict[str, str] = {}
    wanted: dict[str, float] = {}
    for key, code, amount in lot_uses(step, values):
        lot = ctx.lots.get(code)
        spec = step.field(key)
        target = spec.uses or key
        if lot is None or lot.balance is None:
            continue
        unit = step.field(spec.uses).unit if spec.uses else lot.unit
        if unit and lot.unit and unit.casefold() != lot.unit.casefold():
            errors[target] = (f"Lot {code} is counted in {lot.unit}; {step.field(target).label} is in {unit}: "
                              "the amount cannot be taken from its balance.")
            continue
        wanted[code] = wanted.get(code, 0.0) + amount
        if wanted[code] > lot.balance + 1e-9:
            suffix = f" {lot.unit}" if lot.unit else ""
            errors[target] = (f"Lot {code} has only {format_number(lot.balance)}{suffix} left; this entry uses "
                              f"{format_number(wanted[code])}{suffix}.")
    return errors


def scanned_codes(step: StepSpec, raw: Mapping[str, str]) -> tuple[set[str], set[str]]:
    """The lot codes and equipment codes typed into ``step``'s form, as the engine looks
    them up in ``EntryContext.lots`` and ``EntryContext.equipment`` (stripped, upper case)."""
    lots = {_code_text(raw.get(f.key) or "") for f in step.fields if f.type == "lot"}
    equipment = {_code_text(raw.get(f.key) or "") for f in step.fields if f.type == "equipment"}
    return lots - {""}, equipment - {""}


def step_states(definition: ProcessDefinition, progress: Mapping[str, StepProgress]) -> dict[str, StepState]:
    """The state of every step; a step missing from ``progress`` has no entries.

    A repeatable step stays IN_PROGRESS (more entries may come) until a later step is
    recorded; a step without verification ends at DONE.
    """
    states: dict[str, StepState] = {}
    for index, step in enumerate(definition.steps):
        own = progress.get(step.key, StepProgress())
        if own.entries == 0:
            states[step.key] = StepState.PENDING
        elif step.repeatable and _later_recorded(definition, index, progress) is None:
            states[step.key] = StepState.IN_PROGRESS
        elif step.verify and own.unverified == 0:
            states[step.key] = StepState.VERIFIED
        else:
            states[step.key] = StepState.DONE
    return states


def can_start(
    definition: ProcessDefinition, step_key: str, progress: Mapping[str, StepProgress], batch_state: str
) -> str | None:
    """None when an entry of ``step_key`` may be recorded now, else why not.

    Raises KeyError for a step the definition does not have.
    """
    step = definition.step(step_key)
    index = definition.index(step_key)
    if batch_state not in definition.recording_states:
        return f"The batch is {state_phrase(definition, batch_state)}: no step can be recorded."
    for earlier in definition.steps[:index]:
        if progress.get(earlier.key, StepProgress()).entries < earlier.min_entries:
            return f"Record '{earlier.title}' first: steps are done in order."
    if not step.repeatable and progress.get(step.key, StepProgress()).entries > 0:
        return f"'{step.title}' is already recorded; correct a value instead."
    later = _later_recorded(definition, index, progress)
    if step.repeatable and later is not None:
        return f"'{step.title}' is closed: '{later.title}' has been recorded since."
    return None


def next_state(
    definition: ProcessDefinition,
    current_state: str,
    progress: Mapping[str, StepProgress],
    *,
    results_in: bool = False,
) -> str:
    """The state the batch moves to by its automatic transitions (``current_state`` if none).

    Transitions fire in file order, one after another, while their condition holds.
    ``results_in`` says whether the results needed for QA review are in
    (``workflows.release.results_in``).
    """
    state = current_state
    visited = {state}
    while True:
        transition = next(
            (
                t
                for t in definition.transitions
                if state in t.source and _condition(definition, t.when, progress, results_in)
            ),
            None,
        )
        if transition is None or transition.target in visited:
            return state
        state = transition.target
        visited.add(state)


# --- checking one field -----------------------------------------------------------------


def _check_field(step: StepSpec, spec: FieldSpec, text: str, ctx: EntryContext) -> FieldValue:
    if not text.strip():
        if spec.required:
            raise _Refused(f"Enter a value for {spec.label}.")
        return FieldValue(spec.key, spec.label, "", None, spec.unit)
    canonical, value = _parse(spec, text, ctx.tz)
    _check_in_context(spec, canonical, value, ctx)
    if spec.unique_in_step:
        for number, entry in enumerate(ctx.prior.get(step.key, []), start=1):
            if entry.values.get(spec.key) == value:
                raise _Refused(
                    f"{spec.label} {canonical} is already recorded (entry {number} of '{step.title}'): "
                    "correct that entry instead."
                )
    return _flagged(spec, canonical, value)


def _parse(spec: FieldSpec, text: str, tz: tzinfo) -> tuple[str, Value]:
    """Canonical text and typed value of non-empty ``text``; checks that need no context."""
    if spec.type in ("number", "integer"):
        return _parse_number(spec, text.strip())
    if spec.type == "text":
        return _parse_text(spec, text)
    if spec.type == "choice":
        for choice in spec.choices:
            if choice.casefold() == text.strip().casefold():
                return choice, choice
        raise _Refused(f"{spec.label} must be one of: {', '.join(spec.choices)} (not {_echo(text)}).")
    if spec.type == "boolean":
        answer = _BOOLEANS.get(text.strip().casefold())
        if answer is None:
            raise _Refused(f"{spec.label}: answer yes or no, not {_echo(text)}.")
        return ("yes" if answer else "no"), answer
    if spec.type == "datetime":
        return _parse_datetime(spec, text.strip(), tz)
    if spec.type == "coi":
        code = _parse_code(spec, text, CodeKind.COI)
        return code, code
    if spec.type == "container":
        code = _parse_code(spec, text, CodeKind.CONTAINER)
        return code, code
    if spec.type == "containers":
        codes = dict.fromkeys(_parse_code(spec, part, CodeKind.CONTAINER) for part in re.split(r"[\s,;]+", text)
                              if part)  # a code scanned twice counts once
        return "\n".join(codes), "\n".join(codes)
    code = _code_text(text)  # lot and equipment codes
    if len(code) > MAX_CODE_LENGTH or not code.isprintable():
        raise _Refused(f"{spec.label}: {_echo(text)} is not a code that can be registered.")
    return code, code


def _parse_code(spec: FieldSpec, text: str, kind: CodeKind) -> str:
    try:
        return str(parse_code(text.strip(), kind))
    except CodeError as exc:
        raise _Refused(f"{spec.label}: {exc}") from None


def _parse_number(spec: FieldSpec, text: str) -> tuple[str, Value]:
    example = "a whole number such as 3" if spec.type == "integer" else f"a number such as {_example(spec)}"
    if "," in text:
        raise _Refused(
            f"{spec.label}: use a dot for decimals and no thousands separators "
            f"(for example {_example(spec)}), not {_echo(text)}."
        )
    match = _NUMBER.match(text)
    if match is None:
        raise _Refused(f"{spec.label}: enter {example}, not {_echo(text)}.")
    number, unit = match.group(), text[match.end() :].strip()
    if unit[:1].isdigit():  # "12 500": a space as thousands separator
        raise _Refused(f"{spec.label}: use no thousands separators, not {_echo(text)}.")
    if unit[:1] == ".":
        raise _Refused(f"{spec.label}: enter {example}, not {_echo(text)}.")
    _check_unit(spec, unit, text)
    if spec.type == "integer":
        if not _INTEGER.fullmatch(number):
            raise _Refused(f"{spec.label}: enter {example}, not {_echo(text)}.")
        if len(number) > 20:
            raise _Refused(f"{spec.label}: {_echo(text)} is far too large.")
        return str(int(number)), int(number)
    value = float(number)
    if not math.isfinite(value):
        raise _Refused(f"{spec.label}: {_echo(text)} is too large to be a measured value.")
    return number.removeprefix("+").replace("E", "e"), value


def _check_unit(spec: FieldSpec, unit: str, text: str) -> None:
    if not unit:
        return
    if spec.unit is None:
        raise _Refused(f"{spec.label} has no unit: enter the number alone, not {_echo(text)}.")
    if _unit_key(unit) != _unit_key(spec.unit):
        raise _Refused(
            f"{spec.label} is entered in {spec.unit}: convert it to {spec.unit}, not {_echo(unit)}."
        )


def _unit_key(unit: str) -> str:
    key = "".join(unit.split()).casefold()
    return _UNIT_ALIASES.get(key, key)


def _example(spec: FieldSpec) -> str:
    return "1.2e9" if spec.valid.max is not None and spec.valid.max >= 1e6 else "91.5"


def _parse_text(spec: FieldSpec, text: str) -> tuple[str, Value]:
    value = text.replace("\r\n", "\n").strip()  # browsers send CR LF line ends
    if any(unicodedata.category(char) == "Cc" and char not in "\n\t" for char in value):
        raise _Refused(f"{spec.label} holds a control character (from a scanner or a paste): retype it.")
    return value, value


def parse_datetime(text: str, tz: tzinfo) -> datetime:
    """A date and time as typed (``2026-11-25 08:30``, a datetime-local value, optionally with
    seconds and an offset or ``Z``), in ``tz`` unless it carries its own offset; as UTC.
    Raises ValueError for anything else."""
    match = _DATETIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not a date and time: {text!r}")
    year, month, day, hour, minute, second, offset = match.groups()
    zone = tz
    if offset is not None and offset.upper() == "Z":
        zone = UTC
    elif offset is not None:
        digits = offset[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        zone = timezone(-delta if offset[0] == "-" else delta)
    local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=zone)
    return local.astimezone(UTC)


def _parse_datetime(spec: FieldSpec, text: str, tz: tzinfo) -> tuple[str, Value]:
    try:
        value = parse_datetime(text, tz)
    except ValueError:
        raise _Refused(f"{spec.label}: enter a date and time such as 2026-11-25 08:30, not {_echo(text)}.") from None
    with_seconds = _DATETIME.fullmatch(text).group(6) is not None  # type: ignore[union-attr]
    return value.strftime("%Y-%m-%dT%H:%M:%SZ" if with_seconds else "%Y-%m-%dT%H:%MZ"), value


def _check_in_context(spec: FieldSpec, canonical: str, value: Value, ctx: EntryContext) -> None:
    """Checks that need the valid range or what lab/ knows: lots, equipment, the batch COI."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not spec.valid.contains(value):
        raise _Refused(f"{spec.label} must be {_range_words(spec.valid, spec.unit)}.")
    if spec.type == "text" and len(canonical) > spec.max_length:
        raise _Refused(f"{spec.label} is limited to {spec.max_length} characters; this has {len(canonical)}.")
    if isinstance(value, datetime):
        if value > ctx.now + FUTURE_TOLERANCE:
            now = ctx.now.astimezone(ctx.tz)
            raise _Refused(f"{spec.label} cannot be in the future (it is now {now:%Y-%m-%d %H:%M}).")
        if value < EARLIEST:
            raise _Refused(f"{spec.label}: {canonical} is before the year 2000; check the date.")
    today = ctx.now.astimezone(ctx.tz).date()
    if spec.type == "lot":
        _check_lot(spec, canonical, ctx, today)
    elif spec.type == "equipment":
        _check_equipment(spec, canonical, ctx, today)
    elif spec.type == "coi" and normalize(canonical) != normalize(ctx.batch_coi):
        raise _Refused(
            f"COI MISMATCH: the bag is labelled {canonical} but this batch belongs to patient "
            f"{ctx.batch_coi}. Do not use this bag."
        )
    elif spec.type in ("container", "containers"):
        _check_containers(spec, canonical.split("\n"), ctx)


def _check_lot(spec: FieldSpec, code: str, ctx: EntryContext, today: date) -> None:
    lot = ctx.lots.get(code)
    if lot is None:
        raise _Refused(_unregistered(code, "material lot"))
    if lot.material != spec.material:
        raise _Refused(
            f"Lot {code} is {lot.name} ({_kind_words(lot.material)}); {spec.label} needs "
            f"{_kind_words(spec.material)} lot."
        )
    reason = lot_unusable(lot, today)
    if reason == "quarantined":
        raise _Refused(f"Lot {code} is QUARANTINED: it has not been released for use.")
    if reason == "rejected":
        raise _Refused(f"Lot {code} is REJECTED: it must not be used.")
    if reason == "expired":
        raise _Refused(f"Lot {code} EXPIRED on {lot.expiry_date.isoformat()}.")
    if reason == "used up":
        raise _Refused(f"Lot {code} is used up: none of it is left.")
    if reason:
        raise _Refused(f"Lot {code} has status '{lot.status}': only released lots may be used.")


def lot_unusable(lot: LotInfo, today: date) -> str:
    """Why a step refuses ``lot`` whatever amount it asks for: its status when not released
    (quarantined, rejected, recalled), then "expired", then "used up"; "" when usable. The one
    rule behind the step's refusal and the lot pages' status."""
    if lot.status != "released":
        return lot.status
    if lot.expiry_date < today:
        return "expired"
    if lot.balance is not None and lot.balance <= 0:
        return "used up"
    return ""


def _unregistered(code: str, what: str) -> str:
    """Why an unknown code is refused: a CellTrail label scanned into the wrong field is
    named for what it is (a container's label scanned as the medium lot)."""
    try:
        kind = identify(code).kind
    except CheckCharacterError as exc:
        return str(exc)
    except CodeError:
        return f"No {what} '{code}' is registered."
    if kind.value.startswith(what):  # a well-formed code of the right kind that names nothing
        return f"No {what} '{code}' is registered."
    return f"{code} is a {kind.value}, not a {what}: scan the label of the {what} itself."


def _check_equipment(spec: FieldSpec, code: str, ctx: EntryContext, today: date) -> None:
    item = ctx.equipment.get(code)
    if item is None:
        raise _Refused(_unregistered(code, "equipment"))
    if item.kind != spec.equipment:
        needed = _kind_words(spec.equipment)
        raise _Refused(f"{item.name} {code} is {_kind_words(item.kind)}; {spec.label} needs {needed}.")
    reason = equipment_unusable(item, today)
    if reason == "out of service":
        why = f" ({item.out_of_service_reason})" if item.out_of_service_reason else ""
        raise _Refused(f"{item.name} {code} is OUT OF SERVICE{why}: use another one.")
    if reason == "not qualified":
        raise _Refused(f"{item.name} {code} is NOT QUALIFIED: it may not be used until its qualification passes.")
    if reason == "calibration overdue":
        raise _Refused(
            f"{item.name} {code} was due for calibration on {item.calibration_due.isoformat()} "  # type: ignore[union-attr]
            "(CALIBRATION OVERDUE): use a calibrated instrument."
        )


def equipment_unusable(item: EquipmentInfo, today: date) -> str:
    """Why a step refuses instrument ``item``: "out of service", "not qualified" or "calibration
    overdue"; "" when usable. The one rule behind the step's refusal and the scan box's answer."""
    if not item.is_active:
        return "out of service"
    if not item.qualified:
        return "not qualified"
    if item.calibration_due is not None and item.calibration_due < today:
        return "calibration overdue"
    return ""


def _check_containers(spec: FieldSpec, codes: list[str], ctx: EntryContext) -> None:
    """Every scanned container exists, belongs to this batch's patient and batch, is of the
    field's kind and still in use; with ``all_of_kind``, none of the kind is missing."""
    for code in codes:
        item = ctx.containers.get(code)
        if item is None:
            raise _Refused(f"{spec.label}: no container {code} is registered.")
        if normalize(item.coi) != normalize(ctx.batch_coi):
            raise _Refused(
                f"COI MISMATCH: {code} ({item.title}) belongs to patient {item.coi}, batch {item.batch_number}, "
                f"but this batch belongs to patient {ctx.batch_coi}. Do not use it: set it aside and tell "
                "your supervisor."
            )
        if item.batch_number != ctx.batch_number:
            raise _Refused(f"{code} ({item.title}) belongs to batch {item.batch_number} of the same patient, "
                           f"not to batch {ctx.batch_number}. Do not use it here.")
        if item.kind != spec.container:
            raise _Refused(f"{code} is {item.title}; {spec.label} needs {_kind_words(spec.container)}.")
        if item.status in FINISHED_CONTAINER_STATUSES:
            raise _Refused(f"{code} ({item.title}) is {item.status}: it cannot be used at this step.")
    if spec.all_of_kind:
        missing = [item for item in ctx.containers.values()
                   if item is not None and item.batch_number == ctx.batch_number and item.kind == spec.container
                   and item.status not in FINISHED_CONTAINER_STATUSES and item.code not in codes]
        if missing:
            names = ", ".join(f"{item.code} ({item.title})" for item in missing)
            raise _Refused(f"{spec.label}: scan every one; not scanned: {names}.")


def _kind_words(kind: str | None) -> str:
    """``cd4_microbeads`` -> ``a cd4 microbeads``, ``incubator`` -> ``an incubator``."""
    words = (kind or "").replace("_", " ")
    return f"{'an' if words[:1] in tuple('aeiou') else 'a'} {words}"


def _code_text(text: str) -> str:
    return canonical_code(text)


def canonical_code(text: str) -> str:
    """A typed or scanned lot or equipment code as records store it: a CellTrail code in its
    canonical form (typed without hyphens, in lower case), any other code stripped, upper case."""
    code = text.strip().upper()
    try:
        return str(identify(code))
    except CodeError:
        return code


def _echo(text: str) -> str:
    """Typed text quoted for a message, cut short so a pasted page does not flood it."""
    return repr(text if len(text) <= 40 else text[:40] + "…")


# --- event order and bounds --------------------------------------------------------------


def _order_refusal(step: StepSpec, spec: FieldSpec, values: Mapping[str, FieldValue], ctx: EntryContext) -> str:
    """Why an accepted date-time or culture day cannot be true given the events before it, or ''."""
    value = values[spec.key].value
    if isinstance(value, datetime):
        for name in spec.not_before:
            event = _event(step, name, values, ctx)
            if event is not None and value < event[1].replace(second=0, microsecond=0):  # typed to the minute
                what, when = event
                return (f"{spec.label} {format_datetime(value, ctx.tz)} is before {what} "
                        f"({format_datetime(when, ctx.tz)}): it cannot have happened earlier. Check the date and time.")
    if spec.days_since is not None and isinstance(value, int) and ctx.prior.get(spec.days_since):
        started = ctx.prior[spec.days_since][0].recorded_at
        today = culture_day(started, ctx.now)
        since = f"{_step_title(spec.days_since, ctx)} was recorded {format_datetime(started, ctx.tz)}"
        if value > today:
            return f"{spec.label} {value} has not come yet: {since}, so this is culture day {today}."
        if value < today - 1:
            return (f"{spec.label} {value} was {today - value} days ago ({since}; this is culture day {today}): "
                    "a count is recorded on its culture day or the day after. Tell your supervisor: a late "
                    "record needs a deviation.")
    return ""


def _event(step: StepSpec, name: str, values: Mapping[str, FieldValue],
           ctx: EntryContext) -> tuple[str, datetime] | None:
    """What ``name`` of a ``not_before`` list names, and when it happened (None: not yet known)."""
    step_key, _, field_key = name.partition(".")
    if not field_key and step_key in ctx.prior:  # an earlier step: when it was recorded
        entries = ctx.prior[step_key]
        if not entries:
            return None
        return f"{_step_title(step_key, ctx)} (recorded)", entries[-1].recorded_at
    if not field_key:  # a date-time field of this entry
        own = values.get(name)
        if own is None or not isinstance(own.value, datetime):
            return None
        return step.field(name).label, own.value
    entries = ctx.prior.get(step_key) or []
    moment = entries[-1].values.get(field_key) if entries else None
    if not isinstance(moment, datetime):
        return None
    return f"{_step_title(step_key, ctx)}: {field_key.replace('_', ' ')}", moment


def _step_title(key: str, ctx: EntryContext) -> str:
    return ctx.step_titles.get(key) or key.replace("_", " ").capitalize()


def count_refusals(step: StepSpec, values: Mapping[str, Value | None],
                   derived: Mapping[str, FieldValue]) -> dict[str, str]:
    """Refuse an entry, or a correction, with which ``step`` would create more containers than
    the definition allows, before anything is written: the message goes to every field of
    this step the count comes from."""
    errors: dict[str, str] = {}
    for create in step.creates:
        if isinstance(create.count, int):
            continue
        count = derived[create.count].value if create.count in derived else values.get(create.count)
        if not isinstance(count, (int, float)) or isinstance(count, bool) or count <= create.max:
            continue
        message = (f"These values make {format_number(count)} {kind_plural(create.kind)}; at most {create.max} can be "
                   "made in one entry. Check the values this number is computed from.")
        for key in _raw_inputs(step, create.count) or {""}:
            errors[key] = message
    return errors


def kind_plural(kind: str) -> str:
    """``product_bag`` -> ``product bags``: the containers of a kind, in words."""
    return f"{kind.replace('_', ' ')}s"


def _raw_inputs(step: StepSpec, key: str) -> set[str]:
    """The typed fields of ``step`` that the value ``key`` is computed from, directly or not."""
    fields = {f.key for f in step.fields}
    if key in fields:
        return {key}
    derived = {d.key: d for d in step.derived}
    if key not in derived:
        return set()
    found: set[str] = set()
    for name in formula.names(derived[key].formula):
        found |= _raw_inputs(step, name)
    return found


# --- limits -----------------------------------------------------------------------------


def _flagged(spec: FieldSpec, canonical: str, value: Value) -> FieldValue:
    """The accepted value, with its acceptance limit and whether it lies outside it."""
    plain = FieldValue(spec.key, spec.label, canonical, value, spec.unit)
    if spec.type in ("number", "integer") and spec.limits.is_set:
        assert isinstance(value, (int, float))
        return _number_flag(plain, spec.limits, canonical)
    if spec.type == "choice" and spec.deviation_choices:
        accepted = " or ".join(c for c in spec.choices if c not in spec.deviation_choices)
        return _flag(
            plain,
            accepted,
            value in spec.deviation_choices,
            f"{spec.label} is '{canonical}': expected {accepted}.",
        )
    if spec.type == "boolean" and spec.expected is not None:
        expected = "yes" if spec.expected else "no"
        return _flag(
            plain, expected, value != spec.expected, f"{spec.label} is '{canonical}': expected {expected}."
        )
    return plain


def _derived_value(spec: DerivedSpec, value: float | None) -> FieldValue:
    if value is None:
        return FieldValue(spec.key, spec.label, "", None, spec.unit)
    plain = FieldValue(spec.key, spec.label, str(value), value, spec.unit)
    return _number_flag(plain, spec.limits, None) if spec.limits.is_set else plain


def _number_flag(plain: FieldValue, limits: Limits, shown: str | None) -> FieldValue:
    """Flag a number outside ``limits``; ``shown`` is how to write it (as typed, or formatted)."""
    value = plain.value
    assert isinstance(value, (int, float))
    suffix = f" {plain.unit}" if plain.unit else ""
    low, high = limits.min, limits.max
    if low is not None and high is not None:
        limit_text = f"{format_number(low)}–{format_number(high)}{suffix}"
    elif low is not None:
        limit_text = f"≥ {format_number(low)}{suffix}"
    else:
        assert high is not None  # callers pass limits that are set
        limit_text = f"≤ {format_number(high)}{suffix}"
    if limits.contains(value):
        return _flag(plain, limit_text, False, "")
    below = limits.min is not None and value < limits.min
    bound = limits.min if below else limits.max
    assert bound is not None
    text = shown if shown is not None else _distinct(value, bound)
    side = "below" if below else "above"
    return _flag(
        plain,
        limit_text,
        True,
        f"{plain.label} {text}{suffix} is {side} the limit of {format_number(bound)}{suffix}.",
    )


def _distinct(value: float, bound: float) -> str:
    """``value`` formatted with enough digits not to look equal to ``bound`` (10.04 vs 10)."""
    text = format_number(value)
    digits = 4
    while text == format_number(bound) and digits <= 12:
        text = f"{value:.{digits}g}"
        digits += 1
    return text


def _flag(plain: FieldValue, limit_text: str, out: bool, message: str) -> FieldValue:
    return FieldValue(
        plain.key, plain.label, plain.text, plain.value, plain.unit, out, limit_text, message if out else ""
    )


def _range_words(valid: Limits, unit: str | None) -> str:
    """Only called for a value outside ``valid``, so at least one bound is set."""
    suffix = f" {unit}" if unit else ""
    low, high = valid.min, valid.max
    if low is not None and high is not None:
        return f"between {format_number(low)} and {format_number(high)}{suffix}"
    if low is not None:
        return f"at least {format_number(low)}{suffix}"
    assert high is not None
    return f"at most {format_number(high)}{suffix}"


# --- derived values, windows, progress --------------------------------------------------


def _namespace(values: Mapping[str, Value | None], ctx: EntryContext) -> dict[str, Any]:
    """The names a formula may use (formula.check has proved it uses no others)."""
    names: dict[str, Any] = dict(values)
    for step_key, entries in ctx.prior.items():
        if entries:
            names.update({f"{step_key}.{key}": value for key, value in entries[-1].values.items()})
            names[f"{step_key}.recorded_at"] = entries[0].recorded_at
    weight = ctx.patient.get("weight_kg")
    names["patient.weight_kg"] = None if weight is None else float(weight)
    names["now"] = ctx.now
    return names


def _window_message(step: StepSpec, ctx: EntryContext) -> str:
    window = step.window
    if window is None or not ctx.prior.get(window.after):
        return ""
    day, timing = judge(window, ctx.prior[window.after][0].recorded_at, ctx.now)
    if timing is Timing.DUE:
        return ""
    # The step has no title for ``after``, only its key ("activation" -> "Activation").
    after = window.after.replace("_", " ").capitalize()
    return f"{step.title} is due {window_words(window)} after {after}; today is day {day}."


def _later_recorded(
    definition: ProcessDefinition, index: int, progress: Mapping[str, StepProgress]
) -> StepSpec | None:
    """The first step after ``index`` that has entries, if any."""
    return next(
        (s for s in definition.steps[index + 1 :] if progress.get(s.key, StepProgress()).entries > 0), None
    )


def _condition(
    definition: ProcessDefinition, when: str, progress: Mapping[str, StepProgress], results_in: bool
) -> bool:
    if when == "release_results_in":
        return results_in
    if when == "first_step_recorded":
        return progress.get(definition.steps[0].key, StepProgress()).entries >= 1
    if when == "hold_requested":
        return any(p.hold for p in progress.values())
    return all(  # all_steps_complete: the only other condition a definition can name
        progress.get(s.key, StepProgress()).entries >= s.min_entries
        and not (s.verify and progress.get(s.key, StepProgress()).unverified > 0)
        for s in definition.steps
    )


def state_phrase(definition: ProcessDefinition, state: str) -> str:
    """``On hold`` -> ``on hold``; ``QC testing`` keeps its capitals."""
    title = definition.states.get(state, state)
    return title[0].lower() + title[1:] if title[1:2].islower() else title
