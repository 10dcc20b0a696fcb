"""Issuing executed batch records, and verifying a printed or exported copy by its digest.

Each distinct version of a batch's record is stored once, when first issued (its digest,
canonical JSON, when and to whom), and every issue is logged as a download. Verifying
looks the digest up and rebuilds the batch's record now: the copy is the current record,
or a superseded version (with what changed since), or unknown to this CellTrail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import Batch, Download, IssuedRecord, User
from lab.services.batch_record import CACHE_SIZE, keyed_record
from lab.services.downloads import record_download
from lab.services.record_marks import cache
from labels.coi_report import is_coi_canonical
from labels.digest import canonical_json, sha256_hex
from labels.record_data import BatchRecordData
from labels.record_diff import Change, record_changes

if TYPE_CHECKING:
    from lab.services.coi_report import CoiSnapshot


@dataclass(frozen=True)
class Snapshot:
    """A batch's record as it stands, its canonical JSON and that JSON's SHA-256."""

    record: BatchRecordData
    canonical: bytes
    digest: str


def snapshot(batch: Batch) -> Snapshot:
    """``batch``'s record as it stands; its canonical JSON is made once for each version of the record."""
    (batch_id, batch_mark, *others), record = keyed_record(batch)
    return cache("record_snapshots", CACHE_SIZE).get(batch_id, batch_mark, lambda: _snapshot_of(record), *others)


def _snapshot_of(record: BatchRecordData) -> Snapshot:
    canonical = canonical_json(record)
    return Snapshot(record, canonical, sha256_hex(canonical))


def issue_record(batch: Batch, copy: Snapshot, *, actor: User | None, now: datetime, detail: str = "",
                 kind: str = "record") -> Download:
    """Store ``copy`` of ``batch``'s record if this version was never issued, and log its
    download by ``actor`` (None: the command line) as a ``kind`` (``rfic``: a certificate that
    carries this version's digest). Flushes; the caller commits."""
    store_issued(batch, copy.digest, copy.canonical, actor=actor, now=now)
    return record_download(actor, kind, batch=batch, digest=copy.digest, detail=detail, now=now)


def store_issued(batch: Batch, digest: str, canonical: bytes, *, actor: User | None, now: datetime) -> None:
    """Store the issued document ``canonical`` (a version of ``batch``'s record, or a chain-of-identity
    report filed under the patient's newest batch) with its ``digest`` unless it was issued before."""
    # Two first downloads of one version queue on the batch row instead of colliding on the
    # digest. FOR NO KEY UPDATE: rows that merely reference the batch are not held up.
    db.session.execute(select(Batch.id).where(Batch.id == batch.id).with_for_update(key_share=True))
    if db.session.scalar(select(IssuedRecord.id).where(IssuedRecord.digest == digest)) is None:
        with audit.action("record.issue", actor=actor):
            db.session.add(IssuedRecord(digest=digest, batch_id=batch.id, canonical_json=canonical.decode("utf-8"),
                                        issued_at=now, issued_to_id=actor.id if actor else None))


@dataclass(frozen=True)
class Verification:
    """What a digest names: an issued version of a batch's record, compared with the record now."""

    issued: IssuedRecord
    current_digest: str
    changes: list[Change]  # from the issued version to the current record
    downloads: int  # how often this version was downloaded or exported
    #: "record" (an executed batch record) or "coi-report" (a patient's chain-of-identity report).
    kind: str = "record"

    @property
    def is_current(self) -> bool:
        return self.issued.digest == self.current_digest

    @property
    def stored_intact(self) -> bool:
        """False when the stored copy no longer hashes to its digest (edited in the database)."""
        return sha256_hex(self.issued.canonical_json.encode("utf-8")) == self.issued.digest


def verify_digest(digest: str) -> Verification | None:
    """The verification of a well-formed ``digest`` (lower-case hex); None when no record
    with that digest was ever issued by this CellTrail."""
    issued = db.session.scalar(select(IssuedRecord).where(IssuedRecord.digest == digest))
    if issued is None:
        return None
    kind = "coi-report" if is_coi_canonical(issued.canonical_json) else "record"
    if kind == "coi-report":  # the patient's chain as it stands now (imported here: it issues through this module)
        from lab.services.coi_report import coi_snapshot
        current: Snapshot | CoiSnapshot = coi_snapshot(issued.batch.patient)
    else:
        current = snapshot(issued.batch)
    changes = [] if current.digest == digest else record_changes(json.loads(issued.canonical_json),
                                                                 json.loads(current.canonical))
    downloads = db.session.scalar(select(func.count()).select_from(Download).where(Download.digest == digest)) or 0
    return Verification(issued, current.digest, changes, downloads, kind)
