"""Commands for executed batch records: ``export-records`` (a ZIP of records) and ``verify-export``."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import click
from flask.cli import with_appcontext

from lab.cli_support import refuse
from lab.extensions import db
from lab.models import utcnow
from lab.services.exports import (
    ExportedRecord,
    ExportRefused,
    check_destination,
    check_range,
    export_record,
    select_batches,
    verify_export,
    write_export,
)
from labels.text import UnprintableText

DAY = click.DateTime(formats=["%Y-%m-%d"])


@click.command("export-records")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.option("--since", required=True, type=DAY, help="First day of the range, YYYY-MM-DD (UTC).")
@click.option("--until", required=True, type=DAY, help="Last day of the range, included, YYYY-MM-DD (UTC).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The ZIP file to write; it must not exist yet.")
def export_records(since: datetime, until: datetime, out: Path) -> None:
    """Export the executed record (PDF and JSON) of every batch started or changed in the
    range, with a manifest of SHA-256 digests. Check it later with verify-export."""
    now = utcnow()
    first, last = since.date(), until.date()
    try:
        check_range(first, last, today=now.date())
        check_destination(out)
    except ExportRefused as error:
        refuse(str(error))
    batches = select_batches(first, last)
    if not batches:
        refuse(f"No batch was started or changed from {first} to {last} (UTC).")
    records: list[ExportedRecord] = []
    with click.progressbar(batches, label=f"Rendering {len(batches)} batch records", show_pos=True) as bar:
        for batch in bar:
            try:
                records.append(export_record(batch, now=now))
            except UnprintableText as error:
                refuse(f"The record of batch {batch.batch_number} cannot be printed: {error}")
    try:
        temporary = write_export(out, records, since=first, until=last, now=now)
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
    click.echo(f"Exported the records of {len(records)} batches to {out}. Check it with "
               f"`flask --app lab verify-export {out}`.")


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
