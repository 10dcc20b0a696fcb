"""Process versions under change control (EU GMP Part I ch. 4, Annex 11 §10, ICH Q10; DOMAIN §6).

A definition file becomes usable only through here: stored as a draft (``import_definition``,
from the command line or the upload page), approved by QA with an electronic signature and an
effective date (``approve``); from that date new batches of its key start under it and the
version before is retired for new batches. Batches pin the exact text they started with, so
running batches keep their version. The files shipped with CellTrail are approved once on
installation (``approve_shipped``, ``flask --app lab approve-shipped-processes``).

Status of an approved version at a moment: "approved" until its effective date, then
"effective" while it is the newest effective one of its key, "retired" after.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from pathlib import Path

from sqlalchemy import select

from lab import audit
from lab.exceptions import InvalidInput, LabError, StepNotAllowed
from lab.extensions import db
from lab.models import ProcessDefinitionRecord, ProcessVersion, User, utcnow
from lab.permissions import require_role
from lab.services.progress import lab_timezone
from lab.services.signatures import Credentials, reauthenticate, register_signed, sign
from lab.workflow_registry import pinned_definition, workflow_dir
from workflows.definition import DefinitionError, latest, load_definition_text, load_directory
from workflows.model import ProcessDefinition

register_signed(ProcessVersion)

#: Who may upload a definition, and who approves one (the quality unit, 211.22; Annex 11 §10).
UPLOADERS = ("qa_officer", "admin")
APPROVERS = ("qa_officer",)
#: The meaning of an approval signature (21 CFR 11.50).
APPROVAL_MEANING = "approved for use"
#: A definition file larger than this is refused before it is parsed (the shipped ones are ~45 kB).
MAX_DEFINITION_BYTES = 256 * 1024
MAX_REASON = 2000
#: How far ahead an effective date may be set.
MAX_DAYS_AHEAD = 366
STATUSES = ("draft", "approved", "effective", "retired")


class ProcessConflict(LabError):
    """A key and version already stored (with other content, or the same), or an order refused."""

    status = 409


@dataclass(frozen=True)
class VersionRow:
    """One version as the list shows it."""

    version: ProcessVersion
    status: str


# --- storing ---------------------------------------------------------------------------------


def store_text(definition: ProcessDefinition) -> ProcessDefinitionRecord:
    """The stored copy of ``definition``'s text, stored now if it is not there yet.

    A text differing from the stored one of the same key and version is refused: what a
    version means never changes once stored (change control)."""
    stored = db.session.scalar(select(ProcessDefinitionRecord).where(ProcessDefinitionRecord.sha256 == definition.sha256))
    if stored is not None:
        return stored
    clash = db.session.scalar(select(ProcessDefinitionRecord).where(
        ProcessDefinitionRecord.key == definition.key, ProcessDefinitionRecord.version == definition.version))
    if clash is not None:
        raise ProcessConflict(
            f"{definition.source_name}: {definition.key} version {definition.version} is already stored with other "
            f"content (stored hash {clash.sha256[:12]}…, this file's hash {definition.sha256[:12]}…). "
            "Give the changed definition a new version number.")
    record = ProcessDefinitionRecord(key=definition.key, version=definition.version, sha256=definition.sha256,
                                     source_name=definition.source_name, source_text=definition.source_text)
    db.session.add(record)
    return record


def parse_upload(data: bytes, filename: str) -> ProcessDefinition:
    """A definition from an uploaded or imported file; InvalidInput names the file and the reason,
    as ``check-workflows`` does."""
    name = Path(filename or "definition.toml").name[:255] or "definition.toml"
    if not data:
        raise InvalidInput(f"{name}: the file is empty.", {"file": f"{name}: the file is empty."})
    if len(data) > MAX_DEFINITION_BYTES:
        message = f"{name}: the file is larger than {MAX_DEFINITION_BYTES // 1024} kB."
        raise InvalidInput(message, {"file": message})
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"Refused: {name}: the file is not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise InvalidInput(message, {"file": message}) from None
    try:
        definition = load_definition_text(text, name)
    except DefinitionError as error:
        message = f"Refused: {error}"
        raise InvalidInput(message, {"file": message}) from None
    if definition.sha256 != hashlib.sha256(data).hexdigest():  # pragma: no cover - utf-8 round trip
        raise InvalidInput(f"{name}: the file does not read back as it was sent.", {"file": "Upload it again."})
    return definition


def find_version(key: str, version: int) -> ProcessVersion | None:
    return db.session.scalar(select(ProcessVersion).where(ProcessVersion.key == key,
                                                          ProcessVersion.version == version))


def import_definition(definition: ProcessDefinition, *, actor: User | None, origin: str, reason: str = "",
                      now: datetime | None = None, stored_by: User | None = None) -> ProcessVersion:
    """Store ``definition`` as a draft version, uploaded by ``actor``: None for a file shipped with
    CellTrail (``stored_by``, when given, is who stored it, for the audit trail).

    Raises NotAllowed, InvalidInput (reason too long), ProcessConflict (the key and version
    are already stored: with the same content, or with other content); nothing is written then.
    """
    now = now or utcnow()
    if actor is not None:
        require_role(actor, UPLOADERS, "upload a process definition")
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise InvalidInput("The definition was not stored.", {"reason": f"Use at most {MAX_REASON} characters."})
    existing = find_version(definition.key, definition.version)
    if existing is not None:
        if existing.definition.sha256 == definition.sha256:
            raise ProcessConflict(f"{definition.source_name}: {definition.key} version {definition.version} is "
                                  f"already stored, with this same content ({status_of(existing, now)}).")
        raise ProcessConflict(
            f"{definition.source_name}: {definition.key} version {definition.version} is already stored with other "
            f"content (stored hash {existing.definition.sha256[:12]}…, this file's hash "
            f"{definition.sha256[:12]}…). Give the changed definition a new version number.")
    with audit.action("process.import", actor=actor or stored_by, reason=reason or None):
        record = store_text(definition)
        version = ProcessVersion(key=definition.key, version=definition.version, title=definition.title[:255],
                                 definition=record, origin=origin, change_reason=reason, uploaded_at=now,
                                 uploaded_by_id=actor.id if actor is not None else None)
        db.session.add(version)
        db.session.flush()
    return version


# --- approving -----------------------------------------------------------------------------


def start_of(day: date) -> datetime:
    """Midnight at the start of ``day`` in the lab's time zone: when a version dated ``day`` takes effect."""
    return datetime.combine(day, time.min, tzinfo=lab_timezone())


def lab_date(moment: datetime) -> date:
    return moment.astimezone(lab_timezone()).date()


def approve(version: ProcessVersion, *, effective_on: date | None, actor: User, credentials: Credentials,
            now: datetime | None = None) -> ProcessVersion:
    """QA approves ``version`` with a signature (meaning "approved for use"), effective from ``effective_on``.

    Refused (nothing written): anyone but a QA officer (NotAllowed); the uploader (a second
    person approves); an effective date missing, in the past or too far ahead; a version
    already approved, or not newer than an approved version of its key, or dated before it
    (ProcessConflict); a wrong password (SignatureError, the attempt is kept).
    """
    now = now or utcnow()
    require_role(actor, APPROVERS, "approve a process version")
    what = f"{version.key} version {version.version}"
    if version.approved_at is not None:
        raise ProcessConflict(f"{what} was already approved by {_name(version.approved_by)} "
                              f"on {lab_date(version.approved_at).isoformat()}.")
    if version.uploaded_by_id is not None and version.uploaded_by_id == actor.id:
        raise StepNotAllowed(f"You uploaded {what}: a second person approves it (change control). "
                             "Ask another QA officer.")
    today = lab_date(now)
    errors: dict[str, str] = {}
    if effective_on is None:
        errors["effective_on"] = "Give the date from which new batches use this version."
    elif effective_on < today:
        errors["effective_on"] = (f"The effective date {effective_on.isoformat()} is in the past: "
                                  f"choose today ({today.isoformat()}) or later.")
    elif (effective_on - today).days > MAX_DAYS_AHEAD:
        errors["effective_on"] = f"Choose a date within {MAX_DAYS_AHEAD} days."
    if errors:
        raise InvalidInput(f"{what} was not approved.", errors)
    assert effective_on is not None
    newest = _newest_approved(version.key)
    if newest is not None and newest.version > version.version:
        raise ProcessConflict(f"{what} is older than the approved version {newest.version}: an older version "
                              "is not approved again. Issue its content as a new version instead.")
    if newest is not None and newest.effective_from is not None and start_of(effective_on) < newest.effective_from:
        errors["effective_on"] = (f"Version {newest.version} takes effect on "
                                  f"{lab_date(newest.effective_from).isoformat()}: this version cannot take "
                                  "effect before it.")
        raise InvalidInput(f"{what} was not approved.", errors)
    reauthenticate(actor, credentials, meaning=APPROVAL_MEANING, subject=f"approval of process {what}",
                   batch_id=None)
    return _approve(version, max(start_of(effective_on), now), actor=actor, now=now)


def _approve(version: ProcessVersion, effective_from: datetime, *, actor: User, now: datetime) -> ProcessVersion:
    with audit.action("process.approve", actor=actor,
                      reason=f"effective from {lab_date(effective_from).isoformat()}"):
        version.approved_at = now
        version.approved_by_id = actor.id
        version.effective_from = effective_from
        db.session.flush()
        db.session.refresh(version, ["approved_by"])
        sign(version, actor=actor, meaning=APPROVAL_MEANING, now=now)
    return version


def _newest_approved(key: str) -> ProcessVersion | None:
    return db.session.scalar(select(ProcessVersion).where(ProcessVersion.key == key,
                                                          ProcessVersion.approved_at.is_not(None))
                             .order_by(ProcessVersion.version.desc()).limit(1))


def _name(user: User | None) -> str:
    return user.full_name if user is not None else "someone"


def shipped(directory: Path | None = None) -> list[ProcessDefinition]:
    """The newest version of each key among the definition files shipped (WORKFLOW_DIR)."""
    folder = Path(directory or workflow_dir())
    files = sorted(folder.glob("*.toml"))
    return list(_shipped(str(folder), tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)))


@lru_cache(maxsize=8)
def _shipped(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> tuple[ProcessDefinition, ...]:
    """Parsed once per state of the folder (``stamp``: each file's name, time and size)."""
    definitions = load_directory(folder)
    return tuple(latest(definitions, key) for key in sorted({k for k, _ in definitions}))


def unstored_shipped(directory: Path | None = None) -> list[ProcessDefinition]:
    """Shipped definitions (newest of each key) not stored yet and newer than any stored version of
    their key: what a QA officer of a fresh install stores as drafts from the processes page."""
    found = []
    for definition in shipped(directory):
        newest = db.session.scalar(select(ProcessVersion.version).where(ProcessVersion.key == definition.key)
                                   .order_by(ProcessVersion.version.desc()).limit(1))
        if newest is None or newest < definition.version:
            found.append(definition)
    return found


def store_shipped(*, actor: User, now: datetime | None = None) -> list[ProcessVersion]:
    """Store the shipped definitions not stored yet as drafts (CellTrail wrote them, not ``actor``:
    a QA officer may approve them). Raises NotAllowed, DefinitionError for a malformed file."""
    now = now or utcnow()
    require_role(actor, UPLOADERS, "store the shipped process definitions")
    stored = []
    for definition in unstored_shipped():
        version = import_definition(definition, actor=None, origin="shipped", reason="Shipped with CellTrail.",
                                    now=now, stored_by=actor)
        stored.append(version)
    return stored


def approve_shipped(*, actor: User, credentials: Credentials, now: datetime | None = None,
                    directory: Path | None = None, keys: Collection[str] | None = None,
                    even_older: bool = False) -> list[ProcessVersion]:
    """Approve, effective at once, the newest version of each definition shipped with CellTrail,
    once on installation: a fresh install can start batches. One signature per version.

    ``keys`` limits it to those processes. A key whose version (or a newer one) is already
    approved is left as it is. ``even_older``
    (tests only) approves the newest file even when a newer version was approved before, so
    that tests can start batches under version 1. Raises DefinitionError for a malformed file.
    """
    now = now or utcnow()
    require_role(actor, APPROVERS, "approve the shipped process versions")
    done: list[ProcessVersion] = []
    todo: list[ProcessDefinition] = []
    for definition in shipped(directory):
        if keys is not None and definition.key not in keys:
            continue
        stored = find_version(definition.key, definition.version)
        if stored is not None and stored.approved_at is not None:
            continue
        newest = _newest_approved(definition.key)
        if newest is not None and newest.version > definition.version and not even_older:
            continue
        todo.append(definition)
    if not todo:
        return done
    reauthenticate(actor, credentials, meaning=APPROVAL_MEANING, subject="approval of the shipped process versions",
                   batch_id=None)
    for definition in todo:
        version = find_version(definition.key, definition.version)
        if version is None:
            version = import_definition(definition, actor=None, origin="shipped", stored_by=actor,
                                        reason="Shipped with CellTrail; approved on installation.", now=now)
        done.append(_approve(version, now, actor=actor, now=now))
    return done


# --- reading ---------------------------------------------------------------------------------


def _statuses(versions: list[ProcessVersion], now: datetime) -> dict[int, str]:
    """Status of each version (all of one key) at ``now``."""
    current = [v for v in versions if v.approved_at is not None and v.effective_from is not None
               and v.effective_from <= now]
    effective = max(current, key=lambda v: (v.effective_from, v.approved_at, v.id), default=None)
    statuses: dict[int, str] = {}
    for v in versions:
        if v.approved_at is None:
            statuses[v.id] = "draft"
        elif v is effective:
            statuses[v.id] = "effective"
        elif v in current:
            statuses[v.id] = "retired"
        else:
            statuses[v.id] = "approved"
    return statuses


def versions_of(key: str) -> list[ProcessVersion]:
    return list(db.session.scalars(select(ProcessVersion).where(ProcessVersion.key == key)
                                   .order_by(ProcessVersion.version)))


def status_of(version: ProcessVersion, now: datetime | None = None) -> str:
    return _statuses(versions_of(version.key), now or utcnow())[version.id]


def overview(now: datetime | None = None) -> dict[str, list[VersionRow]]:
    """Every version of every key, newest first, with its status at ``now``."""
    now = now or utcnow()
    by_key: dict[str, list[ProcessVersion]] = defaultdict(list)
    for v in db.session.scalars(select(ProcessVersion).order_by(ProcessVersion.key, ProcessVersion.version.desc())):
        by_key[v.key].append(v)
    result: dict[str, list[VersionRow]] = {}
    for key, versions in by_key.items():
        statuses = _statuses(versions, now)
        result[key] = [VersionRow(v, statuses[v.id]) for v in versions]
    return result


def effective_versions(now: datetime | None = None) -> list[ProcessVersion]:
    """The effective version of each key at ``now``: the products a batch can be scheduled with."""
    return [row.version for rows in overview(now).values() for row in rows if row.status == "effective"]


def effective_version(key: str, now: datetime | None = None) -> ProcessVersion | None:
    return next((v for v in effective_versions(now) if v.key == key), None)


def drafts() -> list[ProcessVersion]:
    """Versions waiting for approval (the dashboard's list)."""
    return list(db.session.scalars(select(ProcessVersion).where(ProcessVersion.approved_at.is_(None))
                                   .order_by(ProcessVersion.uploaded_at)))


def definition_of(version: ProcessVersion) -> ProcessDefinition:
    record = version.definition
    return pinned_definition(record.sha256, record.source_text, record.source_name)


def previous_of(version: ProcessVersion) -> ProcessDefinitionRecord | None:
    """The stored text of the same key just below ``version`` (what its changes are described
    against): a version under change control, or one batches pinned before it existed."""
    return db.session.scalar(select(ProcessDefinitionRecord).where(ProcessDefinitionRecord.key == version.key,
                                                                   ProcessDefinitionRecord.version < version.version)
                             .order_by(ProcessDefinitionRecord.version.desc()).limit(1))


def record_definition(record: ProcessDefinitionRecord) -> ProcessDefinition:
    return pinned_definition(record.sha256, record.source_text, record.source_name)
