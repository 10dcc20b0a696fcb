"""``flask --app lab backup`` and ``verify-backup``: the database saved, and proven restorable."""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import with_appcontext

from lab.backup import BackupError, make_backup, verify_backup


@click.command("backup")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A new .zip file: the database and its manifest.")
def backup_command(out: Path) -> None:
    """Back up the whole database (SQLite: online backup API; PostgreSQL: pg_dump) with a
    manifest of its SHA-256 and the audit trail's last entry; exit 1 naming why it failed."""
    try:
        manifest = make_backup(out)
    except BackupError as error:
        click.echo(f"Refused: {error}", err=True)
        raise click.exceptions.Exit(1) from None
    head = manifest["audit_head"] or {"entry": 0, "hash": "none"}
    click.echo(f"Backup written: {out} ({manifest['engine']}, {manifest['size']} bytes, sha256 {manifest['sha256']}; "
               f"audit trail up to entry {head['entry']}, sha256 {head['hash']}).")


@click.command("verify-backup")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.argument("backup", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--scratch-url", default=None,
              help="PostgreSQL: the database to restore into (created and dropped; default: <database>_restore).")
def verify_backup_command(backup: Path, scratch_url: str | None) -> None:
    """Restore a backup into a scratch database and run verify-audit on it; exit 0 only when the
    file matches its manifest, restores, ends its trail where the manifest says and is intact."""
    try:
        verified = verify_backup(backup, scratch_url=scratch_url)
    except BackupError as error:
        click.echo(f"Not intact: {error}", err=True)
        raise click.exceptions.Exit(1) from None
    made = verified.manifest["created_at"]
    if not verified.intact:
        click.echo(f"Not intact: the backup of {made} restores, but its audit trail does not verify.", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"Backup of {made} restores and verifies: intact.")
