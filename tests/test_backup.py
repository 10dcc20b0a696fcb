"""``flask --app lab backup`` and ``verify-backup`` (Annex 11 §7.1): the whole database saved with
a manifest, and proven by restoring it into a scratch database and running verify-audit there.
On SQLite (online backup API) and, with TEST_DATABASE_URL, on PostgreSQL (pg_dump, pg_restore)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import AuditChainHead, AuditEvent, Batch
from tests.test_verify_audit import tamper

pytestmark = pytest.mark.requirements("P11-10c", "A11-7.1")


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=list(args))


@pytest.fixture
def recorded(app: Flask, make_batch: Callable[..., str]) -> str:
    return make_batch(until="harvest")


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewrite(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_a_backup_holds_the_database_and_a_manifest_that_names_its_hash_and_trail(app: Flask, recorded: str,
                                                                                  tmp_path: Path) -> None:
    out = tmp_path / "backup.zip"
    result = run(app, "backup", "--out", str(out))
    assert result.exit_code == 0, result.output
    files = members(out)
    manifest = json.loads(files.pop("manifest.json"))
    [(name, data)] = files.items()
    assert name == manifest["database_file"] and manifest["engine"] in ("sqlite", "postgresql")
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() and manifest["size"] == len(data)
    with app.app_context():
        head = db.session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)).one()
    assert manifest["audit_head"] == {"entry": head.last_id, "hash": head.last_hash}
    assert f"audit trail up to entry {head.last_id}" in result.output


def test_a_backup_restores_and_verifies(app: Flask, recorded: str, tmp_path: Path) -> None:
    out = tmp_path / "backup.zip"
    assert run(app, "backup", "--out", str(out)).exit_code == 0
    with app.app_context():
        entries = db.session.scalar(select(func.count()).select_from(AuditEvent))
    result = run(app, "verify-backup", str(out))
    assert result.exit_code == 0, result.output
    assert f"Audit trail: {entries} entries" in result.output  # verify-audit ran on the restored copy
    assert "Intact: no sign of a change made behind the application." in result.output
    assert "restores and verifies: intact." in result.output


def test_a_damaged_backup_file_is_refused(app: Flask, recorded: str, tmp_path: Path) -> None:
    out = tmp_path / "backup.zip"
    assert run(app, "backup", "--out", str(out)).exit_code == 0
    files = members(out)
    name = json.loads(files["manifest.json"])["database_file"]
    files[name] = files[name][:-1] + bytes([files[name][-1] ^ 1])
    rewrite(out, files)
    result = run(app, "verify-backup", str(out))
    assert result.exit_code == 1
    assert "does not match the SHA-256 in its manifest" in result.output


def test_a_backup_of_a_tampered_trail_does_not_verify(app: Flask, recorded: str, tmp_path: Path) -> None:
    """A trail changed in the database before the backup: the backup restores, and verify-audit on
    the restored copy names the change, so verify-backup fails."""
    tamper(app, "UPDATE audit_events SET reason = 'nothing to see' WHERE id = 3")
    out = tmp_path / "backup.zip"
    assert run(app, "backup", "--out", str(out)).exit_code == 0
    result = run(app, "verify-backup", str(out))
    assert result.exit_code == 1
    assert "TAMPERED: Entry 3" in result.output
    assert "restores, but its audit trail does not verify" in result.output


def test_a_backup_whose_trail_ends_elsewhere_than_its_manifest_says_does_not_verify(
        app: Flask, recorded: str, tmp_path: Path) -> None:
    out = tmp_path / "backup.zip"
    assert run(app, "backup", "--out", str(out)).exit_code == 0
    files = members(out)
    manifest = json.loads(files["manifest.json"])
    manifest["audit_head"]["entry"] += 1
    rewrite(out, {**files, "manifest.json": json.dumps(manifest).encode()})
    result = run(app, "verify-backup", str(out))
    assert result.exit_code == 1
    assert "but the backup's manifest recorded" in result.output


@pytest.mark.parametrize(("name", "reason"), [
    ("backup.tar", "a backup is a ZIP file"),
    ("no-such-folder/backup.zip", "is not a folder"),
    ("existing.zip", "already exists"),
])
def test_a_backup_is_refused_a_target_it_would_misuse(app: Flask, recorded: str, tmp_path: Path, name: str,
                                                      reason: str) -> None:
    (tmp_path / "existing.zip").write_bytes(b"keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run(app, "backup", "--out", str(tmp_path / name))
    assert result.exit_code == 1 and reason in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "existing.zip").read_bytes() == b"keep me"


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no such file"),
    (b"not a zip", "not a CellTrail backup"),
    ("manifest", "is not a CellTrail backup manifest"),
    ("extra", "holds files its manifest does not name"),
])
def test_what_is_not_a_backup_is_refused(app: Flask, users: dict[str, int], tmp_path: Path,
                                         content: bytes | str | None, reason: str) -> None:
    path = tmp_path / "file.zip"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "manifest":
        rewrite(path, {"manifest.json": b'{"format": "something else"}'})
    elif content == "extra":
        assert run(app, "backup", "--out", str(path)).exit_code == 0
        rewrite(path, {**members(path), "extra.txt": b"x"})
    result = run(app, "verify-backup", str(path))
    assert result.exit_code == 1 and reason in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Batch)) == 0
