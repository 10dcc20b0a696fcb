"""The download log: every copy of a record taken out of CellTrail, who took it and when.

A download is an audited insert, so it is also an entry of the audit trail (and of the
batch's trail when it names a batch). For an auditor, downloads are the only writes.
"""

from __future__ import annotations

from datetime import datetime

from lab import audit
from lab.extensions import db
from lab.models import Batch, Download, User, utcnow

#: What can be downloaded: an executed batch record (PDF), a certificate of analysis (PDF), a
#: release for infusion certificate (PDF; its digest is that of the batch record it was issued
#: on), an audit trail export (CSV), a bulk export of batch records (ZIP), the label of a
#: material lot or of an instrument (PDF; ``detail`` is its code), a patient's chain-of-identity report
#: (PDF; its own digest, ``detail`` the COI, filed under the patient's newest batch).
KINDS = ("record", "coa", "rfic", "audit_export", "record_export", "lot_label", "equipment_label", "coi-report",
         "shipper_label")


def record_download(actor: User | None, kind: str, *, batch: Batch | None = None, digest: str | None = None,
                    detail: str = "", now: datetime | None = None) -> Download:
    """Log that ``actor`` (None: the command line) downloaded a ``kind`` (one of KINDS).

    ``digest`` is the SHA-256 of what was downloaded, where it has one. Flushes inside its
    own ``audit.action("download.<kind>")``; the caller commits. Raises ValueError for an
    unknown kind.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown download kind {kind!r}")
    with audit.action(f"download.{kind}", actor=actor):
        download = Download(kind=kind, batch_id=batch.id if batch else None, digest=digest, detail=detail,
                            downloaded_at=now or utcnow(), downloaded_by_id=actor.id if actor else None)
        db.session.add(download)
    return download
