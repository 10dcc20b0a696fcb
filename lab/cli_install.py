"""``check-install``: the installation check (IQ), one line per check, exit 1 naming what failed."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from lab.services.install_check import run_checks


@click.command("check-install")
@with_appcontext  # also under FlaskCliRunner, which does not push one
def check_install_command() -> None:
    """Check this installation (IQ): package versions, the database at the newest migration, the
    audit trail's triggers, the configuration and the approved process versions; exit 1 naming
    each check that failed."""
    checks = run_checks()
    for check in checks:
        click.echo(f"{'PASS' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    failed = [check.name for check in checks if not check.ok]
    if failed:
        click.echo(f"Installation check failed: {', '.join(failed)}.", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"Installation check passed: {len(checks)} checks.")
