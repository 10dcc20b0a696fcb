"""Accepting an uploaded file as an attachment: PDF or image only, size-limited, hashed (``keep``
also takes a text file its caller has parsed, such as a cell counter's CSV export).

The type is decided from the file's first bytes (its signature), so a renamed executable
or HTML page is refused whatever its name or the Content-Type the browser sent.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import PurePath
from typing import IO

from flask import current_app

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import User
from lab.models.attachments import Attachment

#: File signature -> content type. PDF, PNG and JPEG: what certificates come as.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)
ACCEPTED = "a PDF, PNG or JPEG file"


def max_bytes() -> int:
    return int(current_app.config["ATTACHMENT_MAX_BYTES"])


def content_type_of(content: bytes) -> str | None:
    return next((kind for magic, kind in SIGNATURES if content.startswith(magic)), None)


def _clean_filename(filename: str | None) -> str:
    name = PurePath((filename or "").replace("\\", "/")).name.strip()
    return name[:255] or "attachment"


def store(stream: IO[bytes], filename: str | None, *, field: str, actor: User, now: datetime) -> Attachment:
    """Read ``stream`` (an uploaded file) into a new Attachment, added to the session.

    Raises InvalidInput naming ``field`` for an empty file, a file over the size limit or a
    file that is not a PDF or an image. Call inside ``audit.action``.
    """
    limit = max_bytes()
    content = stream.read(limit + 1)
    if not content:
        raise InvalidInput("The file is empty.", {field: f"Attach {ACCEPTED}; the file sent was empty."})
    if len(content) > limit:
        raise InvalidInput("The file is too large.", {
            field: f"The file is larger than {limit // (1024 * 1024)} MB; attach a smaller copy ({ACCEPTED})."})
    kind = content_type_of(content)
    if kind is None:
        raise InvalidInput("The file is not a PDF or an image.", {
            field: f"{_clean_filename(filename)} is not {ACCEPTED}: attach the certificate as one of those."})
    return keep(content, filename, content_type=kind, actor=actor, now=now)


def keep(content: bytes, filename: str | None, *, content_type: str, actor: User, now: datetime) -> Attachment:
    """A new Attachment of ``content``, added to the session, whose type the caller has decided:
    ``store`` from the file's signature, a reader of a text format (a counter's CSV export,
    ``text/csv``) by parsing it. Call inside ``audit.action``."""
    attachment = Attachment(filename=_clean_filename(filename), content_type=content_type, size=len(content),
                            sha256=sha256_of(content), content=content, uploaded_at=now, uploaded_by_id=actor.id)
    db.session.add(attachment)
    return attachment


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
