"""Command-line tasks: ``flask --app lab <command>``."""

from __future__ import annotations

import os
from pathlib import Path

import click
from flask import Flask
from flask.cli import with_appcontext
from flask_migrate import upgrade

from lab.cli_api import create_token_command, revoke_token_command
from lab.cli_audit import anchor_findings, audit_anchor_command, audit_key_command
from lab.cli_backup import backup_command, verify_backup_command
from lab.cli_install import check_install_command
from lab.cli_processes import approve_shipped_processes, import_process
from lab.cli_records import export_records, verify_export_command
from lab.cli_validation import validation_report_command
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models.users import ROLE_TITLES
from lab.workflow_registry import workflow_dir
from workflows.definition import DefinitionError, load_directory


def register_commands(app: Flask) -> None:
    app.cli.add_command(init_db)
    app.cli.add_command(create_user_command)
    app.cli.add_command(check_workflows)
    app.cli.add_command(import_process)
    app.cli.add_command(approve_shipped_processes)
    app.cli.add_command(seed_demo)
    app.cli.add_command(export_records)
    app.cli.add_command(verify_export_command)
    app.cli.add_command(verify_audit)
    app.cli.add_command(audit_key_command)
    app.cli.add_command(audit_anchor_command)
    app.cli.add_command(backup_command)
    app.cli.add_command(verify_backup_command)
    app.cli.add_command(create_token_command)
    app.cli.add_command(revoke_token_command)
    app.cli.add_command(check_install_command)
    app.cli.add_command(validation_report_command)


@click.command("init-db")
@with_appcontext  # also under FlaskCliRunner, which does not push one
def init_db() -> None:
    """Bring the database to the current schema (safe to run again)."""
    upgrade()
    click.echo(f"Database ready: {db.engine.url.render_as_string(hide_password=True)}")


@click.command("create-user")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.option("--username", prompt=True)
@click.option("--full-name", prompt="Full name (printed with signatures)")
@click.option("--role", type=click.Choice(list(ROLE_TITLES)), prompt=True)
@click.option("--site", "site_code", default=None, help="A clinician's treatment site, by its code.")
@click.password_option("--password", help="Prompted for (twice) when not given.")
def create_user_command(username: str, full_name: str, role: str, site_code: str | None, password: str) -> None:
    """Add a user account. Its password is temporary: the owner replaces it at the first sign-in."""
    from lab.services.sites import find
    from lab.services.users import create_user

    site = find(site_code) if site_code else None
    if site_code and site is None:
        click.echo(f"site: no treatment site has the code {site_code!r}.", err=True)
        raise click.exceptions.Exit(1)
    try:
        user = create_user(username, full_name, role, password, actor=None, site_id=site.id if site else None)
    except InvalidInput as error:
        db.session.rollback()
        for field, message in error.errors.items():
            click.echo(f"{field}: {message}", err=True)
        raise click.exceptions.Exit(1) from None
    db.session.commit()
    click.echo(f"Created {user.username} ({user.role_title}). The password is temporary: "
               "choose your own at the first sign-in.")


@click.command("check-workflows")
@with_appcontext  # also under FlaskCliRunner, which does not push one
def check_workflows() -> None:
    """Load and validate every process definition; exit 1 naming the first bad file."""
    try:
        definitions = load_directory(workflow_dir())
    except DefinitionError as error:
        click.echo(f"Refused: {error}", err=True)
        raise click.exceptions.Exit(1) from None
    for (key, version), definition in sorted(definitions.items()):
        click.echo(f"{key} v{version}: {len(definition.steps)} steps, sha256 {definition.sha256} "
                   f"({definition.source_name})")
    click.echo(f"{len(definitions)} definition(s) OK.")


@click.command("seed-demo")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.option("--password", default="celltrail-demo", show_default=True, help="Password of every demo user.")
def seed_demo(password: str) -> None:
    """Fill an empty database with a demo lab: users, lots, equipment, patients and batches,
    whose past weeks are recorded on a simulated clock (every audit entry says it is demo data)."""
    from lab.demo import DemoExists, DemoRefused, seed

    try:
        summary = seed(password)
    except DemoExists as error:
        db.session.rollback()
        click.echo(str(error))
        return
    except DemoRefused as error:
        db.session.rollback()
        click.echo(f"Refused: {error}", err=True)
        raise click.exceptions.Exit(1) from None
    except InvalidInput as error:
        db.session.rollback()
        click.echo(f"Refused: {error} {' '.join(error.errors.values())}", err=True)
        raise click.exceptions.Exit(1) from None
    db.session.commit()
    click.echo(summary)


@click.command("verify-audit")
@click.option("--anchor", "anchors", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="An anchor file (audit-anchor) the chain must still pass through; may be repeated.")
@click.option("--jobs", type=click.IntRange(1, 64), default=os.cpu_count() or 1, show_default="the CPU count",
              help="Processes checking at once (1: all in this process). The result is the same for any number.")
@with_appcontext  # also under FlaskCliRunner, which does not push one
def verify_audit(anchors: tuple[Path, ...] = (), jobs: int = 1) -> None:
    """Walk the audit trail's hash chain, check every signature and every batch's state against
    its signed decisions, and that the chain still passes through the head every audit-trail
    review saw and every anchor given; exit 1 naming the first sign of a change made in the
    database behind the application."""
    from lab.services.audit_review import verify_review_heads
    from lab.services.audit_verify import verify_audit as verify

    chain, signatures, decisions = verify(jobs)
    reviews = verify_review_heads()
    anchored, anchor_problems = anchor_findings(anchors)
    problems = [*chain.findings.problems, *signatures.findings.problems, *decisions.findings.problems,
                *reviews.findings.problems]
    for problem in problems:
        click.echo(f"TAMPERED: {problem}", err=True)
    for problem in anchor_problems.problems:
        click.echo(f"ANCHOR: {problem}", err=True)
    problems += anchor_problems.problems
    hidden = (chain.findings.count + signatures.findings.count + decisions.findings.count + reviews.findings.count
              + anchor_problems.count - len(problems))
    if hidden:
        click.echo(f"... and {hidden} more.", err=True)
    click.echo(f"Audit trail: {chain.entries} entries, last entry {chain.last_id}, sha256 {chain.last_hash}: "
               + ("chain broken." if chain.findings.count else "chain intact."))
    click.echo(f"Signatures: {signatures.checked} checked, "
               f"{signatures.checked - signatures.superseded - signatures.mismatched} match their records, "
               f"{signatures.superseded} no longer match because a later signed correction changed their record "
               "(expected; the record shows them so).")
    click.echo(f"Batch states: {decisions.checked} checked against their signed decisions, "
               f"{decisions.findings.count} not supported by one.")
    click.echo(f"Reviews and anchors: {reviews.checked} audit-trail reviews and {anchored} anchors checked, "
               f"{reviews.findings.count + anchor_problems.count} not passed through by the chain or unreadable.")
    if problems:
        click.echo(f"Not intact: {problems[0]}", err=True)
        raise click.exceptions.Exit(1)
    click.echo("Intact: no sign of a change made behind the application.")
