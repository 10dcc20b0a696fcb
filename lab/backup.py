"""Backups of the whole database, and their verification by restoring them (Annex 11 §7.1).

A backup is one ZIP: the database (SQLite: a copy made with SQLite's online backup API, so
it is consistent while the app runs; PostgreSQL: ``pg_dump`` in its custom format) and a
``manifest.json`` naming the engine, the schema revision, the audit trail's last entry and
hash at the time, and the SHA-256 of the database file. ``verify_backup`` checks the file
against its manifest, restores it into a scratch database, checks that the restored trail
ends where the manifest says, and runs the full ``verify-audit`` on the restored copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import URL, make_url

from config import Config
from lab.extensions import db
from lab.models import AuditChainHead, utcnow

FORMAT = "celltrail/backup/1"
MANIFEST = "manifest.json"
DUMPS = {"sqlite": "database.sqlite", "postgresql": "database.pgdump"}
#: pg_dump and pg_restore get this long before the backup or its check is refused.
TOOL_TIMEOUT_SECONDS = 3600


class BackupError(ValueError):
    """A backup cannot be made or verified; the message says why."""


@dataclass(frozen=True)
class Verified:
    """What a restored backup held: its manifest and the restored trail's verify-audit result."""

    manifest: dict[str, Any]
    intact: bool


def check_target(out: Path) -> None:
    """Refuse a name that is not a new ``.zip`` in an existing folder (nothing is overwritten)."""
    if out.suffix.lower() != ".zip":
        raise BackupError(f"{out}: a backup is a ZIP file; give a name ending in .zip.")
    if out.exists():
        raise BackupError(f"{out} already exists: a backup never overwrites a file; choose a new name.")
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent} is not a folder: create it first.")
    if not os.access(out.parent, os.W_OK):
        raise BackupError(f"{out.parent} is not writable.")


def make_backup(out: Path, *, now: datetime | None = None) -> dict[str, Any]:
    """Write the database and its manifest to ``out`` (a new ``.zip``); return the manifest.

    The ZIP is written under a temporary name and renamed at the end, so a failed backup
    leaves no file that looks like one.
    """
    check_target(out)
    engine = _engine_name(db.engine.url)
    head = db.session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)).first()
    migrated = inspect(db.engine).has_table("alembic_version")  # a schema made by init-db, not create_all
    revision = db.session.scalar(text("SELECT version_num FROM alembic_version")) if migrated else None
    db.session.rollback()  # the dump reads committed data; hold no transaction open meanwhile
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        dump = Path(work) / DUMPS[engine]
        if engine == "sqlite":
            _sqlite_backup(dump)
        else:
            _run(["pg_dump", "--format=custom", "--no-owner", f"--file={dump}", _libpq(db.engine.url)], "pg_dump")
        manifest = {"format": FORMAT, "engine": engine, "created_at": (now or utcnow()).isoformat(),
                    "schema_revision": revision, "database_file": dump.name, "sha256": _sha256(dump),
                    "size": dump.stat().st_size,
                    "audit_head": {"entry": head.last_id, "hash": head.last_hash} if head else None}
        partial = Path(work) / "backup.zip"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(dump, dump.name)
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        partial.replace(out)
    return manifest


def verify_backup(backup: Path, *, scratch_url: str | None = None) -> Verified:
    """Check ``backup`` against its manifest, restore it into a scratch database and run
    ``verify-audit`` on the restored copy (its report is printed as the command prints it).

    PostgreSQL backups restore into ``scratch_url`` (default: a database named after the
    app's own with ``_restore`` added, on the same server, created and dropped here).
    Raises BackupError for a file that is not an intact CellTrail backup.
    """
    with tempfile.TemporaryDirectory() as work:
        manifest, dump = _unpack(backup, Path(work))
        if manifest["engine"] == "sqlite":
            url = f"sqlite:///{dump}"
            return Verified(manifest, _check_restored(url, manifest))
        with _scratch_postgres(scratch_url) as url:
            _run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={_libpq(make_url(url))}", str(dump)],
                 "pg_restore")
            return Verified(manifest, _check_restored(url, manifest))


def _unpack(backup: Path, work: Path) -> tuple[dict[str, Any], Path]:
    if not backup.is_file():
        raise BackupError(f"{backup}: no such file.")
    try:
        with zipfile.ZipFile(backup) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise BackupError(f"{backup}: its manifest is not a CellTrail backup manifest ({FORMAT}).")
            name = manifest.get("database_file")
            if name not in DUMPS.values() or manifest.get("engine") not in DUMPS or DUMPS[manifest["engine"]] != name:
                raise BackupError(f"{backup}: its manifest names no database file this version can restore.")
            if sorted(archive.namelist()) != sorted([MANIFEST, name]):
                raise BackupError(f"{backup}: it holds files its manifest does not name, or lacks its database.")
            archive.extract(name, work)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BackupError(f"{backup}: not a CellTrail backup ({error}).") from None
    dump = work / name
    if _sha256(dump) != manifest.get("sha256"):
        raise BackupError(f"{backup}: its database file does not match the SHA-256 in its manifest: "
                          "changed or damaged since the backup was made.")
    return manifest, dump


def _check_restored(url: str, manifest: dict[str, Any]) -> bool:
    """Run verify-audit on the restored database; False when it is not intact or its trail
    does not end at the entry and hash the manifest recorded."""
    app = _scratch_app(url)
    try:
        with app.app_context():
            head = db.session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)).first()
            db.session.remove()
        recorded = manifest.get("audit_head")
        found = {"entry": head.last_id, "hash": head.last_hash} if head else None
        if found != recorded:
            click.echo(f"TAMPERED: the restored trail ends at {found}, but the backup's manifest recorded "
                       f"{recorded}.", err=True)
            return False
        return _verify_audit(app)
    finally:
        with app.app_context():
            db.engine.dispose()


def _verify_audit(app: Flask) -> bool:
    """The verify-audit command itself, run on ``app``: its report is printed as it prints it."""
    from lab.cli import verify_audit

    context = verify_audit.make_context("verify-audit", [], obj=ScriptInfo(create_app=lambda: app))
    try:
        with context:
            verify_audit.invoke(context)
    except click.exceptions.Exit as done:
        return done.exit_code == 0
    return True


def _scratch_app(url: str) -> Flask:
    """An app on the restored database, configured for nothing else (it serves no request)."""
    from lab import create_app

    class Scratch(Config):
        TESTING = True  # read no environment: this app is bound to the scratch database only
        SECRET_KEY = "verify-backup: serves no request"
        SQLALCHEMY_DATABASE_URI = url

    return create_app(Scratch)


@contextmanager
def _scratch_postgres(scratch_url: str | None) -> Iterator[str]:
    """A new, empty PostgreSQL database for the restore, dropped afterwards."""
    url = make_url(scratch_url) if scratch_url else db.engine.url.set(database=f"{db.engine.url.database}_restore")
    if url.database == db.engine.url.database:
        raise BackupError("The scratch database must not be the app's own database.")
    with scratch_database(url) as created:
        yield created


@contextmanager
def scratch_database(url: URL) -> Iterator[str]:
    """Create the PostgreSQL database ``url`` names, empty (dropping one left behind), and drop it
    on leaving; yields its URL. The server's ``postgres`` database is used to create and drop it."""
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = url.database
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _sqlite_backup(dump: Path) -> None:
    """SQLite's online backup API: a consistent copy while others may be writing."""
    source = db.engine.raw_connection()
    try:
        target = sqlite3.connect(dump)
        try:
            source.driver_connection.backup(target)  # type: ignore[union-attr]
        finally:
            target.close()
    finally:
        source.close()


def _engine_name(url: URL) -> str:
    name = url.get_backend_name()
    if name not in DUMPS:
        raise BackupError(f"Backups know SQLite and PostgreSQL, not {name}.")
    return name


def _libpq(url: URL) -> str:
    """The URL as pg_dump and pg_restore read it (no SQLAlchemy driver name)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _run(command: list[str], tool: str) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{tool} is not installed: install PostgreSQL's client programs "
                          "(Debian: apt-get install postgresql-client).")
    result = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        raise BackupError(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
