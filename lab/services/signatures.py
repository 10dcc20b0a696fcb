"""Electronic signatures: re-authenticated, with meaning, linked to a hash of what was signed.

The hash is over a canonical JSON of the signed record, so any later change to the record
(a correction) leaves the signature visibly not matching: 21 CFR 11.70.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from lab.exceptions import SignatureError
from lab.extensions import db
from lab.models import Signature, StepEntry, User

MEANINGS = ("performed", "verified", "reviewed", "approved for release", "rejected")


def content_sha256(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def current_values(entry: StepEntry) -> dict[str, Any]:
    """field key -> the StepValue not superseded by a correction."""
    superseded = {v.supersedes_id for v in entry.values if v.supersedes_id is not None}
    return {v.field_key: v for v in entry.values if v.id not in superseded}


def entry_sha256(entry: StepEntry) -> str:
    """Hash of what a verifier of ``entry`` attests to: its current values and their author."""
    return content_sha256({
        "record": "step_entry",
        "batch": entry.batch.batch_number,
        "step": entry.step_key,
        "occurrence": entry.occurrence,
        "performed_by": entry.performed_by.username,
        "performed_at": entry.performed_at.isoformat(),
        "comment": entry.comment,
        "values": {key: value.text for key, value in current_values(entry).items()},
    })


def reauthenticate(actor: User, password: str) -> None:
    """Check the signer's password (both components, 21 CFR 11.200(a)). Writes nothing."""
    if not password:
        raise SignatureError("Enter your password to sign.")
    if not actor.check_password(password):
        raise SignatureError("The password is wrong: nothing was signed.")


def sign_entry(entry: StepEntry, *, actor: User, meaning: str, now: datetime) -> Signature:
    """Append a signature of ``entry``'s current content. Call inside ``audit.action``."""
    if meaning not in MEANINGS:
        raise ValueError(f"unknown signature meaning {meaning!r}")
    signature = Signature(
        batch_id=entry.batch_id,
        record_type="step_entry",
        record_id=entry.id,
        signer_id=actor.id,
        printed_name=actor.full_name,
        meaning=meaning,
        signed_at=now,
        content_sha256=entry_sha256(entry),
    )
    db.session.add(signature)
    return signature
