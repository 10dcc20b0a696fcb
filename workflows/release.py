"""Release testing and QA decisions: pure answers over a definition, nothing stored.

"Does this QC result meet its specification?" (``check_result``; a test judged against its
batch, the dose against the target dose, first reads its ``Basis``: ``batch_basis``), "are
the results QA reviews in?" (``results_in``), "what keeps this batch from release?"
(``blockers``), "may a result or a decision be recorded in the batch's state?"
(``result_refusal``, ``decision_refusal``) and "what does a result after release do?"
(``state_after_result``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from workflows import formula
from workflows.engine import parse_text, state_phrase
from workflows.engine_types import StepProgress, Value
from workflows.formatting import (
    DIGITS,
    LARGE,
    decimal,
    format_number,
    format_quantity,
    format_recorded,
    round_half_up,
)
from workflows.model import (
    Bound,
    DecisionSpec,
    FieldSpec,
    Limits,
    ProcessDefinition,
    ReleaseTestSpec,
    Specification,
)

PASS, FAIL, INTERIM = "pass", "fail", "interim"
#: A censored number: below or above what the method can quantify ("< 0.5" EU/mL).
_CENSORED = re.compile(r"\s*([<>])\s*(.*)", re.DOTALL)


class ResultRefused(ValueError):
    """A result that cannot be recorded as typed; the message says why, naming the test."""


@dataclass(frozen=True)
class ResultCheck:
    """A result as typed, judged against its test's specification."""

    text: str  # canonical: "91.5", "< 0.5", "no growth to date"
    number: float | None
    unit: str | None
    verdict: str  # pass, fail or interim
    final: bool
    message: str  # the verdict in words, naming the test and the specification
    specification: str = ""  # the specification it was judged against, in words
    # Non-empty when the result differs from the value the process computed by more than the
    # test's tolerance: the flag in words, naming both values. The result is kept, flagged.
    discrepancy: str = ""


@dataclass(frozen=True)
class CurrentResult:
    """What lab/ knows of the current (latest, uncorrected) result of one test."""

    verdict: str
    final: bool
    text: str = ""
    specification: str = ""  # as the result was judged: a relative one depends on the batch


@dataclass(frozen=True)
class Basis:
    """What a test judged against its batch reads from the batch record (``batch_basis``).

    ``target`` is the value typed (the target dose), ``computed`` the value the process
    made (the dose formulation filled); each None while the steps it comes from are not
    recorded. ``target_label`` names the target in a sentence, ``steps`` the titles of the
    steps both come from.
    """

    target: float | None = None
    computed: float | None = None
    target_label: str = "target"
    steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchFacts:
    """What a QA decision is judged on.

    ``open_deviations`` maps each open deviation's number to its source (``oos`` for those
    an out-of-specification result opened); ``unsigned`` names records whose signature is
    missing or no longer matches their content.
    """

    progress: Mapping[str, StepProgress]
    results: Mapping[str, CurrentResult]
    open_deviations: Mapping[str, str] = field(default_factory=dict)
    unsigned: tuple[str, ...] = ()


# --- specifications as intervals ------------------------------------------------------------


def is_empty(spec: Specification) -> bool:
    """True when no value lies inside ``spec`` (``> 5`` and ``< 5``)."""
    low, high = spec.low, spec.high
    if low is None or high is None:
        return False
    return low.value > high.value or (low.value == high.value and not (low.inclusive and high.inclusive))


def overlaps(a: Specification, b: Specification) -> bool:
    """True when some value lies inside both intervals."""
    return not is_empty(Specification(_tighter(a.low, b.low, low=True), _tighter(a.high, b.high, low=False)))


def covers(outer: Specification, inner: Specification) -> bool:
    """True when every value inside ``inner`` is inside ``outer``."""
    return (_tighter(outer.low, inner.low, low=True) == inner.low
            and _tighter(outer.high, inner.high, low=False) == inner.high)


def _tighter(a: Bound | None, b: Bound | None, *, low: bool) -> Bound | None:
    """The more restrictive of two lower (or upper) bounds; None is unbounded."""
    if a is None or b is None:
        return b if a is None else a
    if a.value != b.value:
        return (a if a.value > b.value else b) if low else (a if a.value < b.value else b)
    return a if not a.inclusive else b


def format_spec(spec: Specification, unit: str | None) -> str:
    """``≥ 80 %``, ``< 5 EU/mL``, ``8.00 × 10⁵–1.20 × 10⁶ cells/kg``, ``> 0.5 and ≤ 6``."""
    suffix = f" {unit}" if unit else ""
    low, high = spec.low, spec.high
    if low is not None and high is not None and low.inclusive and high.inclusive:
        return f"{format_number(low.value)}–{format_number(high.value)}{suffix}"
    parts = []
    if low is not None:
        parts.append(f"{'≥' if low.inclusive else '>'} {format_number(low.value)}")
    if high is not None:
        parts.append(f"{'≤' if high.inclusive else '<'} {format_number(high.value)}")
    return " and ".join(parts) + suffix


def spec_text(test: ReleaseTestSpec, basis: Basis | None = None) -> str:
    """The specification of ``test`` in words, as the release panel and the CoA print it.

    A specification relative to a batch value reads as the interval it gives for the batch
    and how it follows from the target: ``8.00 × 10⁵–1.20 × 10⁶ cells/kg (80–120 % of the
    target dose 1.00 × 10⁶ cells/kg)``; without the batch's target, the rule alone.
    """
    if test.kind != "number":
        return test.specification or " or ".join(test.passing)
    if test.target is None:
        return format_spec(test.spec, test.unit)
    target = basis.target_label if basis else "batch's target"
    rule = f"{format_number(test.target_low_pct or 0)}–{format_number(test.target_high_pct or 0)} % of the {target}"
    spec = batch_spec(test, basis)
    if basis is None or spec is None:
        return f"{rule} (not recorded yet)" if basis else rule
    return f"{format_spec(spec, test.unit)} ({rule} {format_quantity(basis.target or 0, test.unit)})"


def batch_spec(test: ReleaseTestSpec, basis: Basis | None) -> Specification | None:
    """The interval a result of ``test`` is judged against for a batch: the test's own
    specification, narrowed to target_low_pct..target_high_pct % of the batch's target when
    the test has one; None when that target is not recorded yet."""
    if test.target is None:
        return test.spec
    if basis is None or basis.target is None:
        return None
    target = decimal(basis.target)
    low = Bound(float(target * decimal(test.target_low_pct or 0) / 100))
    high = Bound(float(target * decimal(test.target_high_pct or 0) / 100))
    return Specification(_tighter(test.spec.low, low, low=True), _tighter(test.spec.high, high, low=False))


# --- what a test reads from its batch -----------------------------------------------------------


def basis_steps(test: ReleaseTestSpec) -> tuple[str, ...]:
    """The keys of the steps whose values ``test`` is judged against (none for most tests)."""
    names = [test.target] if test.target else []
    names += formula.names(test.computed) if test.computed else []
    steps = [name.split(".", 1)[0] for name in names if name and not name.startswith("patient.")]
    return tuple(dict.fromkeys(steps))


def batch_basis(definition: ProcessDefinition, test: ReleaseTestSpec, values: Mapping[str, Value | None]) -> Basis:
    """The target and computed value of ``test`` for a batch whose record holds ``values``:
    ``<step>.<field or derived value>`` (the latest entry of each step) and
    ``patient.weight_kg``; a value missing from them leaves the target or computed value None."""
    target = values.get(test.target) if test.target else None
    computed = formula.evaluate(test.computed, values) if test.computed else None
    label = "target"
    if test.target:
        step_key, field_key = test.target.split(".", 1)
        label = _in_sentence(definition.step(step_key).field(field_key).label)
    return Basis(target=float(target) if isinstance(target, int | float) and not isinstance(target, bool) else None,
                 computed=None if computed is None else float(computed), target_label=label,
                 steps=tuple(definition.step(key).title for key in basis_steps(test)))


def basis_refusal(test: ReleaseTestSpec, basis: Basis | None) -> str | None:
    """Why a result of ``test`` cannot be judged yet (its target is not recorded), else None."""
    if test.target is None or (basis is not None and basis.target is not None):
        return None
    steps = " and ".join(basis.steps) if basis and basis.steps else "the step that records it"
    label = basis.target_label if basis else "target"
    return (f"{test.title} is judged against the {label} recorded at {steps}, which is not recorded yet: "
            f"record {steps} first.")


def computed_refusal(test: ReleaseTestSpec, basis: Basis | None) -> str | None:
    """Why the computed value of ``test`` cannot be recorded as its result, else None."""
    if test.computed is None:
        return f"{test.title} is not computed from the batch record: enter the result."
    if basis is None or basis.computed is None:
        steps = " and ".join(basis.steps) if basis and basis.steps else "the steps it is computed from"
        return f"{test.title} cannot be computed yet: {steps} is not recorded."
    return basis_refusal(test, basis)


def computed_result_text(basis: Basis) -> str:
    """The computed value as a result's text, as a person would type it: three significant
    digits, rounded half up, e-notation for cell counts (``1.00e6``, ``32.3``)."""
    assert basis.computed is not None
    exact = decimal(basis.computed)
    if abs(exact) < LARGE:
        return format_number(exact)
    exponent = exact.adjusted()
    mantissa = round_half_up(exact.scaleb(-exponent), DIGITS - 1)
    if abs(mantissa) >= 10:  # 9.996e5 rounds up to 10.00e5
        exponent += 1
        mantissa = round_half_up(exact.scaleb(-exponent), DIGITS - 1)
    return f"{mantissa}e{exponent}"


def _in_sentence(label: str) -> str:
    """``Target dose`` -> ``target dose``; ``CAR+ T cells per mL`` stays as it is."""
    return label[:1].lower() + label[1:] if label[1:2].islower() else label


# --- judging one result -----------------------------------------------------------------------


def check_result(test: ReleaseTestSpec, text: str, basis: Basis | None = None) -> ResultCheck:
    """Judge the result typed for ``test``; ``basis`` is what a test judged against its batch
    reads from the batch record (``batch_basis``). Raises ResultRefused for a result of the wrong
    type or unit, outside the test's valid range, too imprecise to judge, or of a test whose
    target is not recorded yet."""
    if not text.strip():
        raise ResultRefused(f"Enter the result of {test.title}.")
    if test.kind == "number":
        return _check_number(test, text, basis)
    for choice in (*test.choices, *test.interim):
        if choice.casefold() == " ".join(text.split()).casefold():
            if choice in test.interim:
                message = f"{test.title}: {choice} (interim; the final result follows)."
                return ResultCheck(choice, None, None, INTERIM, False, message, spec_text(test))
            return _judged(test, choice, None, choice in test.passing, basis)
    options = ", ".join(f"'{c}'" for c in (*test.choices, *test.interim))
    raise ResultRefused(f"{test.title}: choose one of {options}, not {_echo(text)}.")


def _check_number(test: ReleaseTestSpec, text: str, basis: Basis | None) -> ResultCheck:
    censored = _CENSORED.fullmatch(text)
    sign, rest = (censored.group(1), censored.group(2)) if censored else ("", text)
    field_spec = FieldSpec(test.key, test.title, "number", unit=test.unit, valid=test.valid)
    try:
        canonical, value = parse_text(field_spec, rest)
    except ValueError as error:
        raise ResultRefused(str(error)) from None
    assert isinstance(value, float)
    unit = f" {test.unit}" if test.unit else ""
    valid = _interval(test.valid)
    possible = {"": Specification(Bound(value), Bound(value)),
                "<": Specification(valid.low, Bound(value, inclusive=False)),
                ">": Specification(Bound(value, inclusive=False), valid.high)}[sign]
    if not sign and not test.valid.contains(value) or is_empty(possible):
        raise ResultRefused(f"{test.title} {sign}{' ' if sign else ''}{canonical}{unit} is impossible: "
                            f"results lie between {format_number(test.valid.min or 0)} and "
                            f"{format_number(test.valid.max or 0)}{unit}.")
    spec = batch_spec(test, basis)
    if spec is None:
        raise ResultRefused(basis_refusal(test, basis) or f"{test.title} has no specification.")
    shown = f"{sign} {canonical}" if sign else canonical
    if covers(spec, possible):
        return _judged(test, shown, value, True, basis, None if sign else canonical)
    if not overlaps(spec, possible):
        return _judged(test, shown, value, False, basis, None if sign else canonical)
    raise ResultRefused(f"{test.title} {shown}{unit} cannot show whether the product meets "
                        f"{spec_text(test, basis)}: report the value, or a limit of quantitation inside the "
                        "specification.")


def _judged(test: ReleaseTestSpec, text: str, number: float | None, passed: bool, basis: Basis | None,
            measured: str | None = None) -> ResultCheck:
    shown = format_recorded(text, test.kind, test.unit)
    specification = spec_text(test, basis)
    if passed:
        message = f"{test.title}: {shown} meets the specification ({specification})."
    else:
        message = f"{test.title}: {shown} is OUT OF SPECIFICATION ({specification})."
    return ResultCheck(text, number, test.unit, PASS if passed else FAIL, True, message, specification,
                       discrepancy(test, basis, measured) if measured is not None else "")


def discrepancy(test: ReleaseTestSpec, basis: Basis | None, measured: str) -> str:
    """The flag of a result ``measured`` (its canonical text) that differs from the value the
    process computed by more than the test's tolerance, naming both values; "" when within
    it, or when there is nothing to compare it with."""
    if test.tolerance_pct is None or basis is None or basis.computed is None or basis.computed <= 0:
        return ""
    computed = decimal(basis.computed)
    difference = abs(decimal(measured) - computed) / computed * 100
    if difference <= decimal(test.tolerance_pct):
        return ""
    return (f"{test.title}: {format_quantity(measured, test.unit, None)} differs from the "
            f"{format_quantity(computed, test.unit)} computed from {' and '.join(basis.steps) or 'the batch record'} "
            f"by {format_number(difference)} %, more than the {format_number(test.tolerance_pct)} % allowed.")


def _interval(limits: Limits) -> Specification:
    return Specification(None if limits.min is None else Bound(limits.min),
                         None if limits.max is None else Bound(limits.max))


def _echo(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


# --- where a batch stands -------------------------------------------------------------------


def results_in(definition: ProcessDefinition, results: Mapping[str, CurrentResult]) -> bool:
    """True when every result QA needs before release is in, whether it passed or failed:
    a final result where ``before_release`` is final, at least an interim one where interim."""
    for test in definition.release_tests:
        current = results.get(test.key)
        if test.before_release == "final" and (current is None or not current.final):
            return False
        if test.before_release == "interim" and current is None:
            return False
    return True


def pending(definition: ProcessDefinition, results: Mapping[str, CurrentResult]) -> list[ReleaseTestSpec]:
    """The required tests without a final result yet (missing, or interim only)."""
    return [t for t in definition.release_tests
            if t.required and (results.get(t.key) is None or not results[t.key].final)]


def blockers(definition: ProcessDefinition, decision: DecisionSpec, facts: BatchFacts) -> list[str]:
    """Every reason ``decision`` may not be taken now, besides the batch's state; [] when none."""
    if decision.requires is None:
        return []
    if decision.requires == "no_open_deviation":
        return _deviation_blockers(facts, allowed_sources=())
    reasons = [*_step_blockers(definition, facts.progress), *_signature_blockers(facts)]
    out_of_spec = [t for t in definition.release_tests
                   if t.key in facts.results and facts.results[t.key].verdict == FAIL]
    reasons += _result_blockers(definition, facts.results)
    if decision.requires == "release":
        reasons += [_oos_words(t, facts.results[t.key]) for t in out_of_spec]
        return reasons + _deviation_blockers(facts, allowed_sources=())
    if not out_of_spec:  # exceptional_release
        reasons.append("No result is out of specification: use the normal release.")
    return reasons + _deviation_blockers(facts, allowed_sources=("oos",))


def _step_blockers(definition: ProcessDefinition, progress: Mapping[str, StepProgress]) -> list[str]:
    reasons = []
    missing = [s.title for s in definition.steps if progress.get(s.key, StepProgress()).entries < s.min_entries]
    if missing:
        reasons.append(f"Steps not recorded: {', '.join(missing)}.")
    unverified = [s.title for s in definition.steps if s.verify and progress.get(s.key, StepProgress()).unverified]
    if unverified:
        reasons.append(f"Entries awaiting verification by a second person: {', '.join(unverified)}.")
    return reasons


def _signature_blockers(facts: BatchFacts) -> list[str]:
    if not facts.unsigned:
        return []
    return [f"Missing or invalidated signatures: {'; '.join(facts.unsigned)}."]


def _result_blockers(definition: ProcessDefinition, results: Mapping[str, CurrentResult]) -> list[str]:
    reasons = []
    for test in definition.release_tests:
        current = results.get(test.key)
        if test.before_release == "none" or (current is not None and current.verdict == FAIL):
            continue
        if current is None:
            reasons.append(f"No result yet for {test.title}.")
        elif test.before_release == "final" and not current.final:
            reasons.append(f"{test.title} has only an interim result ({current.text}): release needs the final one.")
    return reasons


def _oos_words(test: ReleaseTestSpec, current: CurrentResult) -> str:
    shown = format_recorded(current.text, test.kind, test.unit)
    specification = current.specification or spec_text(test)
    return f"{test.title} is out of specification: {shown} (specification {specification})."


def _deviation_blockers(facts: BatchFacts, *, allowed_sources: tuple[str, ...]) -> list[str]:
    still_open = sorted(number for number, source in facts.open_deviations.items() if source not in allowed_sources)
    if not still_open:
        return []
    plural = "s" if len(still_open) > 1 else ""
    return [f"Open deviation{plural}: {', '.join(still_open)} (investigate and close first)."]


# --- what may be recorded now ---------------------------------------------------------------


def result_refusal(definition: ProcessDefinition, test: ReleaseTestSpec, state: str,
                   current: CurrentResult | None) -> str | None:
    """None when a new result of ``test`` may be recorded in ``state``, else why not."""
    rules = definition.release
    if rules is None or state not in rules.result_states:
        return f"The batch is {state_phrase(definition, state)}: QC results cannot be recorded."
    if current is not None and current.final:
        return f"{test.title} already has its final result ({current.text}): correct it, giving a reason."
    return None


def correction_refusal(definition: ProcessDefinition, state: str, *, was_released: bool) -> str | None:
    """None when results of a batch in ``state`` may be corrected, else why not.

    Once a batch was released its results stand as released: a new finding is a late
    result or a deviation, never a rewrite of what QA released on.
    """
    rules = definition.release
    if was_released or (rules is not None and state in rules.released_states):
        return ("The batch was released on these results: they can no longer be corrected. Record the "
                "final result if it is still to come, or open a deviation.")
    if rules is None or state not in rules.result_states:
        return f"The batch is {state_phrase(definition, state)}: its results can no longer be corrected."
    return None


def is_late(definition: ProcessDefinition, state: str) -> bool:
    """True when a result recorded in ``state`` arrives after the batch's release."""
    return definition.release is not None and state in definition.release.released_states


def state_after_result(definition: ProcessDefinition, state: str, check: ResultCheck) -> str | None:
    """The state a result moves the batch to by itself: a failure after release puts the
    released batch on hold (21 CFR 211.192: investigate even if distributed). Else None."""
    if check.verdict == FAIL and is_late(definition, state):
        assert definition.release is not None
        return definition.release.late_failure_state
    return None


def decision_refusal(definition: ProcessDefinition, decision: DecisionSpec, state: str) -> str | None:
    """None when ``decision`` may be taken on a batch in ``state``, else why not."""
    if state in decision.source:
        return None
    sources = " or ".join(state_phrase(definition, s) for s in decision.source)
    return f"The batch is {state_phrase(definition, state)}: '{decision.title}' is taken only when it is {sources}."
