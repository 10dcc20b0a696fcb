"""Load process definitions from TOML and validate them strictly.

A definition that loads is internally consistent: every key is known, every reference
(state, step, field, formula name) resolves, every range is ordered. Whatever is wrong is
reported as a DefinitionError naming the file, the step and the field, so a process
engineer can fix a typo such as ``limt_min`` before any batch meets it.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from workflows import formula
from workflows.engine import typed_value
from workflows.model import (
    BEFORE_RELEASE,
    CONTAINER_STATUSES,
    LABEL_DATES,
    MAX_CREATED,
    REQUIREMENTS,
    ROLES,
    SIGNATURE_MEANINGS,
    Bound,
    ContainerKind,
    CreateSpec,
    DecisionSpec,
    DerivedSpec,
    DoseRange,
    FieldSpec,
    HoldRule,
    Limits,
    ProcessDefinition,
    ReleaseRules,
    ReleaseTestSpec,
    Specification,
    StepSpec,
    TransitionSpec,
    WindowSpec,
)
from workflows.release import covers, format_spec, is_empty, overlaps

DEFINITIONS_DIR = Path(__file__).parent / "definitions"

DEFINITION_KEY = re.compile(r"[a-z0-9-]+")
SLUG = re.compile(r"[a-z][a-z0-9_]*")
CONDITIONS = ("first_step_recorded", "hold_requested", "all_steps_complete", "release_results_in")
# Names a formula resolves specially (patient.weight_kg, now, <step>.recorded_at): no step,
# field or derived value may take them.
RESERVED_STEP_KEYS = ("patient", "now")
RESERVED_VALUE_KEYS = ("now", "recorded_at")
#: A thawed CAR-T product is infused within hours (labels: 30 minutes to 3 hours); a day is a typo.
MAX_THAW_TO_INFUSION_MINUTES = 24 * 60
#: A shipping range in °C is between liquid nitrogen and a warm day; anything else is a typo.
SHIPPING_TEMP_BOUNDS = (-200.0, 40.0)


def _keys(required: str, optional: str = "") -> dict[str, bool]:
    """The keys a table may hold, in documentation order: key -> required."""
    return {key: True for key in required.split()} | {key: False for key in optional.split()}


_TOP_KEYS = _keys("key version title product initial_state recording_states states steps",
                  "transitions container_kinds release release_tests decisions investigational dose "
                  "thaw_to_infusion_minutes shipping_temp_min_c shipping_temp_max_c")
_TRANSITION_KEYS = _keys("event source target when", "title")
_STEP_KEYS = _keys(
    "key title role verify fields",
    "derived verifier_role repeatable min_entries instructions hold window creates",
)
_CONTAINER_KIND_KEYS = _keys("title stock", "storage regulatory description dates shelf_life_days warnings")
_RELEASE_KEYS = _keys("result_states released_states late_failure_state")
_DECISION_KEYS = _keys("key title source role meaning", "target resume requires independent reason_required")
_TEST_COMMON_KEYS = _keys("key title method kind", "required before_release")
# The keys each kind of release test adds to the common ones.
_TEST_KIND_KEYS: dict[str, dict[str, bool]] = {
    "number": _keys("unit min max", "spec_min spec_max spec_above spec_below target target_low_pct target_high_pct "
                    "computed tolerance_pct"),
    "result": _keys("choices passing", "interim specification"),
}
_CREATE_KEYS = _keys("kind", "count volume parent max")
STOCKS = ("bag", "tube")
_HOLD_KEYS = _keys("field equals")
_DOSE_KEYS = _keys("unit min max default")
_WINDOW_KEYS = _keys("after", "min_days max_days")
_DERIVED_KEYS = _keys("key label formula", "unit limit_min limit_max integer")
_FIELD_COMMON_KEYS = _keys("key label type", "required help unique_in_step")
# The keys each field type adds to the common ones.
_FIELD_TYPE_KEYS: dict[str, dict[str, bool]] = {
    "number": _keys("unit min max", "limit_min limit_max default batch_dose from_lot"),
    "integer": _keys("min max", "unit limit_min limit_max default days_since"),
    "text": _keys("", "max_length default"),
    "choice": _keys("choices", "deviation_choices default"),
    "boolean": _keys("", "expected default"),
    "datetime": _keys("", "not_before"),
    "lot": _keys("material", "uses uses_amount"),
    "equipment": _keys("equipment"),
    "coi": {},
    "container": _keys("container handoff", "sets_status location"),
    "containers": _keys("container handoff", "all_of_kind sets_status location"),
}
_NOT_IN_FORMULAS = {
    "text": "a text field",
    "choice": "a choice field",
    "boolean": "a yes/no field",
    "lot": "a lot field",
    "equipment": "an equipment field",
    "coi": "a COI field",
    "container": "a container field",
    "containers": "a containers field",
}


class DefinitionError(ValueError):
    """A process definition file is malformed or inconsistent."""

    def __init__(self, source_name: str, reason: str) -> None:
        super().__init__(f"{source_name}: {reason}")
        self.source_name = source_name
        self.reason = reason


class _Invalid(Exception):
    """A reason without the file name; load_definition_text adds it."""


def load_definition(path: Path | str) -> ProcessDefinition:
    """Load and validate one definition file; its SHA-256 is that of the file's bytes."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError(
            path.name, f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    return _load(text, path.name, hashlib.sha256(data).hexdigest())


def load_definition_text(text: str, source_name: str) -> ProcessDefinition:
    """Load and validate a definition from its text (as stored with a batch)."""
    return _load(text, source_name, hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_directory(directory: Path | str = DEFINITIONS_DIR) -> dict[tuple[str, int], ProcessDefinition]:
    """Every ``*.toml`` definition in ``directory`` by (key, version).

    Two files with the same key and version are refused: which one a batch would get
    must never depend on the order files are listed in.
    """
    definitions: dict[tuple[str, int], ProcessDefinition] = {}
    for path in sorted(Path(directory).glob("*.toml")):
        definition = load_definition(path)
        ident = (definition.key, definition.version)
        if ident in definitions:
            raise DefinitionError(
                path.name,
                f"{definition.key!r} version {definition.version} is also defined in "
                f"{definitions[ident].source_name}; give one of them a new version",
            )
        definitions[ident] = definition
    return definitions


def latest(definitions: Mapping[tuple[str, int], ProcessDefinition], key: str) -> ProcessDefinition:
    """The highest version of definition ``key``; KeyError when there is none."""
    versions = [d for (k, _), d in definitions.items() if k == key]
    if not versions:
        raise KeyError(key)
    return max(versions, key=lambda d: d.version)


def _load(text: str, source_name: str, sha256: str) -> ProcessDefinition:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(source_name, f"invalid TOML: {exc}") from None
    try:
        return _definition(data, text, source_name, sha256)
    except _Invalid as exc:
        raise DefinitionError(source_name, str(exc)) from None


# --- reading typed values -------------------------------------------------------------

_TYPE_NAMES = {
    str: "a string",
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    list: "a list",
    dict: "a table",
}


def _check_keys(table: Mapping[str, Any], allowed: Mapping[str, bool], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise _Invalid(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")
    for key, required in allowed.items():
        if required and key not in table:
            raise _Invalid(f"{where}: missing required key {key!r}")


def _key_and_kind(table: Mapping[str, Any], where: str, named: str, kind_key: str, common: Mapping[str, bool],
                  per_kind: Mapping[str, Mapping[str, bool]]) -> tuple[str, str, str]:
    """The key and kind of a table whose allowed keys depend on its kind (a field's type, a
    release test's kind), its keys checked. ``where`` names the table by position until its
    key is known, then ``named`` and the key do; an option of another kind is refused as not
    applying to "a <kind> <last word of named>". Returns (key, where, kind)."""
    if "key" not in table:
        raise _Invalid(f"{where}: missing required key 'key'")
    key = _slug(table, "key", where)
    where = f"{named} {key!r}"
    if kind_key not in table:
        raise _Invalid(f"{where}: missing required key {kind_key!r}")
    kind = _text(table, kind_key, where)
    if kind not in per_kind:
        raise _Invalid(f"{where}: unknown {kind_key} {kind!r} (use one of {', '.join(per_kind)})")
    allowed = {**common, **per_kind[kind]}
    noun = named.rsplit(" ", 1)[-1]
    for option in table:
        if option not in allowed and any(option in keys for keys in per_kind.values()):
            raise _Invalid(f"{where}: {option!r} does not apply to a {kind} {noun}")
    _check_keys(table, allowed, where)
    return key, where, kind


def _get(table: Mapping[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    """``table[key]`` checked to be of ``kind`` (float accepts whole numbers too)."""
    if key not in table:
        return default
    value = table[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise _Invalid(f"{where}: {key!r} must be a finite number, not {value!r}")
    if not ok:
        raise _Invalid(f"{where}: {key!r} must be {_TYPE_NAMES[kind]}, not {value!r}")
    return float(value) if kind is float else value


def _text(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = _get(table, key, str, where, default)
    if key in table and not value.strip():
        raise _Invalid(f"{where}: {key!r} must not be empty")
    return value  # type: ignore[no-any-return]


def _slug(table: Mapping[str, Any], key: str, where: str, pattern: re.Pattern[str] = SLUG) -> str:
    value = _text(table, key, where)
    if not pattern.fullmatch(value):
        rule = "a-z, 0-9 and -" if pattern is DEFINITION_KEY else "a-z, 0-9 and _, starting with a letter"
        raise _Invalid(f"{where}: {key} {value!r} may use only {rule}")
    return value


def _strings(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = _get(table, key, list, where, [])
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise _Invalid(f"{where}: {key!r} must be a list of non-empty strings, not {values!r}")
    duplicates = sorted({v for v in values if [x.casefold() for x in values].count(v.casefold()) > 1})
    if duplicates:
        raise _Invalid(f"{where}: {key!r} lists {duplicates[0]!r} twice")
    return tuple(values)


def _tables(table: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    values = _get(table, key, list, where, [])
    if not all(isinstance(value, dict) for value in values):
        raise _Invalid(f"{where}: {key!r} must be an array of tables ([[{key}]])")
    return values  # type: ignore[no-any-return]


def _limits(table: Mapping[str, Any], low: str, high: str, where: str) -> Limits:
    limits = Limits(_get(table, low, float, where), _get(table, high, float, where))
    if limits.min is not None and limits.max is not None and limits.min > limits.max:
        raise _Invalid(f"{where}: {low} {_num(limits.min)} is greater than {high} {_num(limits.max)}")
    return limits


def _num(value: float | None) -> str:
    """A number as a definition writes it: 1e8, 10000, 0.5."""
    return re.sub(r"e([+-])0*(\d)", lambda m: f"e{m[1].replace('+', '')}{m[2]}", f"{value:g}")


def _range(valid: Limits) -> str:
    return f"{_num(valid.min)} to {_num(valid.max)}"


def _unique(keys: Iterable[str], what: str, where: str) -> None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise _Invalid(f"{where}: duplicate {what} {key!r}")
        seen.add(key)


# --- the definition ---------------------------------------------------------------------


def _definition(data: dict[str, Any], text: str, source_name: str, sha256: str) -> ProcessDefinition:
    where = "definition"
    _check_keys(data, _TOP_KEYS, where)
    key = _slug(data, "key", where, DEFINITION_KEY)
    version = _get(data, "version", int, where)
    if version < 1:
        raise _Invalid(f"{where}: version must be a positive whole number, not {version}")
    states = _states(_get(data, "states", dict, where))
    initial_state = _state_ref(data, "initial_state", states, where)
    recording_states = _strings(data, "recording_states", where)
    for state in recording_states:
        _declared(state, states, f"{where}: recording_states")
    transitions = tuple(
        _transition(table, states, f"transitions[{i}]")
        for i, table in enumerate(_tables(data, "transitions", where))
    )
    _unique((t.event for t in transitions), "transition event", "transitions")
    container_kinds = _container_kinds(_get(data, "container_kinds", dict, where, {}))
    step_tables = _tables(data, "steps", where)
    if not step_tables:
        raise _Invalid(f"{where}: at least one [[steps]] is needed")
    all_step_keys = [t["key"] for t in step_tables if isinstance(t.get("key"), str)]
    steps: list[StepSpec] = []
    for i, table in enumerate(step_tables):
        steps.append(_step(table, i, steps, all_step_keys, container_kinds))
    release_tests = tuple(_release_test(t, i, steps) for i, t in enumerate(_tables(data, "release_tests", where)))
    _unique((t.key for t in release_tests), "release test key", "release_tests")
    release = _release(_get(data, "release", dict, where), states) if "release" in data else None
    if release_tests and release is None:
        raise _Invalid(f"{where}: release tests need a [release] table "
                       "(result_states, released_states, late_failure_state)")
    decisions = tuple(_decision(t, i, states) for i, t in enumerate(_tables(data, "decisions", where)))
    _unique((d.key for d in decisions), "decision key", "decisions")
    dose = _dose(_get(data, "dose", dict, where)) if "dose" in data else None
    _check_batch_dose(steps, dose)
    thaw_limit = _get(data, "thaw_to_infusion_minutes", int, where)
    if thaw_limit is not None and not 1 <= thaw_limit <= MAX_THAW_TO_INFUSION_MINUTES:
        raise _Invalid(f"{where}: thaw_to_infusion_minutes must be 1 to {MAX_THAW_TO_INFUSION_MINUTES} "
                       f"(minutes from the start of thawing to the end of infusion), not {thaw_limit}")
    shipping = _shipping_range(data, where)
    return ProcessDefinition(
        key=key,
        version=version,
        title=_text(data, "title", where),
        product=_text(data, "product", where),
        initial_state=initial_state,
        recording_states=recording_states,
        states=states,
        transitions=transitions,
        steps=tuple(steps),
        sha256=sha256,
        source_name=source_name,
        source_text=text,
        container_kinds=container_kinds,
        release_tests=release_tests,
        decisions=decisions,
        release=release,
        investigational=_text(data, "investigational", where, ""),
        dose=dose,
        thaw_to_infusion_minutes=thaw_limit,
        shipping_temperature=shipping,
    )


def _shipping_range(data: Mapping[str, Any], where: str) -> Limits | None:
    """The logger range a shipment of the product must stay within (both ends, or neither)."""
    if "shipping_temp_min_c" not in data and "shipping_temp_max_c" not in data:
        return None
    if "shipping_temp_min_c" not in data or "shipping_temp_max_c" not in data:
        raise _Invalid(f"{where}: give both shipping_temp_min_c and shipping_temp_max_c, or neither")
    limits = _limits(data, "shipping_temp_min_c", "shipping_temp_max_c", where)
    low, high = SHIPPING_TEMP_BOUNDS
    for value in (limits.min, limits.max):
        if value is None or not low <= value <= high:
            raise _Invalid(f"{where}: a shipping temperature must be {_num(low)} to {_num(high)} °C, not {value}")
    return limits


def _dose(table: dict[str, Any]) -> DoseRange:
    """The [dose] table: the target dose a batch is scheduled with, and the range it may take."""
    where = "dose"
    _check_keys(table, _DOSE_KEYS, where)
    values = {name: _get(table, name, float, where) for name in ("min", "max", "default")}
    if not 0 < values["min"] <= values["max"]:
        raise _Invalid(f"{where}: min and max must be positive, min not above max "
                       f"(min {_num(values['min'])}, max {_num(values['max'])})")
    if not values["min"] <= values["default"] <= values["max"]:
        raise _Invalid(f"{where}: default {_num(values['default'])} lies outside "
                       f"{_num(values['min'])}..{_num(values['max'])}")
    return DoseRange(unit=_text(table, "unit", where), **values)


def _check_batch_dose(steps: list[StepSpec], dose: DoseRange | None) -> None:
    """A field taking the batch's dose needs a [dose] table in its unit, within its valid range."""
    for step in steps:
        for spec in step.fields:
            if not spec.batch_dose:
                continue
            where = f"steps {step.key!r}, field {spec.key!r}"
            if dose is None:
                raise _Invalid(f"{where}: batch_dose needs a [dose] table (unit, min, max, default)")
            if spec.unit != dose.unit:
                raise _Invalid(f"{where}: unit {spec.unit!r} differs from the [dose] unit {dose.unit!r}")
            if not (spec.valid.contains(dose.min) and spec.valid.contains(dose.max)):
                raise _Invalid(f"{where}: the [dose] range {_num(dose.min)}..{_num(dose.max)} lies outside "
                               f"the field's valid range {_range(spec.valid)}")


def _container_kinds(table: dict[str, Any]) -> dict[str, ContainerKind]:
    kinds: dict[str, ContainerKind] = {}
    for key, data in table.items():
        where = f"container_kinds.{key}"
        if not SLUG.fullmatch(key):
            raise _Invalid(f"{where}: the kind may use only a-z, 0-9 and _, starting with a letter")
        if not isinstance(data, dict):
            raise _Invalid(f"{where}: must be a table with title and stock")
        _check_keys(data, _CONTAINER_KIND_KEYS, where)
        stock = _text(data, "stock", where)
        if stock not in STOCKS:
            raise _Invalid(f"{where}: unknown stock {stock!r} (use one of {', '.join(STOCKS)})")
        dates = _strings(data, "dates", where)
        for name in dates:
            if name not in LABEL_DATES:
                raise _Invalid(f"{where}: unknown label date {name!r} (use {', '.join(LABEL_DATES)})")
        shelf_life = _get(data, "shelf_life_days", int, where)
        if shelf_life is not None and shelf_life < 1:
            raise _Invalid(f"{where}: shelf_life_days must be at least 1, not {shelf_life}")
        if ("expires" in dates) != (shelf_life is not None):
            raise _Invalid(f"{where}: the label date 'expires' and shelf_life_days go together")
        kinds[key] = ContainerKind(key, _text(data, "title", where), stock, _get(data, "storage", str, where, ""),
                                   _strings(data, "regulatory", where), _text(data, "description", where, ""),
                                   dates, shelf_life, _strings(data, "warnings", where))
    return kinds


def _states(table: dict[str, Any]) -> dict[str, str]:
    if not table:
        raise _Invalid("states: at least one state is needed")
    for key, title in table.items():
        if not SLUG.fullmatch(key):
            raise _Invalid(f"states: state {key!r} may use only a-z, 0-9 and _, starting with a letter")
        if not isinstance(title, str) or not title.strip():
            raise _Invalid(f"states: the title of {key!r} must be a non-empty string, not {title!r}")
    return dict(table)


def _declared(state: str, states: Mapping[str, str], where: str) -> None:
    if state not in states:
        raise _Invalid(f"{where}: state {state!r} is not declared in [states] ({', '.join(states)})")


def _state_ref(table: Mapping[str, Any], key: str, states: Mapping[str, str], where: str) -> str:
    state = _text(table, key, where)
    _declared(state, states, f"{where}: {key}")
    return state


def _transition(table: dict[str, Any], states: Mapping[str, str], where: str) -> TransitionSpec:
    _check_keys(table, _TRANSITION_KEYS, where)
    event = _slug(table, "event", where)
    where = f"transition {event!r}"
    source = _strings(table, "source", where)
    if not source:
        raise _Invalid(f"{where}: 'source' must list at least one state")
    for state in source:
        _declared(state, states, f"{where}: source")
    target = _state_ref(table, "target", states, where)
    if target in source:
        raise _Invalid(f"{where}: target {target!r} is also a source, so it would fire for ever")
    when = _text(table, "when", where)
    if when not in CONDITIONS:
        raise _Invalid(f"{where}: unknown condition when = {when!r} (use one of {', '.join(CONDITIONS)})")
    return TransitionSpec(event, source, target, when, _text(table, "title", where, ""))


def _step(table: dict[str, Any], index: int, earlier: list[StepSpec], all_step_keys: list[str],
          container_kinds: Mapping[str, ContainerKind]) -> StepSpec:
    where = f"steps[{index}]"
    _check_keys(table, _STEP_KEYS, where)
    key = _slug(table, "key", where)
    where = f"step {key!r}"
    if key in RESERVED_STEP_KEYS:
        raise _Invalid(f"{where}: {key!r} is reserved for formulas; choose another step key")
    if any(step.key == key for step in earlier):
        raise _Invalid(f"{where}: duplicate step key {key!r}")
    role = _role(table, "role", where, None)
    verifier_role = _role(table, "verifier_role", where, "technician")
    repeatable = _get(table, "repeatable", bool, where, False)
    min_entries = _get(table, "min_entries", int, where, 1)
    if min_entries < 1:
        raise _Invalid(f"{where}: min_entries must be at least 1, not {min_entries}")
    if min_entries > 1 and not repeatable:
        raise _Invalid(f"{where}: min_entries {min_entries} needs repeatable = true")

    field_tables = _tables(table, "fields", where)
    if not field_tables:
        raise _Invalid(f"{where}: at least one [[steps.fields]] is needed")
    fields = tuple(_field(t, i, where, repeatable) for i, t in enumerate(field_tables))
    _unique((f.key for f in fields), "field key", where)
    for field_spec in fields:
        _check_handoff(field_spec, fields, container_kinds, f"{where}, field {field_spec.key!r}")
        _check_event_order(field_spec, fields, earlier, f"{where}, field {field_spec.key!r}")

    derived: list[DerivedSpec] = []
    derived_tables = _tables(table, "derived", where)
    for i, derived_table in enumerate(derived_tables):
        spec = _derived(derived_table, i, where)
        if spec.key in {f.key for f in fields} | {d.key for d in derived}:
            raise _Invalid(f"{where}: duplicate derived key {spec.key!r} (a field or derived value has it)")
        try:
            _check_formula(spec, fields, derived, derived_tables, earlier, all_step_keys)
        except formula.FormulaError as exc:
            raise _Invalid(f"{where}, derived {spec.key!r}: {exc}") from None
        derived.append(spec)

    return StepSpec(
        key=key,
        title=_text(table, "title", where),
        role=role,
        verify=_get(table, "verify", bool, where),
        fields=fields,
        derived=tuple(derived),
        instructions=_get(table, "instructions", str, where, ""),
        repeatable=repeatable,
        min_entries=min_entries,
        window=_window(table, where, earlier),
        hold=_hold(table, where, fields),
        verifier_role=verifier_role,
        creates=tuple(_create(t, i, where, fields, derived, container_kinds)
                      for i, t in enumerate(_tables(table, "creates", where))),
    )


def _check_handoff(spec: FieldSpec, fields: tuple[FieldSpec, ...], container_kinds: Mapping[str, ContainerKind],
                   where: str) -> None:
    if spec.container is not None and spec.container not in container_kinds:
        raise _Invalid(f"{where}: container kind {spec.container!r} is not declared in [container_kinds]")
    if spec.sets_status is not None and spec.sets_status not in CONTAINER_STATUSES:
        raise _Invalid(f"{where}: sets_status {spec.sets_status!r} is not one of {', '.join(CONTAINER_STATUSES)}")
    if spec.location is not None:
        for name in re.findall(r"{([^{}]*)}", spec.location):
            if name not in {f.key for f in fields if f.type in ("text", "equipment", "choice")}:
                raise _Invalid(f"{where}: location names {{{name}}}, which is not a text, choice or equipment "
                               "field of this step")


def _check_event_order(spec: FieldSpec, fields: tuple[FieldSpec, ...], earlier: list[StepSpec], where: str) -> None:
    """``not_before`` names events that exist before this field's; ``days_since`` an earlier step."""
    earlier_keys = {step.key for step in earlier}
    own = [f.key for f in fields]
    for name in spec.not_before:
        prefix, _, rest = name.partition(".")
        if not rest and name in earlier_keys:
            continue
        if not rest and name in own and name != spec.key and next(f for f in fields if f.key == name).type == "datetime":
            continue
        if rest and prefix in earlier_keys and any(f.key == rest and f.type == "datetime"
                                                   for f in next(s for s in earlier if s.key == prefix).fields):
            continue
        raise _Invalid(f"{where}: not_before names {name!r}, which is not an earlier step, another date-time "
                       "field of this step or <earlier step>.<date-time field>")
    if spec.days_since is not None and spec.days_since not in earlier_keys:
        raise _Invalid(f"{where}: days_since = {spec.days_since!r} is not an earlier step")
    _check_lot_links(spec, fields, where)


def _check_lot_links(spec: FieldSpec, fields: tuple[FieldSpec, ...], where: str) -> None:
    """``uses`` names a number field of the step with a unit, ``uses_amount`` is positive, and
    ``from_lot`` names a lot field of the step (whose lot's titer the field takes)."""
    by_key = {f.key: f for f in fields}
    if spec.uses is not None and spec.uses_amount is not None:
        raise _Invalid(f"{where}: give uses or uses_amount, not both")
    if spec.uses is not None:
        used = by_key.get(spec.uses)
        if used is None or used.type != "number" or not used.unit:
            raise _Invalid(f"{where}: uses = {spec.uses!r} is not a number field with a unit of this step")
    if spec.uses_amount is not None and not spec.uses_amount > 0:
        raise _Invalid(f"{where}: uses_amount must be positive, not {_num(spec.uses_amount)}")
    if spec.from_lot is not None:
        lot = by_key.get(spec.from_lot)
        if lot is None or lot.type != "lot":
            raise _Invalid(f"{where}: from_lot = {spec.from_lot!r} is not a lot field of this step")
        if spec.default is not None:
            raise _Invalid(f"{where}: a field taken from a lot has no default")


def _create(table: dict[str, Any], index: int, step_where: str, fields: tuple[FieldSpec, ...],
            derived: list[DerivedSpec], container_kinds: Mapping[str, ContainerKind]) -> CreateSpec:
    """What a step creates: the references must name this step's own fields and values."""
    where = f"{step_where}, creates[{index}]"
    _check_keys(table, _CREATE_KEYS, where)
    kind = _text(table, "kind", where)
    if kind not in container_kinds:
        raise _Invalid(f"{where}: container kind {kind!r} is not declared in [container_kinds]")
    numbers = {f.key for f in fields if f.type in ("number", "integer")} | {d.key for d in derived}
    whole = {f.key for f in fields if f.type == "integer"} | {d.key for d in derived if d.integer}
    count = table.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, (int, str)):
        raise _Invalid(f"{where}: count must be a whole number or the key of an integer value, not {count!r}")
    if isinstance(count, int) and count < 1:
        raise _Invalid(f"{where}: count must be at least 1, not {count}")
    if isinstance(count, str) and count not in whole:
        raise _Invalid(f"{where}: count {count!r} is not an integer field or integer derived value of this step")
    volume = _get(table, "volume", str, where)
    if volume is not None and volume not in numbers:
        raise _Invalid(f"{where}: volume {volume!r} is not a number field or derived value of this step")
    parent = _get(table, "parent", str, where)
    if parent is not None and parent not in {f.key for f in fields if f.type == "container"}:
        raise _Invalid(f"{where}: parent {parent!r} is not a container field of this step")
    most = _get(table, "max", int, where, count if isinstance(count, int) else MAX_CREATED)
    if not 1 <= most <= MAX_CREATED:
        raise _Invalid(f"{where}: max must be between 1 and {MAX_CREATED}, not {most}")
    if isinstance(count, int) and count > most:
        raise _Invalid(f"{where}: count {count} is more than max {most}")
    return CreateSpec(kind, count, volume, parent, most)


def _role(table: Mapping[str, Any], key: str, where: str, default: str | None) -> str:
    role = _text(table, key, where, default)
    if role not in ROLES:
        raise _Invalid(f"{where}: unknown {key} {role!r} (use one of {', '.join(ROLES)})")
    return role


def _window(table: Mapping[str, Any], where: str, earlier: list[StepSpec]) -> WindowSpec | None:
    data = _get(table, "window", dict, where)
    if data is None:
        return None
    where = f"{where}, window"
    _check_keys(data, _WINDOW_KEYS, where)
    after = _text(data, "after", where)
    if after not in {step.key for step in earlier}:
        raise _Invalid(f"{where}: after = {after!r} is not an earlier step")
    min_days = _get(data, "min_days", int, where)
    max_days = _get(data, "max_days", int, where)
    if min_days is None and max_days is None:
        raise _Invalid(f"{where}: give min_days, max_days or both")
    if any(days is not None and days < 0 for days in (min_days, max_days)):
        raise _Invalid(f"{where}: days cannot be negative")
    if min_days is not None and max_days is not None and min_days > max_days:
        raise _Invalid(f"{where}: min_days {min_days} is greater than max_days {max_days}")
    return WindowSpec(after, min_days, max_days)


def _hold(table: Mapping[str, Any], where: str, fields: tuple[FieldSpec, ...]) -> HoldRule | None:
    data = _get(table, "hold", dict, where)
    if data is None:
        return None
    where = f"{where}, hold"
    _check_keys(data, _HOLD_KEYS, where)
    field_key = _text(data, "field", where)
    equals = _text(data, "equals", where)
    spec = next((f for f in fields if f.key == field_key), None)
    if spec is None or spec.type != "choice":
        raise _Invalid(f"{where}: field {field_key!r} is not a choice field of this step")
    if equals not in spec.choices:
        raise _Invalid(f"{where}: equals {equals!r} is not one of the choices of {field_key!r}")
    return HoldRule(field_key, equals)


def _field(table: dict[str, Any], index: int, step_where: str, repeatable: bool) -> FieldSpec:
    key, where, field_type = _key_and_kind(table, f"{step_where}, fields[{index}]", f"{step_where}, field", "type",
                                           _FIELD_COMMON_KEYS, _FIELD_TYPE_KEYS)

    if key in RESERVED_VALUE_KEYS:
        raise _Invalid(f"{where}: {key!r} is reserved for formulas; choose another field key")
    unique_in_step = _get(table, "unique_in_step", bool, where, False)
    if unique_in_step and not repeatable:
        raise _Invalid(f"{where}: unique_in_step applies only to fields of repeatable steps")
    valid = _limits(table, "min", "max", where)
    limits = _limits(table, "limit_min", "limit_max", where)
    for name, bound in (("limit_min", limits.min), ("limit_max", limits.max)):
        if bound is not None and not valid.contains(bound):
            raise _Invalid(f"{where}: {name} {_num(bound)} lies outside the valid range {_range(valid)}")
    choices = _strings(table, "choices", where)
    if field_type == "choice" and not choices:
        raise _Invalid(f"{where}: a choice field needs at least one choice")
    deviation_choices = _strings(table, "deviation_choices", where)
    for choice in deviation_choices:
        if choice not in choices:
            raise _Invalid(f"{where}: deviation choice {choice!r} is not one of the choices")
    max_length = _get(table, "max_length", int, where, 500)
    if max_length < 1:
        raise _Invalid(f"{where}: max_length must be at least 1, not {max_length}")

    spec = FieldSpec(
        key=key,
        label=_text(table, "label", where),
        type=field_type,
        unit=_text(table, "unit", where),
        required=_get(table, "required", bool, where, True),
        help=_get(table, "help", str, where, ""),
        valid=valid,
        limits=limits,
        choices=choices,
        deviation_choices=deviation_choices,
        expected=_get(table, "expected", bool, where),
        max_length=max_length,
        material=_slug(table, "material", where) if "material" in table else None,
        equipment=_slug(table, "equipment", where) if "equipment" in table else None,
        default=_get(table, "default", str, where),
        unique_in_step=unique_in_step,
        container=_slug(table, "container", where) if "container" in table else None,
        handoff=_text(table, "handoff", where) if "handoff" in table else None,
        all_of_kind=_get(table, "all_of_kind", bool, where, False),
        sets_status=_text(table, "sets_status", where) if "sets_status" in table else None,
        location=_text(table, "location", where) if "location" in table else None,
        not_before=_strings(table, "not_before", where),
        days_since=_slug(table, "days_since", where) if "days_since" in table else None,
        uses=_slug(table, "uses", where) if "uses" in table else None,
        uses_amount=_get(table, "uses_amount", float, where),
        from_lot=_slug(table, "from_lot", where) if "from_lot" in table else None,
        batch_dose=_get(table, "batch_dose", bool, where, False),
    )
    _check_default(spec, where)
    return spec


def _check_default(spec: FieldSpec, where: str) -> None:
    """The default is what the form shows pre-filled, so it must be a valid entry."""
    if spec.default is None:
        return
    try:
        value = typed_value(spec, spec.default)
    except ValueError as exc:
        raise _Invalid(f"{where}: default {spec.default!r} is not valid: {exc}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not spec.valid.contains(value):
        raise _Invalid(f"{where}: default {spec.default!r} lies outside the valid range {_range(spec.valid)}")
    if isinstance(value, str) and len(value) > spec.max_length:
        raise _Invalid(f"{where}: default is longer than max_length {spec.max_length}")


def _derived(table: dict[str, Any], index: int, step_where: str) -> DerivedSpec:
    where = f"{step_where}, derived[{index}]"
    _check_keys(table, _DERIVED_KEYS, where)
    key = _slug(table, "key", where)
    where = f"{step_where}, derived {key!r}"
    if key in RESERVED_VALUE_KEYS:
        raise _Invalid(f"{where}: {key!r} is reserved for formulas; choose another key")
    return DerivedSpec(
        key=key,
        label=_text(table, "label", where),
        formula=_text(table, "formula", where),
        unit=_text(table, "unit", where),
        limits=_limits(table, "limit_min", "limit_max", where),
        integer=_get(table, "integer", bool, where, False),
    )


def _check_formula(
    spec: DerivedSpec,
    fields: tuple[FieldSpec, ...],
    derived: list[DerivedSpec],
    derived_tables: list[dict[str, Any]],
    earlier: list[StepSpec],
    all_step_keys: list[str],
) -> None:
    """Raise FormulaError unless every name of the formula resolves and its types agree.

    Usable names: the step's fields, derived values defined above this one,
    ``<earlier step>.<field>``, ``<earlier step>.recorded_at``, ``patient.weight_kg``, ``now``.
    """
    kinds = {f.key: _field_kind(f) for f in fields}
    kinds.update({d.key: formula.NUMBER for d in derived})
    for step in earlier:
        kinds.update({f"{step.key}.{f.key}": _field_kind(f) for f in step.fields})
        kinds[f"{step.key}.recorded_at"] = formula.DATETIME
    kinds["patient.weight_kg"] = formula.NUMBER
    kinds["now"] = formula.DATETIME
    for name in formula.names(spec.formula):
        if name not in kinds:
            raise formula.FormulaError(_why_unknown(name, spec, derived_tables, earlier, all_step_keys))
    formula.check(spec.formula, kinds)


def _why_unknown(
    name: str,
    spec: DerivedSpec,
    derived_tables: list[dict[str, Any]],
    earlier: list[StepSpec],
    all_step_keys: list[str],
) -> str:
    prefix, _, rest = name.partition(".")
    earlier_keys = [step.key for step in earlier]
    if not rest and name in [t.get("key") for t in derived_tables]:
        return f"{name!r} is defined after {spec.key!r}; a formula can use only derived values above it"
    if rest and prefix in earlier_keys:
        return f"step {prefix!r} has no field {rest!r}"
    if rest and prefix in all_step_keys:
        return f"{name!r} refers to step {prefix!r}, which is not an earlier step"
    return (
        f"unknown name {name!r} (use a field of this step, a derived value above it, "
        "<earlier step>.<field>, <earlier step>.recorded_at, patient.weight_kg or now)"
    )


def _field_kind(spec: FieldSpec) -> str:
    if spec.type in ("number", "integer"):
        return formula.NUMBER
    if spec.type == "datetime":
        return formula.DATETIME
    return _NOT_IN_FORMULAS[spec.type]


# --- release testing and QA decisions ------------------------------------------------------


def _release(table: dict[str, Any], states: Mapping[str, str]) -> ReleaseRules:
    where = "release"
    _check_keys(table, _RELEASE_KEYS, where)
    result_states = _strings(table, "result_states", where)
    released_states = _strings(table, "released_states", where)
    for state in (*result_states, *released_states):
        _declared(state, states, where)
    return ReleaseRules(result_states, released_states, _state_ref(table, "late_failure_state", states, where))


def _release_test(table: dict[str, Any], index: int, steps: list[StepSpec]) -> ReleaseTestSpec:
    key, where, kind = _key_and_kind(table, f"release_tests[{index}]", "release test", "kind", _TEST_COMMON_KEYS,
                                     _TEST_KIND_KEYS)
    required = _get(table, "required", bool, where, True)
    before_release = _text(table, "before_release", where, "final")
    if before_release not in BEFORE_RELEASE:
        raise _Invalid(f"{where}: unknown before_release {before_release!r} (use one of {', '.join(BEFORE_RELEASE)})")
    if not required and before_release != "none":
        raise _Invalid(f"{where}: an optional test (required = false) cannot be needed before release; "
                       'set before_release = "none"')
    common = {"key": key, "title": _text(table, "title", where), "method": _text(table, "method", where),
              "kind": kind, "required": required, "before_release": before_release}
    if kind == "number":
        if before_release == "interim":
            raise _Invalid(f"{where}: a number test has no interim results; use before_release = \"final\" or \"none\"")
        valid = _limits(table, "min", "max", where)
        unit = _text(table, "unit", where)
        relative = _relative_spec(table, steps, where)
        spec = _specification(table, valid, unit, where) if relative["target"] is None or any(
            key in table for key in ("spec_min", "spec_max", "spec_above", "spec_below")) else Specification()
        return ReleaseTestSpec(**common, unit=unit, valid=valid, spec=spec, **relative)
    choices = _strings(table, "choices", where)
    if len(choices) < 2:
        raise _Invalid(f"{where}: a result test needs at least two choices, one that passes and one that fails")
    passing = _strings(table, "passing", where)
    for choice in passing:
        if choice not in choices:
            raise _Invalid(f"{where}: passing result {choice!r} is not one of the choices")
    if not passing:
        raise _Invalid(f"{where}: 'passing' must name at least one of the choices")
    if set(passing) == set(choices):
        raise _Invalid(f"{where}: every choice passes, so no result could fail the specification")
    interim = _strings(table, "interim", where)
    for result in interim:
        if result.casefold() in {c.casefold() for c in choices}:
            raise _Invalid(f"{where}: interim result {result!r} is also a final choice")
    if before_release == "interim" and not interim:
        raise _Invalid(f'{where}: before_release = "interim" needs interim results')
    return ReleaseTestSpec(**common, choices=choices, passing=passing, interim=interim,
                           specification=_text(table, "specification", where, ""))


def _relative_spec(table: Mapping[str, Any], steps: list[StepSpec], where: str) -> dict[str, Any]:
    """A number test's target-relative specification and computed value (the dose)."""
    values = {f"{step.key}.{f.key}": f for step in steps for f in step.fields}
    target = _text(table, "target", where) if "target" in table else None
    low, high = _get(table, "target_low_pct", float, where), _get(table, "target_high_pct", float, where)
    if target is not None:
        spec = values.get(target)
        if spec is None or spec.type not in ("number", "integer"):
            raise _Invalid(f"{where}: target {target!r} is not a number field of a step (<step>.<field>)")
        if low is None or high is None or not 0 <= low < 100 < high:
            raise _Invalid(f"{where}: a target needs target_low_pct below 100 and target_high_pct above 100")
    elif low is not None or high is not None:
        raise _Invalid(f"{where}: target_low_pct and target_high_pct need a target")
    computed = _text(table, "computed", where) if "computed" in table else None
    tolerance = _get(table, "tolerance_pct", float, where)
    if computed is not None:
        kinds = {name: _field_kind(f) for name, f in values.items() if f.type in ("number", "integer")}
        kinds.update({f"{step.key}.{d.key}": formula.NUMBER for step in steps for d in step.derived})
        kinds["patient.weight_kg"] = formula.NUMBER
        try:
            unknown = [name for name in formula.names(computed) if name not in kinds]
            if unknown:
                raise _Invalid(f"{where}: computed uses {unknown[0]!r}, which is not <step>.<number field or "
                               "derived value> or patient.weight_kg")
            formula.check(computed, kinds)
        except formula.FormulaError as exc:
            raise _Invalid(f"{where}: computed: {exc}") from None
        if tolerance is None or tolerance <= 0:
            raise _Invalid(f"{where}: a computed value needs tolerance_pct above 0")
    elif tolerance is not None:
        raise _Invalid(f"{where}: tolerance_pct needs a computed value")
    return {"target": target, "target_low_pct": low, "target_high_pct": high, "computed": computed,
            "tolerance_pct": tolerance}


def _specification(table: Mapping[str, Any], valid: Limits, unit: str, where: str) -> Specification:
    """The acceptance interval: it must be possible to pass it and possible to fail it."""
    spec = Specification(_bound(table, "spec_min", "spec_above", where), _bound(table, "spec_max", "spec_below", where))
    if spec.low is None and spec.high is None:
        raise _Invalid(f"{where}: give a specification (spec_min or spec_above, spec_max or spec_below)")
    words = format_spec(spec, unit)
    if is_empty(spec):
        raise _Invalid(f"{where}: the specification {words} is empty: no result could meet it")
    bounds = Specification(Bound(valid.min) if valid.min is not None else None,
                           Bound(valid.max) if valid.max is not None else None)
    if not overlaps(spec, bounds):
        raise _Invalid(f"{where}: the specification {words} lies outside the valid range {_range(valid)}: "
                       "no result could meet it")
    if covers(spec, bounds):
        raise _Invalid(f"{where}: every value in the valid range {_range(valid)} meets the specification {words}, "
                       "so no result could fail it")
    return spec


def _bound(table: Mapping[str, Any], inclusive: str, exclusive: str, where: str) -> Bound | None:
    if inclusive in table and exclusive in table:
        raise _Invalid(f"{where}: give {inclusive} or {exclusive}, not both")
    if inclusive in table:
        return Bound(_get(table, inclusive, float, where), inclusive=True)
    if exclusive in table:
        return Bound(_get(table, exclusive, float, where), inclusive=False)
    return None


def _decision(table: dict[str, Any], index: int, states: Mapping[str, str]) -> DecisionSpec:
    where = f"decisions[{index}]"
    _check_keys(table, _DECISION_KEYS, where)
    key = _slug(table, "key", where)
    where = f"decision {key!r}"
    source = _strings(table, "source", where)
    if not source:
        raise _Invalid(f"{where}: 'source' must list at least one state")
    for state in source:
        _declared(state, states, f"{where}: source")
    resume = _get(table, "resume", bool, where, False)
    if ("target" in table) == resume:
        raise _Invalid(f"{where}: give either a target state or resume = true (back to the state it was held from)")
    target = None if resume else _state_ref(table, "target", states, where)
    if target in source:
        raise _Invalid(f"{where}: target {target!r} is also a source state")
    meaning = _text(table, "meaning", where)
    if meaning not in SIGNATURE_MEANINGS:
        raise _Invalid(f"{where}: unknown meaning {meaning!r} (use one of {', '.join(SIGNATURE_MEANINGS)})")
    requires = _text(table, "requires", where) if "requires" in table else None
    if requires is not None and requires not in REQUIREMENTS:
        raise _Invalid(f"{where}: unknown requires {requires!r} (use one of {', '.join(REQUIREMENTS)})")
    return DecisionSpec(
        key=key,
        title=_text(table, "title", where),
        source=source,
        target=target,
        role=_role(table, "role", where, None),
        meaning=meaning,
        requires=requires,
        independent=_get(table, "independent", bool, where, True),
        reason_required=_get(table, "reason_required", bool, where, True),
    )
