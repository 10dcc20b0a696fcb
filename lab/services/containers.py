"""Containers: made by the steps that create them, scanned at every hand-off.

A scan at a hand-off is a custody event (who, when, from and to, match or mismatch). A
mismatch refuses the hand-off, but its custody event is kept: ``record_mismatches`` writes
it in a transaction of its own after the refused one is rolled back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from lab import audit
from lab.exceptions import InvalidInput, LabError, NotAllowed
from lab.extensions import db
from lab.models import Batch, Container, CustodyEvent, Deviation, StepEntry, User, utcnow
from lab.services.deviations import open_deviation
from lab.services.progress import container_title, entry_context, typed_values
from lab.services.sequences import next_code
from workflows.codes import CodeError, CodeKind, parse_code
from workflows.engine import compute_derived, kind_plural
from workflows.engine_types import ContainerInfo, EntryResult, FieldValue, Value
from workflows.formatting import format_quantity
from workflows.model import FINISHED_CONTAINER_STATUSES, CreateSpec, FieldSpec, ProcessDefinition, StepSpec

MAX_LOCATION = 255
#: Hand-offs a container page offers (those at steps come from the process definition).
HANDOFF_EVENTS = ("label applied", "moved", "released for shipping")


class CustodyMismatch(LabError):
    """A scanned container is not the one this hand-off needs; nothing but the scan is kept."""

    status = 409

    def __init__(self, message: str, scans: list[Scan]) -> None:
        super().__init__(message)
        self.scans = scans


@dataclass(frozen=True)
class Scan:
    """One scan at a hand-off, as the custody trail keeps it."""

    code: str
    container_id: int | None
    event: str
    matched: bool
    message: str = ""
    step_key: str | None = None
    to_location: str | None = None


def info(container: Container, definition: ProcessDefinition) -> ContainerInfo:
    return ContainerInfo(container.code, container.kind, container_title(container, definition),
                         container.batch.batch_number, container.batch.patient.coi, container.status)


def scanned_codes(spec: FieldSpec, text: str | None) -> list[str]:
    """The well-formed container codes typed or scanned into a container field (canonical)."""
    codes = []
    for part in re.split(r"[\s,;]+", text or ""):
        try:
            codes.append(str(parse_code(part, CodeKind.CONTAINER)))
        except CodeError:
            continue
    return codes


def resolve(batch: Batch, definition: ProcessDefinition, step: StepSpec,
            raw: Mapping[str, str]) -> dict[str, ContainerInfo | None]:
    """Every container of the batch, and what each code scanned into ``step`` names."""
    found: dict[str, ContainerInfo | None] = {c.code: info(c, definition) for c in batch.containers}
    for spec in step.handoffs:
        for code in scanned_codes(spec, raw.get(spec.key)):
            if code not in found:
                other = db.session.scalar(select(Container).where(Container.code == code))
                found[code] = info(other, definition) if other else None
    return found


def mismatches(batch: Batch, step: StepSpec, raw: Mapping[str, str], result: EntryResult,
               containers: Mapping[str, ContainerInfo | None]) -> list[Scan]:
    """The scans of ``step``'s hand-off fields that named a container this batch may not use.

    Codes that do not parse are not scans of a container and are left to the field's error.
    """
    found = []
    for spec in step.handoffs:
        if spec.key not in result.errors:
            continue
        for code in scanned_codes(spec, raw.get(spec.key)):
            item = containers.get(code)
            usable = (item is not None and item.batch_number == batch.batch_number and item.kind == spec.container
                      and item.status not in FINISHED_CONTAINER_STATUSES)
            if not usable:
                found.append(Scan(code, _container_id(code), spec.handoff or "scan", False,
                                  result.errors[spec.key], step.key))
    return found


def _container_id(code: str) -> int | None:
    return db.session.scalar(select(Container.id).where(Container.code == code))


def record_mismatches(batch: Batch, scans: list[Scan], *, actor: User, now: datetime | None = None) -> None:
    """Keep the custody events of refused scans, and open a deviation for them: a container
    of another patient or batch reached a hand-off. Call after rolling the refused work back."""
    if not scans:
        return
    now = now or utcnow()
    with audit.action("custody.mismatch", actor=actor, reason=scans[0].message):
        for scan in scans:
            db.session.add(CustodyEvent(batch_id=batch.id, container_id=scan.container_id, scanned_code=scan.code,
                                        step_key=scan.step_key, event=scan.event, matched=False,
                                        message=scan.message, occurred_at=now, actor_id=actor.id))
        codes = ", ".join(scan.code for scan in scans)
        open_deviation(batch, source="custody", title=f"Custody mismatch at {scans[0].event}: {codes}",
                       description=scans[0].message, actor=actor, now=now)


def _location(spec: FieldSpec, result: EntryResult) -> str | None:
    if spec.location is None:
        return None
    text = re.sub(r"{([^{}]*)}", lambda m: result.values[m[1]].text if m[1] in result.values else "", spec.location)
    return text[:MAX_LOCATION]


def record_handoffs(batch: Batch, step: StepSpec, entry: StepEntry, result: EntryResult, *,
                    actor: User, now: datetime) -> None:
    """A matched custody event for each container scanned into the entry; move and update them."""
    by_code = {c.code: c for c in batch.containers}
    for spec in step.handoffs:
        value = result.values.get(spec.key)
        if value is None or not value.text:
            continue
        to_location = _location(spec, result)
        for code in value.text.split("\n"):
            container = by_code[code]
            db.session.add(CustodyEvent(batch_id=batch.id, container=container, scanned_code=code,
                                        step_key=step.key, entry_id=entry.id, event=spec.handoff or "scan",
                                        from_location=container.location, to_location=to_location or container.location,
                                        matched=True, occurred_at=now, actor_id=actor.id))
            if to_location:
                container.location = to_location
            if spec.sets_status:
                container.status = spec.sets_status


def create_containers(batch: Batch, step: StepSpec, entry: StepEntry, result: EntryResult, *,
                      actor: User, now: datetime) -> list[Container]:
    """The containers ``step`` makes, numbered n of m, each with its own code."""
    made = []
    for create in step.creates:
        count = create.count if isinstance(create.count, int) else _whole(result, create.count)
        volume = _number(result, create.volume) if create.volume else None
        parent = None
        if create.parent and create.parent in result.values:
            parent = next(c for c in batch.containers if c.code == result.values[create.parent].text)
        for number in range(1, count + 1):
            container = Container(code=next_code(CodeKind.CONTAINER, now), batch=batch, kind=create.kind,
                                  number=number, count=count, volume_ml=volume, parent=parent,
                                  created_entry=entry, created_at=now, created_by_id=actor.id)
            db.session.add(container)
            made.append(container)
    return made


def _values(result: EntryResult) -> dict[str, float]:
    found = {**result.values, **result.derived}
    return {k: float(v.value) for k, v in found.items() if isinstance(v.value, (int, float))}


def _whole(result: EntryResult, key: str) -> int:
    value = _values(result).get(key)
    if value is None or not math.isfinite(value) or value < 1:
        raise InvalidInput(f"The number of containers ({key}) could not be computed from this entry.",
                           {"": "Check the values the number of containers is computed from."})
    return int(value)


def _number(result: EntryResult, key: str) -> float | None:
    return _values(result).get(key)


def confirm_scan(container: Container, scanned: str, *, event: str, to_location: str, actor: User,
                 now: datetime | None = None) -> CustodyEvent:
    """A hand-off outside a step: the label applied and scanned back, a move, a shipment.

    ``scanned`` must be this container's own code; any other raises CustodyMismatch (whose
    scan the caller keeps with ``record_mismatches`` after rolling back).
    """
    now = now or utcnow()
    if event not in HANDOFF_EVENTS:
        raise InvalidInput("Unknown hand-off.", {"event": f"Choose one of: {', '.join(HANDOFF_EVENTS)}."})
    if not actor.can_act_as("technician"):
        raise NotAllowed(f"Only a technician or supervisor may hand containers over; you are signed in as "
                         f"{actor.role_title.lower()}.")
    to_location = " ".join(to_location.split())
    if len(to_location) > MAX_LOCATION:
        raise InvalidInput("Location too long.", {"to_location": f"Use at most {MAX_LOCATION} characters."})
    if container.status in FINISHED_CONTAINER_STATUSES:
        raise InvalidInput(f"{container.code} is {container.status}: it can no longer be handed over.")
    if event == "released for shipping" and container.batch.state != "released":
        raise InvalidInput(f"Batch {container.batch.batch_number} is not released: nothing of it may be shipped.")
    code = canonical_container(scanned)
    if code != container.code:
        other = db.session.scalar(select(Container).where(Container.code == code)) if code else None
        named = f"{code} ({other.batch.batch_number}, patient {other.batch.patient.coi})" if other else repr(scanned)
        message = (f"MISMATCH: you scanned {named}, not {container.code} of batch {container.batch.batch_number} "
                   f"(patient {container.batch.patient.coi}). Nothing was handed over: check the label.")
        raise CustodyMismatch(message, [Scan(code or scanned[:64], other.id if other else None, event, False, message)])
    with audit.action("custody.scan", actor=actor):
        custody = CustodyEvent(batch_id=container.batch_id, container=container, scanned_code=code, event=event,
                               from_location=container.location, to_location=to_location or container.location,
                               matched=True, occurred_at=now, actor_id=actor.id)
        db.session.add(custody)
        if to_location:
            container.location = to_location
        if event == "released for shipping":
            container.status = "shipped"
    return custody


def canonical_container(text: str) -> str:
    """The container code in ``text`` (a payload, a bare code or a URL ending in one), or ''."""
    tail = text.strip().rstrip("/").rsplit("/", 1)[-1]
    try:
        return str(parse_code(tail, CodeKind.CONTAINER))
    except CodeError:
        return ""


# --- corrections that change what containers were made from ---------------------------------


@dataclass(frozen=True)
class Made:
    """How many containers of one kind an entry's values make, and the volume of each (mL)."""

    count: int | None
    volume_ml: float | None

    def words(self, plural: str) -> str:
        """``2 × 64.5 mL`` (``3 qc samples`` without a volume); ``none computable`` when unknown."""
        if self.count is None:
            return f"no computable number of {plural}"
        if self.volume_ml is None:
            return f"{self.count} {plural}"
        return f"{self.count} × {format_quantity(self.volume_ml, 'mL')}"


@dataclass(frozen=True)
class Figures:
    """What a batch's current values compute: each entry's derived values, and what each
    entry's computed ``creates`` (a count or volume from its values) make. Taken before and
    after a correction, the two say what the correction changed."""

    derived: dict[int, dict[str, FieldValue]]
    made: dict[tuple[int, str], Made]


def batch_figures(batch: Batch, definition: ProcessDefinition) -> Figures:
    """Recompute every entry of ``batch`` from its current values (and the patient's weight)."""
    derived: dict[int, dict[str, FieldValue]] = {}
    made: dict[tuple[int, str], Made] = {}
    for entry in batch.entries:
        step = definition.step(entry.step_key)
        values = typed_values(step, entry)
        ctx = entry_context(batch, definition, now=entry.performed_at, exclude=entry)
        derived[entry.id] = compute_derived(step, values, ctx)
        for create in computed_creates(step):
            made[(entry.id, create.kind)] = _made(create, values, derived[entry.id])
    return Figures(derived, made)


def computed_creates(step: StepSpec) -> list[CreateSpec]:
    """The ``creates`` of ``step`` whose count or volume is computed from the entry's values."""
    return [c for c in step.creates if isinstance(c.count, str) or c.volume is not None]


def _made(create: CreateSpec, values: Mapping[str, Value | None], derived: Mapping[str, FieldValue]) -> Made:
    def number(key: str) -> float | None:
        value = derived[key].value if key in derived else values.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else None  # type: ignore[arg-type]

    count = create.count if isinstance(create.count, int) else number(create.count)
    whole = int(count) if count is not None and count >= 1 else None
    return Made(whole, number(create.volume) if create.volume else None)


def _matches(containers: list[Container], made: Made) -> bool:
    """True when the containers made still agree with what the values compute now."""
    volumes_agree = all(
        (c.volume_ml is None) == (made.volume_ml is None)
        and (c.volume_ml is None or made.volume_ml is None or math.isclose(c.volume_ml, made.volume_ml))
        for c in containers)
    return made.count == len(containers) and all(c.count == made.count for c in containers) and volumes_agree


def reconcile(batch: Batch, definition: ProcessDefinition, before: Figures, after: Figures, *, change: str,
              reason: str, actor: User, now: datetime) -> list[Deviation]:
    """Containers made from values a correction changed: one deviation per entry and kind
    naming each container to reconcile, with the computed count and volume before and after.

    Nothing about the containers themselves changes (they are what was filled); their labels
    are marked outdated until printed again. Call inside the correction's ``audit.action``.
    """
    opened = []
    for (entry_id, kind), now_made in after.made.items():
        was = before.made.get((entry_id, kind))
        made = sorted((c for c in batch.containers if c.created_entry_id == entry_id and c.kind == kind),
                      key=lambda c: c.number)
        if not made or was == now_made or _matches(made, now_made):
            continue
        entry = next(e for e in batch.entries if e.id == entry_id)
        step = definition.step(entry.step_key)
        kind_spec = definition.container_kinds.get(kind)
        title = kind_spec.title if kind_spec else kind.replace("_", " ")
        plural = kind_plural(kind)
        before_words = was.words(plural) if was else "not computed"
        listed = "\n".join(
            f"- {c.code}: {title} {c.number} of {c.count}, recorded "
            f"{format_quantity(c.volume_ml, 'mL') if c.volume_ml is not None else 'without a volume'}"
            for c in made)
        deviation = open_deviation(
            batch, source="correction", entry=entry, actor=actor, now=now,
            title=(f"{step.title}: a correction changes the {plural} from {before_words} to "
                   f"{now_made.words(plural)}; {len(made)} to reconcile"),
            description=(
                f"{change}, for this reason: {reason}\n"
                f"Computed from the recorded values, {step.title} made {before_words} before the correction "
                f"and makes {now_made.words(plural)} after it.\n"
                f"Containers to reconcile (left as they were filled; reprint their labels, giving this "
                f"deviation as the reason):\n{listed}"))
        for container in made:
            container.label_outdated_at = now
            container.label_outdated_reason = f"{deviation.number}: {change}"[:255]
        opened.append(deviation)
    return opened
