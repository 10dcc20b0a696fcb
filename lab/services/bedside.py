"""At the bedside (DOMAIN §5): two clinicians check that the patient is the bag's patient, the
bag is thawed and infused, and a bag that will not be infused is returned, destroyed or kept
unused with a witness. Each is one signed, append-only row; the bag's custody trail records
each step and ends with the infusion or the disposal.

A bedside check that does not match (the wristband's COI is not the bag's, or the typed
identifiers are not its patient's) is refused: ``BedsideMismatch`` carries the scan, which the
caller keeps with ``containers.record_mismatches`` once the refused work is rolled back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from lab import audit
from lab.exceptions import InvalidInput, LabError, NotAllowed
from lab.extensions import db
from lab.models import Container, CustodyEvent, Patient, User, utcnow
from lab.models.clinic import (
    DISPOSAL_OUTCOMES,
    Administration,
    BagDisposal,
    BedsideCheck,
    Shipment,
    ShipmentBag,
)
from lab.permissions import require
from lab.services.batch_state import one_writer, touch
from lab.services.containers import CustodyMismatch, Scan
from lab.services.deviations import open_deviation
from lab.services.progress import definition_for, lab_timezone
from lab.services.signatures import Credentials, reauthenticate, register_signed, sign
from lab.services.site_receipt import usable_at_site
from lab.services.site_scope import is_clinician, require_site
from lab.services.steps import lock_batch
from workflows.codes import CodeError, CodeKind, parse_code
from workflows.engine import parse_datetime
from workflows.formatting import format_datetime
from workflows.model import FINISHED_CONTAINER_STATUSES

register_signed(BedsideCheck)
register_signed(Administration)
register_signed(BagDisposal)

METHODS = {"wristband": "Scan the patient's wristband (COI)", "identifiers": "Type the patient ID and date of birth"}
CHECK_EVENT = "bedside check"
MAX_TEXT = 2000
#: Clocks differ a little: a time typed up to this far ahead of the server's is not "in the future".
FUTURE_TOLERANCE = timedelta(minutes=5)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
#: Lab roles that may witness a disposal of a bag still at the lab.
LAB_WITNESSES = ("technician", "supervisor", "qa_officer")
#: Times at the bedside are typed in the lab's zone: no offset.
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?")


class BedsideMismatch(CustodyMismatch):
    """The patient at the bedside is not the bag's patient: DO NOT INFUSE. Nothing is written but
    the scan (``scans``), shown next to ``field``."""

    status = 422

    def __init__(self, message: str, scans: list[Scan], *, field: str, container: Container) -> None:
        super().__init__(message, scans)
        self.field = field
        self.container = container


class AlreadyDone(LabError):
    """The bag's trail has already ended (infused, returned, destroyed, kept unused)."""

    status = 409


@dataclass(frozen=True)
class BedsideInput:
    bag_scanned: str
    method: str  # "wristband" (COI scanned) or "identifiers" (patient ref + date of birth typed)
    wristband: str = ""
    patient_ref: str = ""
    date_of_birth: str = ""  # YYYY-MM-DD as typed
    second_username: str = ""  # the second clinician, who signs on the same screen
    second_password: str = ""


@dataclass(frozen=True)
class AdministrationInput:
    """The times as typed (lab time zone unless an offset is given) and what was seen."""

    thaw_start: str
    thaw_end: str
    infusion_start: str
    infusion_end: str
    reactions: str = ""


@dataclass(frozen=True)
class DisposalInput:
    outcome: str  # a key of DISPOSAL_OUTCOMES
    reason: str
    happened_at: str  # as typed, lab time zone
    witness_username: str = ""
    witness_password: str = ""


@dataclass(frozen=True)
class BagRecord:
    """What happened to one bag after release, for its page: the shipment it went in, its
    bedside checks, its administration and its disposal."""

    container: Container
    shipment: Shipment | None
    checks: list[BedsideCheck]
    administration: Administration | None
    disposal: BagDisposal | None
    usable: str | None  # None when it may be checked and infused now, else why not


# --- reading -----------------------------------------------------------------------------------

def find_bag(scanned: str, field: str = "bag_scanned") -> Container:
    """The container whose code is in ``scanned`` (a bare code, a label payload or a URL ending in one)."""
    text = scanned.strip()
    if not text:
        raise InvalidInput("Scan the bag.", {field: "Scan the label on the bag."})
    tail = text.rstrip("/").rsplit("/", 1)[-1]
    try:
        code = str(parse_code(tail, CodeKind.CONTAINER))
    except CodeError as error:
        raise InvalidInput("That is not a bag's label.", {field: str(error)}) from None
    container = db.session.scalar(select(Container).where(Container.code == code))
    if container is None:
        raise InvalidInput("Unknown bag.", {field: f"No container {code} is registered: scan the bag's label again."})
    return container


def shipment_of(container: Container) -> Shipment | None:
    """The latest shipment ``container`` was packed into, or None while it never left the lab."""
    return db.session.scalar(select(Shipment).join(ShipmentBag, ShipmentBag.shipment_id == Shipment.id)
                             .where(ShipmentBag.container_id == container.id)
                             .order_by(Shipment.id.desc()).limit(1))


def bag_record(container: Container) -> BagRecord:
    checks = list(db.session.scalars(select(BedsideCheck).where(BedsideCheck.container_id == container.id)
                                     .order_by(BedsideCheck.id)))
    administration = db.session.scalar(select(Administration).where(Administration.container_id == container.id))
    disposal = db.session.scalar(select(BagDisposal).where(BagDisposal.container_id == container.id))
    return BagRecord(container, shipment_of(container), checks, administration, disposal, usable_at_site(container))


def require_bag_site(actor: User, container: Container) -> Shipment | None:
    """NotAllowed for a clinician when the bag went to another site (or never left the lab)."""
    shipment = shipment_of(container)
    if is_clinician(actor):
        require_site(actor, shipment.site_id if shipment else None, "bag")
    return shipment


def bags_at_site(site_id: int) -> list[Container]:
    """The bags received at ``site_id`` whose trail has not ended (for the bedside page)."""
    return list(db.session.scalars(
        select(Container).join(ShipmentBag, ShipmentBag.container_id == Container.id)
        .join(Shipment, Shipment.id == ShipmentBag.shipment_id)
        .where(Shipment.site_id == site_id, Container.status == "at site")
        .order_by(Container.id)))


def latest_check(container: Container) -> BedsideCheck | None:
    return db.session.scalar(select(BedsideCheck).where(BedsideCheck.container_id == container.id)
                             .order_by(BedsideCheck.id.desc()).limit(1))


# --- the bedside check -------------------------------------------------------------------------

def check_at_bedside(data: BedsideInput, *, actor: User, credentials: Credentials,
                     now: datetime | None = None) -> BedsideCheck:
    """Two clinicians of the bag's site confirm the patient is the bag's patient: the actor
    signs "performed", the second clinician (same screen) "verified".

    Raises NotAllowed (not a clinician, or of another site), InvalidInput (a field, a bag that
    may not be infused, the same person twice), BedsideMismatch (the patient is not the bag's:
    the caller keeps the scan) or SignatureError. Nothing is written then.
    """
    require(actor, "check_at_bedside", "check a bag at the bedside")
    now = now or utcnow()
    container = find_bag(data.bag_scanned)
    shipment = require_bag_site(actor, container)
    reason = usable_at_site(container)
    if reason:
        raise InvalidInput(f"{container.code} may not be infused.", {"bag_scanned": reason})
    patient = container.batch.patient
    evidence, matched, field = _patient_evidence(data, patient)
    if not matched:
        raise _mismatch(container, data, evidence, field)
    second = _second_person(data.second_username, actor, shipment.site_id if shipment else None,
                            prefix="second", what="check the bag with you")
    subject = f"bedside check of {container.code} for patient {patient.coi}"
    reauthenticate(actor, credentials, meaning="performed", subject=subject, batch_id=None)
    reauthenticate(second, Credentials(data.second_password, data.second_username), meaning="verified",
                   subject=subject, batch_id=None)
    with audit.action("bedside.check", actor=actor):
        check = BedsideCheck(container=container, batch_id=container.batch_id, patient=patient, method=data.method,
                             patient_evidence=evidence[:128], bag_scanned=container.code, checked_at=now,
                             first_id=actor.id, second_id=second.id)
        db.session.add(check)
        db.session.add(CustodyEvent(batch_id=container.batch_id, container=container, scanned_code=container.code,
                                    event=CHECK_EVENT, from_location=container.location,
                                    to_location=container.location, matched=True,
                                    message=f"Patient {patient.coi} confirmed by {actor.full_name} and "
                                            f"{second.full_name} ({data.method}).",
                                    occurred_at=now, actor_id=actor.id))
        db.session.flush()
        sign(check, actor=actor, meaning="performed", now=now)
        sign(check, actor=second, meaning="verified", now=now)
    return check


def _patient_evidence(data: BedsideInput, patient: Patient) -> tuple[str, bool, str]:
    """(what was scanned or typed, whether it names ``patient``, the field it was entered in)."""
    if data.method == "wristband":
        text = data.wristband.strip()
        if not text:
            raise InvalidInput("Scan the patient's wristband.", {"wristband": "Scan the COI on the patient's wristband."})
        tail = text.rstrip("/").rsplit("/", 1)[-1]
        try:
            coi = str(parse_code(tail, CodeKind.COI))
        except CodeError as error:
            raise InvalidInput("That is not a COI.", {"wristband": str(error)}) from None
        return coi, coi == patient.coi, "wristband"
    if data.method == "identifiers":
        errors = {}
        ref = " ".join(data.patient_ref.split())
        if not ref:
            errors["patient_ref"] = "Type the patient ID from the wristband."
        elif len(ref) > 32 or not ref.isprintable():
            errors["patient_ref"] = "A patient ID is at most 32 printable characters."
        born = None
        try:
            born = date.fromisoformat(data.date_of_birth.strip())
        except ValueError:
            errors["date_of_birth"] = "Type the date of birth as YYYY-MM-DD."
        if errors:
            raise InvalidInput("Type the patient's identifiers.", errors)
        assert born is not None
        matched = ref.casefold() == patient.patient_ref.casefold() and born == patient.date_of_birth
        return f"{ref} / {born.isoformat()}", matched, "patient_ref"
    raise InvalidInput("Choose how the patient is identified.", {"method": f"Choose one of: {', '.join(METHODS)}."})


def _mismatch(container: Container, data: BedsideInput, evidence: str, field: str) -> BedsideMismatch:
    batch = container.batch
    if data.method == "wristband":
        said = f"the wristband reads {evidence}"
        headline = "DO NOT INFUSE: COI MISMATCH."
    else:
        said = f"the identifiers typed ({evidence}) are not its patient's"
        headline = "DO NOT INFUSE: PATIENT MISMATCH."
    message = (f"{headline} Bag {container.code} (batch {batch.batch_number}) is for patient {batch.patient.coi}; "
               f"{said}. Nothing of the check was recorded; the mismatch is kept in the custody trail with a "
               "deviation. Stop, and check the patient and the bag.")
    scan = Scan(container.code, container.id, CHECK_EVENT, False, f"{message} Patient evidence: {evidence}"[:2000])
    return BedsideMismatch(message, [scan], field=field, container=container)


def _second_person(username: str, actor: User, site_id: int | None, *, prefix: str, what: str,
                   lab: bool = False) -> User:
    """The second person named on the same screen, before their password is checked."""
    field = f"{prefix}_username"
    name = username.strip().lower()
    if not name:
        raise InvalidInput("The second person's signature is missing.",
                           {field: f"The second person who will {what} types their username and password."})
    if name == actor.username:
        raise InvalidInput("The same person cannot sign twice.",
                           {field: f"You cannot {what.replace(' with you', '')} yourself: a second person signs."})
    second = db.session.scalar(select(User).where(func.lower(User.username) == name))
    if second is None:
        raise InvalidInput("Unknown second person.", {field: f"No user {name!r}: check the username."})
    if not second.is_active:
        raise InvalidInput("The second person may not sign.",
                           {field: f"{second.full_name}'s account is locked or deactivated."})
    if second.password_must_change:
        raise InvalidInput("The second person may not sign yet.",
                           {field: f"{second.full_name} must first sign in and choose their own password."})
    if lab:
        if not second.can_act_as(*LAB_WITNESSES):
            raise InvalidInput("The second person may not sign here.",
                               {field: f"{second.full_name} is not lab staff: a technician, supervisor or QA "
                                       "officer witnesses a disposal at the lab."})
    elif not (is_clinician(second) and second.site_id == site_id and site_id is not None):
        raise InvalidInput("The second person may not sign here.",
                           {field: f"{second.full_name} is not a clinician of this site."})
    return second


# --- thaw and infusion -------------------------------------------------------------------------

def administer_bag(container: Container, data: AdministrationInput, *, actor: User, credentials: Credentials,
                   now: datetime | None = None) -> Administration:
    """Record the infusion of ``container`` after its latest bedside check (see record_administration)."""
    require(actor, "administer", "record an infusion")
    require_bag_site(actor, container)
    _refuse_unusable(container)
    check = latest_check(container)
    if check is None:
        raise AlreadyDone(f"{container.code} has no bedside check: two clinicians check it against the patient "
                          "first.")
    return record_administration(check, data, actor=actor, credentials=credentials, now=now)


def _refuse_unusable(container: Container) -> None:
    done = db.session.scalar(select(Administration).where(Administration.container_id == container.id))
    if done is not None:
        raise AlreadyDone(f"{container.code} was already infused (ended "
                          f"{format_datetime(done.infusion_end, lab_timezone())}, recorded by "
                          f"{done.administered_by.full_name}): a bag is infused once.")
    reason = usable_at_site(container)
    if reason:
        raise AlreadyDone(f"{container.code} may not be infused: {reason}")


def record_administration(check: BedsideCheck, data: AdministrationInput, *, actor: User, credentials: Credentials,
                          now: datetime | None = None) -> Administration:
    """Thaw and infusion of the checked bag, signed "administered" by ``actor``, a clinician of its site.

    Times in order: the thaw starts after the check, ends after it starts, the infusion starts
    after the thaw ends and ends after it starts, none in the future. Exceeding the definition's
    thaw-to-infusion limit (thaw start to infusion end) is recorded and opens a deviation.
    The bag becomes "infused" and its custody trail ends. Raises NotAllowed, AlreadyDone
    (already infused, not usable), InvalidInput or SignatureError; nothing is written then.
    """
    require(actor, "administer", "record an infusion")
    now = now or utcnow()
    container = check.container
    batch = container.batch
    require_bag_site(actor, container)
    lock_batch(batch, None)  # two infusions of one bag at once: the second waits, then is refused
    _refuse_unusable(container)
    errors: dict[str, str] = {}
    times = {key: _moment(getattr(data, key), key, label, errors, now) for key, label in (
        ("thaw_start", "thaw start"), ("thaw_end", "thaw end"), ("infusion_start", "infusion start"),
        ("infusion_end", "infusion end"))}
    thaw_start, thaw_end = times["thaw_start"], times["thaw_end"]
    infusion_start, infusion_end = times["infusion_start"], times["infusion_end"]
    zone = lab_timezone()
    checked = check.checked_at.replace(second=0, microsecond=0)  # times are typed to the minute
    if thaw_start is not None and thaw_start < checked:
        errors["thaw_start"] = (f"The thaw cannot start before the bedside check "
                                f"({format_datetime(check.checked_at, zone)}).")
    if thaw_start and thaw_end and thaw_end < thaw_start:
        errors["thaw_end"] = f"The thaw cannot end before it started ({format_datetime(thaw_start, zone)})."
    if thaw_end and infusion_start and infusion_start < thaw_end:
        errors["infusion_start"] = (f"The infusion cannot start before the thaw ended "
                                    f"({format_datetime(thaw_end, zone)}).")
    if infusion_start and infusion_end and infusion_end < infusion_start:
        errors["infusion_end"] = (f"The infusion cannot end before it started "
                                  f"({format_datetime(infusion_start, zone)}).")
    reactions = data.reactions.replace("\r\n", "\n").strip()
    if not reactions:
        errors["reactions"] = "Write what was observed during and after the infusion, or \"none observed\"."
    elif len(reactions) > MAX_TEXT:
        errors["reactions"] = f"Use at most {MAX_TEXT} characters."
    if errors:
        raise InvalidInput("The infusion was not recorded.", errors)
    assert thaw_start and thaw_end and infusion_start and infusion_end
    patient = batch.patient
    reauthenticate(actor, credentials, meaning="administered",
                   subject=f"infusion of {container.code} to patient {patient.coi}", batch_id=None)
    limit = definition_for(batch).thaw_to_infusion_minutes
    taken = infusion_end - thaw_start
    exceeded = limit is not None and taken > timedelta(minutes=limit)
    with one_writer(batch.id), audit.action("bedside.administer", actor=actor):
        administration = Administration(container=container, batch_id=batch.id, patient=patient, bedside_check=check,
                                        thaw_start=thaw_start, thaw_end=thaw_end, infusion_start=infusion_start,
                                        infusion_end=infusion_end, limit_minutes=limit, limit_exceeded=exceeded,
                                        reactions=reactions, recorded_at=now, administered_by_id=actor.id)
        if exceeded:
            minutes = int(taken.total_seconds() // 60)
            administration.deviation = open_deviation(
                batch, source="window", actor=actor, now=now,
                title=f"Thaw-to-infusion limit exceeded: {container.code} took {minutes} min (limit {limit} min)",
                description=(f"Bag {container.code} of patient {patient.coi}: thaw started "
                             f"{format_datetime(thaw_start, zone)}, infusion ended {format_datetime(infusion_end, zone)}"
                             f", {minutes} minutes, over the process definition's limit of {limit} minutes from "
                             "the start of thawing to the end of infusion."))
        db.session.add(administration)
        db.session.add(CustodyEvent(batch_id=batch.id, container=container, scanned_code=container.code,
                                    event="infused", from_location=container.location,
                                    to_location=f"patient {patient.coi}", matched=True,
                                    message=f"Infused {format_datetime(infusion_start, zone)} to "
                                            f"{format_datetime(infusion_end, zone)}.",
                                    occurred_at=infusion_end, actor_id=actor.id))
        container.status = "infused"
        touch(batch, actor, now)
        db.session.flush()
        sign(administration, actor=actor, meaning="administered", now=now)
    return administration


def _moment(text: str, field: str, label: str, errors: dict[str, str], now: datetime) -> datetime | None:
    """A date and time as typed, in the lab's time zone; a fault goes into ``errors``."""
    value = text.strip()
    if not value:
        errors[field] = f"Enter the {label}."
        return None
    try:
        if not _DATETIME.fullmatch(value):
            raise ValueError
        moment = parse_datetime(value, lab_timezone())
    except ValueError:
        errors[field] = f"Enter the {label} as a date and time such as 2026-11-25 08:30, not {value[:40]!r}."
        return None
    if moment > now + FUTURE_TOLERANCE:
        errors[field] = (f"The {label} cannot be in the future (it is now "
                         f"{format_datetime(now, lab_timezone())}).")
    elif moment < EARLIEST:
        errors[field] = f"The {label} is before the year 2000: check the date."
    else:
        return moment
    return None


# --- a bag that is not infused -----------------------------------------------------------------

def dispose_bag(container: Container, data: DisposalInput, *, actor: User, credentials: Credentials,
                now: datetime | None = None) -> BagDisposal:
    """A bag that will not be infused: returned, destroyed or kept unused, why, when, and a
    witness who signs "witnessed" (the recorder signs "performed"). A bag at a site is disposed
    by the site's clinicians, one still at the lab by its technicians or supervisors. The bag
    takes the outcome as its status and its custody trail ends. Raises NotAllowed, AlreadyDone,
    InvalidInput or SignatureError; nothing is written then."""
    require(actor, "dispose_bag", "record what became of a bag")
    now = now or utcnow()
    batch = container.batch
    lock_batch(batch, None)
    shipment = shipment_of(container)
    if container.status in FINISHED_CONTAINER_STATUSES and container.status != "at site":
        raise AlreadyDone(f"{container.code} is {container.status}: its custody trail has ended.")
    at_lab = shipment is None
    if shipment is not None and container.status != "at site":
        raise AlreadyDone(f"{container.code} is packed in shipment {shipment.number} ({shipment.status.replace('_', ' ')})"
                          ": the site receives it before anything else is recorded.")
    if at_lab and is_clinician(actor):
        raise NotAllowed(f"{container.code} is still at the lab: its technicians or supervisors record its disposal.")
    if not at_lab:
        assert shipment is not None
        if not is_clinician(actor):
            raise NotAllowed(f"{container.code} is at {shipment.site.name}: the site's clinicians record what "
                             "becomes of it.")
        require_site(actor, shipment.site_id, "bag")
    errors: dict[str, str] = {}
    outcome = data.outcome.strip()
    if outcome not in DISPOSAL_OUTCOMES:
        errors["outcome"] = f"Choose one of: {', '.join(DISPOSAL_OUTCOMES.values())}."
    elif at_lab and outcome == "returned":
        errors["outcome"] = "The bag is at the lab: it cannot be returned to it. Choose destroyed or unused."
    reason = data.reason.replace("\r\n", "\n").strip()
    if not reason:
        errors["reason"] = "Say why the bag is not infused."
    elif len(reason) > MAX_TEXT:
        errors["reason"] = f"Use at most {MAX_TEXT} characters."
    happened = _moment(data.happened_at, "happened_at", "time", errors, now)
    if happened is not None and happened < container.created_at.replace(second=0, microsecond=0):
        errors["happened_at"] = (f"The bag was filled {format_datetime(container.created_at, lab_timezone())}: "
                                 "it cannot have been disposed of earlier.")
    arrived = shipment.receipt.arrived_at if shipment is not None and shipment.receipt is not None else None
    if happened is not None and arrived is not None and happened < arrived.replace(second=0, microsecond=0):
        errors["happened_at"] = (f"The bag arrived at the site {format_datetime(arrived, lab_timezone())}: it cannot "
                                 "have been disposed of there earlier.")
    if errors:
        raise InvalidInput("The disposal was not recorded.", errors)
    assert happened is not None
    witness = _second_person(data.witness_username, actor, shipment.site_id if shipment else None,
                             prefix="witness", what="witness the disposal with you", lab=at_lab)
    subject = f"{outcome} bag {container.code} of patient {batch.patient.coi}"
    reauthenticate(actor, credentials, meaning="performed", subject=subject, batch_id=None)
    reauthenticate(witness, Credentials(data.witness_password, data.witness_username), meaning="witnessed",
                   subject=subject, batch_id=None)
    with one_writer(batch.id), audit.action("bedside.dispose", actor=actor, reason=reason):
        disposal = BagDisposal(container=container, batch_id=batch.id, outcome=outcome, reason=reason,
                               happened_at=happened, recorded_at=now, recorded_by_id=actor.id, witness_id=witness.id)
        db.session.add(disposal)
        db.session.add(CustodyEvent(batch_id=batch.id, container=container, scanned_code=container.code,
                                    event=f"bag {outcome}", from_location=container.location,
                                    to_location=DISPOSAL_OUTCOMES[outcome], matched=True,
                                    message=f"{DISPOSAL_OUTCOMES[outcome]}: {reason}"[:2000],
                                    occurred_at=happened, actor_id=actor.id))
        container.status = outcome
        touch(batch, actor, now)
        db.session.flush()
        sign(disposal, actor=actor, meaning="performed", now=now)
        sign(disposal, actor=witness, meaning="witnessed", now=now)
    return disposal
