"""Anchors of the audit trail: its chain head, signed with a key kept outside the database.

A superuser of the database can rewrite the whole trail consistently (change an old entry,
recompute every later hash and the chain head); the chain alone cannot show it. An anchor
is the head (entry id and hash) at one moment, signed with an Ed25519 key that never enters
the database and stored off-site: ``verify-audit --anchor FILE`` checks that the chain still
passes through it, so such a rewrite is detected once any anchor from before it was kept.

Key file: the private key in PKCS#8 PEM, unencrypted, mode 0600 (``audit-key``).

Anchor file (format ``celltrail/audit-anchor/1``): a JSON object of ``format``,
``entry_id``, ``hash`` (the entry's SHA-256, lowercase hex), ``anchored_at`` (UTC,
``YYYY-MM-DDTHH:MM:SS.ffffffZ``), ``facility`` (FACILITY_ID), ``facility_name``,
``public_key`` (the raw 32-byte Ed25519 public key, lowercase hex) and ``signature``: the
Ed25519 signature, lowercase hex, of the UTF-8 JSON of every other field, keys sorted, no
whitespace, non-ASCII as itself.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "celltrail/audit-anchor/1"
SIGNED_FIELDS = ("format", "entry_id", "hash", "anchored_at", "facility", "facility_name", "public_key")
#: An anchor file is a few hundred bytes; anything much larger is not one.
MAX_ANCHOR_BYTES = 16 * 1024
MAX_KEY_BYTES = 16 * 1024


class AnchorError(Exception):
    """A key or anchor file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Anchor:
    entry_id: int
    hash: str
    anchored_at: str
    facility: str
    facility_name: str
    public_key: str


def public_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def create_key(path: Path) -> str:
    """Write a new private key to ``path`` (mode 0600; refused if the file exists); return its public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AnchorError(f"{path} already exists: a key is never overwritten (anchors signed with it would "
                          "no longer be checked against it). Choose another file.") from None
    except OSError as error:
        raise AnchorError(f"Cannot create {path}: {error.strerror}.") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    os.chmod(path, 0o600)  # whatever the umask
    return public_hex(key)


def load_key(path: Path) -> Ed25519PrivateKey:
    """The private key in ``path``; refused if missing, not an Ed25519 key, or readable by others."""
    try:
        info = path.stat()
        if info.st_size > MAX_KEY_BYTES:
            raise AnchorError(f"{path} is not an audit anchor key (too large).")
        data = path.read_bytes()
    except FileNotFoundError:
        raise AnchorError(f"Key file {path} not found (create one with `flask --app lab audit-key --out FILE`).") \
            from None
    except OSError as error:
        raise AnchorError(f"Cannot read key file {path}: {error.strerror}.") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AnchorError(f"Key file {path} can be read by other users: run `chmod 600 {path}` and keep it "
                          "where only the anchoring job reads it.")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise AnchorError(f"{path} is not an unencrypted PEM private key.") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorError(f"{path} is not an Ed25519 key.")
    return key


def _signed_bytes(content: dict[str, Any]) -> bytes:
    body = {name: content[name] for name in SIGNED_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def make_anchor(key: Ed25519PrivateKey, *, entry_id: int, entry_hash: str, facility: str, facility_name: str,
                now: datetime | None = None) -> dict[str, Any]:
    """The anchor of the head (``entry_id``, ``entry_hash``) as the JSON object to write."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    content: dict[str, Any] = {
        "format": FORMAT,
        "entry_id": entry_id,
        "hash": entry_hash,
        "anchored_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "facility": facility,
        "facility_name": facility_name,
        "public_key": public_hex(key),
    }
    content["signature"] = key.sign(_signed_bytes(content)).hex()
    return content


def write_anchor(path: Path, content: dict[str, Any]) -> None:
    """Write an anchor to a new file (an existing one is never overwritten: it may be the only copy)."""
    text = json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        with open(path, "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        raise AnchorError(f"{path} already exists: anchors are never overwritten. Name each one after its "
                          "time (e.g. anchor-$(date -u +%Y%m%dT%H%M%SZ).json).") from None
    except OSError as error:
        raise AnchorError(f"Cannot write {path}: {error.strerror}.") from None


def _hex(content: dict[str, Any], name: str, length: int, path: Path) -> str:
    value = content.get(name)
    if not isinstance(value, str) or len(value) != length or any(c not in "0123456789abcdef" for c in value):
        raise AnchorError(f"Anchor {path}: its {name} is not {length} lowercase hex digits: the file was changed "
                          "or is not an anchor.")
    return value


def read_anchor(path: Path, expected_public_key: str | None = None) -> Anchor:
    """Read ``path`` and check its signature (and, if given, that it was signed with
    ``expected_public_key``). Raises AnchorError naming the file and what is wrong."""
    try:
        if path.stat().st_size > MAX_ANCHOR_BYTES:
            raise AnchorError(f"Anchor {path} is not an anchor file (too large).")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnchorError(f"Anchor {path} not found.") from None
    except UnicodeDecodeError:
        raise AnchorError(f"Anchor {path} is not an anchor file (not UTF-8 text).") from None
    except OSError as error:
        raise AnchorError(f"Cannot read anchor {path}: {error.strerror}.") from None
    try:
        content = json.loads(text)
    except ValueError:
        raise AnchorError(f"Anchor {path} is not valid JSON: the file was damaged or is not an anchor.") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise AnchorError(f"Anchor {path} is not a CellTrail audit anchor (format {FORMAT}).")
    entry_id = content.get("entry_id")
    if not isinstance(entry_id, int) or isinstance(entry_id, bool) or not 0 <= entry_id < 2**63:
        raise AnchorError(f"Anchor {path}: its entry_id is not an entry number.")
    for name in ("anchored_at", "facility", "facility_name"):
        if not isinstance(content.get(name), str):
            raise AnchorError(f"Anchor {path}: its {name} is missing.")
    entry_hash = _hex(content, "hash", 64, path)
    public_key = _hex(content, "public_key", 64, path)
    signature = _hex(content, "signature", 128, path)
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(bytes.fromhex(signature),
                                                                              _signed_bytes(content))
    except (InvalidSignature, ValueError):
        raise AnchorError(f"Anchor {path}: its signature does not match its content: the file was changed "
                          "after it was signed.") from None
    if expected_public_key and public_key != expected_public_key.strip().lower():
        raise AnchorError(f"Anchor {path} was signed with key {public_key}, not with this facility's anchor key "
                          f"{expected_public_key}: it was not made by this installation.")
    return Anchor(entry_id, entry_hash, content["anchored_at"], content["facility"], content["facility_name"],
                  public_key)
