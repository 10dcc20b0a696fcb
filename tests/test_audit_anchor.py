"""Anchors of the audit trail (issue 12, item 10): ``audit-key`` makes the Ed25519 key,
``audit-anchor`` writes the signed chain head, ``verify-audit --anchor FILE`` checks the chain
still passes through it; a consistent rewrite of the whole chain is detected once an anchor
was kept, and a damaged anchor file is refused with a clear message."""

from __future__ import annotations

import json
import stat
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import select, text, update

from lab import audit
from lab.anchors import FORMAT
from lab.audit_chain import GENESIS, entry_hash
from lab.extensions import db
from lab.models import AuditChainHead, AuditEvent, MaterialLot
from tests.conftest import ON_POSTGRES

pytestmark = pytest.mark.requirements("P11-10a")


def verify(app: Flask, *anchors: Path) -> Result:
    args = ["verify-audit"]
    for anchor in anchors:
        args += ["--anchor", str(anchor)]
    return app.test_cli_runner().invoke(args=args)


def add_lots(app: Flask, count: int, start: int = 0) -> None:
    """``count`` audited inserts, each its own transaction (a trail of a few entries per lot)."""
    with app.app_context():
        for number in range(start, start + count):
            with audit.action("test.lot", actor=None, reason="received"):
                db.session.add(MaterialLot(code=f"LOT-{number}", material="medium", name="Medium",
                                           lot_number=f"L{number}", supplier="Nobody", expiry_date=date(2030, 1, 1)))
            db.session.commit()


def rewrite_whole_chain(app: Flask, entry_id: int, reason: str) -> None:
    """What a database superuser can do: change an old entry, then recompute every later link and
    hash and the chain head, so the chain checks out on its own."""
    with app.app_context():
        if ON_POSTGRES:
            db.session.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            db.session.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
        table = AuditEvent.__table__
        rows = [dict(r) for r in db.session.execute(select(table).order_by(table.c.id)).mappings()]
        previous = GENESIS
        for row in rows:
            if row["id"] == entry_id:
                row["reason"] = reason
            if row["id"] >= entry_id:
                row["prev_hash"] = previous
                row["hash"] = entry_hash(row)
                db.session.execute(update(table).where(table.c.id == row["id"])
                                   .values(reason=row["reason"], prev_hash=row["prev_hash"], hash=row["hash"]))
            previous = row["hash"]
        db.session.execute(update(AuditChainHead).values(last_hash=previous))
        db.session.commit()


@pytest.fixture
def key(app: Flask, tmp_path: Path) -> Path:
    path = tmp_path / "anchor.key"
    result = app.test_cli_runner().invoke(args=["audit-key", "--out", str(path)])
    assert result.exit_code == 0, result.output
    return path


def anchor(app: Flask, key: Path, out: Path) -> Result:
    return app.test_cli_runner().invoke(args=["audit-anchor", "--key", str(key), "--out", str(out)])


def test_audit_key_writes_a_private_key_only_its_owner_reads_and_never_overwrites(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "anchor.key"
    result = app.test_cli_runner().invoke(args=["audit-key", "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    public = result.stdout.split("Public key: ")[1].split()[0]
    assert len(public) == 64
    assert "database server" in result.stdout
    content = path.read_bytes()
    again = app.test_cli_runner().invoke(args=["audit-key", "--out", str(path)])
    assert again.exit_code == 1 and "already exists" in again.stderr and "Traceback" not in again.output
    assert path.read_bytes() == content


def test_an_anchor_is_the_signed_chain_head_and_verifies(app: Flask, users: dict[str, int], key: Path,
                                                         tmp_path: Path) -> None:
    add_lots(app, 2)
    out = tmp_path / "anchor-1.json"
    result = anchor(app, key, out)
    assert result.exit_code == 0, result.output
    content = json.loads(out.read_text())
    with app.app_context():
        head = db.session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)).one()
        assert app.config["FACILITY_ID"] == content["facility"]
    assert (content["entry_id"], content["hash"]) == (head.last_id, head.last_hash)
    assert content["format"] == FORMAT and len(content["signature"]) == 128 and content["anchored_at"].endswith("Z")
    refused = anchor(app, key, out)
    assert refused.exit_code == 1 and "already exists" in refused.stderr
    add_lots(app, 2, start=10)  # the trail grows past the anchor: still passes through it
    result = verify(app, out)
    assert result.exit_code == 0, result.output
    assert "1 anchors checked" in result.stdout


def test_a_rewrite_of_the_whole_chain_is_detected_once_an_anchor_was_kept(app: Flask, users: dict[str, int],
                                                                          key: Path, tmp_path: Path) -> None:
    add_lots(app, 3)
    out = tmp_path / "anchor.json"
    assert anchor(app, key, out).exit_code == 0
    add_lots(app, 2, start=10)
    rewrite_whole_chain(app, 2, "Approved by phone.")
    assert verify(app).exit_code == 0  # without the anchor the rewrite is invisible
    result = verify(app, out)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"ANCHOR: Anchor {out} (made ")
    assert "the trail was rewritten in the database since" in result.stderr
    assert "Traceback" not in result.output


def test_an_anchor_of_a_deleted_end_of_the_trail_is_named(app: Flask, users: dict[str, int], key: Path,
                                                          tmp_path: Path) -> None:
    from tests.test_verify_audit import tamper

    add_lots(app, 2)
    out = tmp_path / "anchor.json"
    assert anchor(app, key, out).exit_code == 0
    last = json.loads(out.read_text())["entry_id"]
    tamper(app, f"DELETE FROM audit_events WHERE id = {int(last)}",
           f"UPDATE audit_chain_head SET last_id = {int(last) - 1}")
    result = verify(app, out)
    assert result.exit_code == 1 and f"entry {last} is missing" in result.stderr


def _edit(path: Path, **changes: Any) -> None:
    content = json.loads(path.read_text())
    content.update(changes)
    path.write_text(json.dumps(content))


@pytest.mark.parametrize(("damage", "message"), [
    ("hash", "its signature does not match its content"),
    ("entry_id", "its signature does not match its content"),
    ("signature", "its signature does not match its content"),
    ("public_key", "its signature does not match its content"),
    ("malformed", "is not valid JSON"),
    ("missing", "not found"),
    ("not_hex", "is not 64 lowercase hex digits"),
    ("other_format", "is not a CellTrail audit anchor"),
    ("binary", "not UTF-8"),
])
def test_a_damaged_anchor_file_is_refused_with_a_clear_message(app: Flask, users: dict[str, int], key: Path,
                                                                tmp_path: Path, damage: str, message: str) -> None:
    add_lots(app, 2)
    out = tmp_path / "anchor.json"
    assert anchor(app, key, out).exit_code == 0
    content = json.loads(out.read_text())
    if damage == "hash":
        # A hash the chain does pass through (entry 1's), but not the one signed.
        with app.app_context():
            first = db.session.scalar(select(AuditEvent.hash).where(AuditEvent.id == content["entry_id"] - 1))
        _edit(out, hash=first, entry_id=content["entry_id"] - 1)
    elif damage == "entry_id":
        _edit(out, entry_id=content["entry_id"] - 1)
    elif damage == "signature":
        _edit(out, signature=("0" if content["signature"][0] != "0" else "1") + content["signature"][1:])
    elif damage == "public_key":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from lab.anchors import public_hex
        _edit(out, public_key=public_hex(Ed25519PrivateKey.generate()))
    elif damage == "malformed":
        out.write_text(out.read_text()[:-10])
    elif damage == "missing":
        out.unlink()
    elif damage == "not_hex":
        _edit(out, hash="Z" * 64)
    elif damage == "other_format":
        _edit(out, format="something/else")
    elif damage == "binary":
        out.write_bytes(b"\xff\xfe\x00garbage")
    result = verify(app, out)
    assert result.exit_code == 1, result.output
    assert f"ANCHOR: Anchor {out}" in result.stderr and message in result.stderr
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_an_anchor_signed_with_another_key_is_refused_when_the_facility_key_is_configured(
        app: Flask, users: dict[str, int], key: Path, tmp_path: Path) -> None:
    add_lots(app, 1)
    out = tmp_path / "anchor.json"
    assert anchor(app, key, out).exit_code == 0
    other = tmp_path / "other.key"
    public_other = app.test_cli_runner().invoke(args=["audit-key", "--out", str(other)]).stdout \
        .split("Public key: ")[1].split()[0]
    app.config["AUDIT_ANCHOR_PUBLIC_KEY"] = public_other
    result = verify(app, out)
    assert result.exit_code == 1 and "not with this facility's anchor key" in result.stderr
    app.config["AUDIT_ANCHOR_PUBLIC_KEY"] = json.loads(out.read_text())["public_key"]
    assert verify(app, out).exit_code == 0


def test_a_key_file_others_can_read_or_that_is_no_key_is_refused(app: Flask, users: dict[str, int], key: Path,
                                                                  tmp_path: Path) -> None:
    key.chmod(0o644)
    result = anchor(app, key, tmp_path / "a.json")
    assert result.exit_code == 1 and "can be read by other users" in result.stderr
    assert not (tmp_path / "a.json").exists()
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    junk.chmod(0o600)
    result = anchor(app, junk, tmp_path / "b.json")
    assert result.exit_code == 1 and "is not an unencrypted PEM private key" in result.stderr
    result = anchor(app, tmp_path / "none.key", tmp_path / "c.json")
    assert result.exit_code == 1 and "not found" in result.stderr and "Traceback" not in result.output


def test_the_key_may_come_from_the_environment(app: Flask, users: dict[str, int], key: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    add_lots(app, 1)
    monkeypatch.setenv("LAB_AUDIT_ANCHOR_KEY", str(key))
    out = tmp_path / "anchor.json"
    result = app.test_cli_runner().invoke(args=["audit-anchor", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert verify(app, out).exit_code == 0
