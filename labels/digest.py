"""The digest of a printed record, and the short QR payload that carries it.

Canonical form (format ``celltrail/batch-record/1``): the JSON object
``{"format": FORMAT, "record": <the record>}`` where each dataclass is an object of its
fields, tuples are arrays, times are ISO 8601 in UTC with microseconds and a ``Z``
(``2026-11-25T14:03:00.000000Z``), dates ``YYYY-MM-DD``, other values strings, integers,
booleans or null (no floats: numbers are kept as the text recorded); keys sorted, no
white space (separators ``,`` and ``:``), non-ASCII written as is, encoded in UTF-8. The
digest is the SHA-256 of those bytes, in lower-case hex. A field marked ``NOT_CANONICAL``
is left out: it only draws what other fields hold (the expansion chart of the counts).
Nothing of one printout (who downloaded it, when) is in the record, so two downloads of an
unchanged record share it.

QR payload: ``V-`` and the 64 hex digits in upper case: the QR alphanumeric set only
(DESIGN.md), distinct from every code shape. The scan box also takes the bare digest as
printed, or a URL ending in ``/verify/<digest>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

FORMAT = "celltrail/batch-record/1"
PAYLOAD_PREFIX = "V-"
#: ``dataclasses.field(metadata=NOT_CANONICAL)``: a field the canonical form (so the digest) leaves out.
NOT_CANONICAL = {"canonical": False}
#: ``dataclasses.field(metadata=ABSENT_WHEN_NONE)``: a field added to a record after copies were issued,
#: left out of the canonical form while it is None, so that those copies keep verifying as current.
ABSENT_WHEN_NONE = {"absent_when_none": True}
_HEX = re.compile(r"[0-9a-f]{64}")


class DigestError(ValueError):
    """Text offered as a record digest is not one."""


def plain(value: Any) -> Any:
    """``value`` as JSON-ready values in the canonical form (see the module docstring)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value) if f.metadata.get("canonical", True)
                and not (f.metadata.get("absent_when_none") and getattr(value, f.name) is None)}
    if isinstance(value, (tuple, list)):
        return [plain(item) for item in value]
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(f"{value.isoformat()} has no time zone.")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return plain(value.value)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    raise TypeError(f"{type(value).__name__} has no canonical form (keep numbers as their recorded text).")


def canonical_json(record: Any) -> bytes:
    """The canonical bytes of ``record`` (a dataclass), which the digest covers."""
    document = {"format": FORMAT, "record": plain(record)}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_digest(record: Any) -> str:
    return sha256_hex(canonical_json(record))


def qr_payload(digest: str) -> str:
    """What the record's QR holds: ``V-`` and the digest in upper case."""
    return PAYLOAD_PREFIX + parse_digest(digest).upper()


def parse_digest(text: str) -> str:
    """The digest in ``text`` (64 hex digits, any case, or a ``V-`` payload), lower case.

    Raises DigestError saying what a digest looks like.
    """
    compact = text.strip()
    if compact.upper().startswith(PAYLOAD_PREFIX):
        compact = compact[len(PAYLOAD_PREFIX):]
    digest = compact.lower()
    if _HEX.fullmatch(digest) is None:
        shown = text if len(text) <= 80 else text[:80] + "…"
        raise DigestError(f"{shown!r} is not a record digest: a digest is 64 hexadecimal characters "
                          "(0-9, a-f), as printed on every page of a batch record.")
    return digest


def scanned_digest(text: str) -> str | None:
    """The digest a scanned record QR, a typed digest or a ``.../verify/<digest>`` URL holds;
    None when ``text`` is no record reference at all. Raises DigestError for a damaged one."""
    compact = text.strip().rstrip("/")
    last = compact.rsplit("/", 1)[-1]
    if last.upper().startswith(PAYLOAD_PREFIX) or "/verify/" in compact.lower() or _HEX.fullmatch(last.lower()):
        return parse_digest(last)
    return None
