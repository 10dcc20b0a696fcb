"""Commands for executed batch records: ``export-records`` (a ZIP of records) and ``verify-export``."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import click
from flask.cli import with_appcontext

from lab.cli_support import refuse
from lab.extensions import db
from lab.models import Batch, utcnow
from lab.services.exports import (
    ExportRefused,
    ExportWriter,
    check_destination,
    check_range,
    select_batches,
    verify_export,
)

DAY = click.DateTime(formats=["%Y-%m-%d"])


@click.command("export-records")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.option("--since", required=True, type=DAY, help="First day of the range, YYYY-MM-DD (UTC).")
@click.option("--until", required=True, type=DAY, help="Last day of the range, included, YYYY-MM-DD (UTC).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The ZIP file to write; it must not exist yet.")
@click.option("--jobs", type=click.IntRange(1, 64), default=os.cpu_count() or 1, show_default="the CPU count",
              help="Processes drawing the PDFs (1: all in this process).")
def export_records(since: datetime, until: datetime, out: Path, jobs: int) -> None:
    """Export the executed record (PDF and JSON) of every batch started or changed in the
    range, with a manifest of SHA-256 digests. Check it later with verify-export."""
    now = utcnow()
    first, last = since.date(), until.date()
    try:
        check_range(first, last, today=now.date())
        check_destination(out)
    except ExportRefused as error:
        refuse(str(error))
    batch_ids = select_batches(first, last)
    if not batch_ids:
        refuse(f"No batch was started or changed from {first} to {last} (UTC).")
    try:
        with ExportWriter(out, since=first, until=last, now=now, jobs=jobs) as writer:
            with click.progressbar(batch_ids, label=f"Rendering {len(batch_ids)} batch records", show_pos=True) as bar:
                for batch_id in bar:
                    _export_one(writer, batch_id)
            temporary = writer.finish()
    except ExportRefused as error:
        refuse(str(error))
    try:
        os.replace(temporary, out)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        refuse(f"Cannot write {out}: {error.strerror or error}.")
    try:
        db.session.commit()
    except Exception:
        out.unlink(missing_ok=True)  # an export the log does not know would never verify
        raise
    click.echo(f"Exported the records of {len(batch_ids)} batches to {out}. Check it with "
               f"`flask --app lab verify-export {out}`.")


def _export_one(writer: ExportWriter, batch_id: int) -> None:
    """Add one batch's record to the export, then let go of everything loaded for it (its rows
    are flushed), so that memory does not grow with the number of batches."""
    writer.add(db.session.get_one(Batch, batch_id))
    db.session.expunge_all()


@click.command("verify-export")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.argument("zip_file", type=click.Path(dir_okay=False, path_type=Path))
def verify_export_command(zip_file: Path) -> None:
    """Check an export: every file against its manifest, the manifest against the export
    log, each record against the database. Exit 1 naming the first problem."""
    try:
        checks = verify_export(zip_file)
    except ExportRefused as error:
        click.echo(f"NOT VERIFIED: {error}", err=True)
        raise click.exceptions.Exit(1) from None
    for check in checks:
        status = "current" if check.is_current else \
            f"superseded: {check.changes} change(s) since, listed at /verify/{check.digest}"
        click.echo(f"{check.batch_number}  sha256 {check.digest}  {status}")
    superseded = sum(not check.is_current for check in checks)
    click.echo(f"Verified: every file matches the manifest, which this CellTrail wrote; {len(checks)} records "
               f"issued by this CellTrail, {len(checks) - superseded} current, {superseded} superseded since.")
