"""Commands for process versions under change control: ``import-process`` stores a definition
file as a draft; ``approve-shipped-processes`` approves, once on installation, the definitions
shipped with CellTrail, so that a fresh install can start batches. QA approves every later
version on its page (/processes/<key>/<version>), with a signature and an effective date."""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import with_appcontext

from lab.cli_support import refuse, user_named
from lab.exceptions import InvalidInput, LabError, SignatureError
from lab.extensions import db
from lab.services.processes import (
    MAX_DEFINITION_BYTES,
    ProcessConflict,
    approve_shipped,
    import_definition,
    lab_date,
    parse_upload,
)
from lab.services.signatures import Credentials, record_failed_attempt
from workflows.definition import DefinitionError


def _said(error: LabError) -> str:
    details = " ".join(m for m in getattr(error, "errors", {}).values() if m not in str(error))
    return f"{error} {details}".strip()


@click.command("import-process")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--username", required=True, help="Who submits the version (a QA officer or an administrator).")
@click.option("--reason", default="", help="What the change is for (shown on the version's page).")
def import_process(file: Path, username: str, reason: str) -> None:
    """Store a process definition file as a DRAFT version. It is not used until a QA officer
    other than you approves it on /processes/<key>/<version> with an effective date."""
    actor = user_named(username)
    if file.stat().st_size > MAX_DEFINITION_BYTES:
        refuse(f"{file.name}: the file is larger than {MAX_DEFINITION_BYTES // 1024} kB.")
    try:
        definition = parse_upload(file.read_bytes(), file.name)
        version = import_definition(definition, actor=actor, origin="imported", reason=reason)
    except ProcessConflict as error:
        refuse(str(error))
    except (InvalidInput, LabError) as error:
        refuse(_said(error))
    db.session.commit()
    click.echo(f"Stored {version.key} version {version.version} ({file.name}, sha256 {version.definition.sha256}) "
               f"as a draft. A QA officer other than {actor.username} approves it on "
               f"/processes/{version.key}/{version.version}.")


@click.command("approve-shipped-processes")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.option("--username", required=True, help="The QA officer who approves (signs) them.")
@click.option("--password", prompt=True, hide_input=True, help="The QA officer's password (prompted for).")
@click.option("--key", "keys", multiple=True, help="Only this process (may be repeated); default: every one.")
def approve_shipped_processes(username: str, password: str, keys: tuple[str, ...] = ()) -> None:
    """Approve, effective today, the newest version of each process definition shipped with
    CellTrail (once, on installation), each with the QA officer's electronic signature."""
    actor = user_named(username)
    try:
        approved = approve_shipped(actor=actor, credentials=Credentials(password, username), keys=keys or None)
    except DefinitionError as error:
        refuse(f"{error}. Fix the file (`flask --app lab check-workflows` checks it).")
    except SignatureError as error:
        db.session.rollback()
        note = ""
        if error.attempt is not None:  # the refused attempt is kept and counts towards the lockout
            note = " " + record_failed_attempt(error.attempt)
            db.session.commit()
        click.echo(f"Refused: {error}{note}", err=True)
        raise click.exceptions.Exit(1) from None
    except LabError as error:
        refuse(_said(error))
    db.session.commit()
    if not approved:
        click.echo("Nothing to approve: every shipped process version is approved already.")
        return
    for version in approved:
        assert version.effective_from is not None
        click.echo(f"Approved {version.key} version {version.version} ({version.title}), effective from "
                   f"{lab_date(version.effective_from).isoformat()}, signed by {actor.full_name}.")
