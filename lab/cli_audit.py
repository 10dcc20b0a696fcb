"""Commands for anchoring the audit trail outside the database (lab.anchors):
``audit-key`` creates the signing key, ``audit-anchor`` writes a signed anchor of the chain
head; ``verify-audit --anchor FILE`` (lab.cli) checks the chain still passes through one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from lab.anchors import AnchorError, create_key, load_key, make_anchor, read_anchor, write_anchor
from lab.services.audit_verify import Findings


@click.command("audit-key")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The private key file to create (refused if it exists).")
def audit_key_command(out: Path) -> None:
    """Create the Ed25519 key that signs audit-trail anchors. Keep it off the database server."""
    try:
        public = create_key(out)
    except AnchorError as error:
        click.echo(f"Refused: {error}", err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(f"Anchor key written to {out} (mode 0600).")
    click.echo(f"Public key: {public}")
    click.echo("Keep the key file on a machine other than the database server, readable only by the job that "
               "runs `flask --app lab audit-anchor`; keep a copy of the public key with the anchors (and set "
               "LAB_AUDIT_ANCHOR_PUBLIC_KEY to it, so verify-audit refuses anchors signed with any other key).")


@click.command("audit-anchor")
@click.option("--key", "key_path", required=True, envvar="LAB_AUDIT_ANCHOR_KEY",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The private key file made by audit-key (default: $LAB_AUDIT_ANCHOR_KEY).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The anchor file to write (refused if it exists).")
@with_appcontext  # also under FlaskCliRunner, which does not push one
def audit_anchor_command(key_path: Path, out: Path) -> None:
    """Write the audit trail's current chain head, signed with the anchor key, to a new file.
    Store it off-site: verify-audit --anchor FILE then detects any later rewrite of the chain."""
    from lab.services.audit_review import chain_head, entry_problem

    try:
        key = load_key(key_path)
        entry_id, entry_hash = chain_head()
        problem = entry_problem(entry_id, entry_hash)
        if problem:
            raise AnchorError(f"The chain head does not match the trail ({problem}): nothing anchored. "
                              "Run `flask --app lab verify-audit`.")
        content = make_anchor(key, entry_id=entry_id, entry_hash=entry_hash,
                              facility=str(current_app.config["FACILITY_ID"]),
                              facility_name=str(current_app.config["FACILITY_NAME"]))
        write_anchor(out, content)
    except AnchorError as error:
        click.echo(f"Refused: {error}", err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(f"Anchored entry {entry_id}, sha256 {entry_hash}, at {content['anchored_at']} in {out}. "
               "Store it off-site.")


def anchor_findings(paths: Sequence[Path]) -> tuple[int, Findings]:
    """Check each anchor file and that the chain passes through its head: (anchors checked, problems)."""
    from lab.services.audit_review import entry_problem

    findings = Findings()
    expected = current_app.config.get("AUDIT_ANCHOR_PUBLIC_KEY")
    if expected is not None and not isinstance(expected, str):  # from_prefixed_env read a hex key as a number
        expected = os.environ.get("LAB_AUDIT_ANCHOR_PUBLIC_KEY", str(expected))
    facility = str(current_app.config["FACILITY_ID"])
    for path in paths:
        try:
            anchor = read_anchor(path, expected or None)
        except AnchorError as error:
            findings.add(str(error))
            continue
        if anchor.facility != facility:
            findings.add(f"Anchor {path} is of facility {anchor.facility}, not of this one ({facility}).")
            continue
        problem = entry_problem(anchor.entry_id, anchor.hash)
        if problem:
            findings.add(f"Anchor {path} (made {anchor.anchored_at}) says the trail passed through entry "
                         f"{anchor.entry_id} with sha256 {anchor.hash}, but {problem}: the trail was rewritten "
                         "in the database since.")
    return len(paths), findings
