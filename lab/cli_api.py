"""API tokens from the command line, for the system's own programs (a LIMS bridge set up by the
administrator of the server): ``create-token`` prints the secret alone on its last line, so
``| tail -1`` captures it; ``revoke-token`` revokes a user's live tokens of one name. Both act as
the system (no actor) on the audit trail; the secret is never stored or logged."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from lab.cli_support import refuse, user_named
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models.api import TOKEN_SCOPES
from lab.services.api_tokens import DEFAULT_DAYS, MAX_DAYS, create_token, live_tokens, revoke_token


@click.command("create-token")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.option("--username", required=True, help="Whose token it is: it acts with that user's role.")
@click.option("--name", required=True, help="What will use it (for example LIMS).")
# Scope and days as text: the service checks them and says why (exit 1), as on the page.
@click.option("--scope", required=True, help=f"{' or '.join(TOKEN_SCOPES)} (write also submits values).")
@click.option("--days", default=str(DEFAULT_DAYS), show_default=True, help=f"How long it lasts (1 to {MAX_DAYS}).")
def create_token_command(username: str, name: str, scope: str, days: str) -> None:
    """Make an API token for a user; its secret is printed once, alone on the last line."""
    user = user_named(username)
    try:
        token, secret = create_token(user, name, scope, days, actor=None)
    except InvalidInput as error:  # one line per field, as create-user says it
        refuse("The token was not made.\n" + "\n".join(f"{field}: {message}" for field, message in error.errors.items()))
    db.session.commit()
    click.echo(f"Made {token.label} for {user.username}, scope {scope}, expires {token.expires_at:%Y-%m-%d %H:%M} UTC. "
               "The token follows; it is shown once:")
    click.echo(secret)


@click.command("revoke-token")
@with_appcontext  # also under FlaskCliRunner, which does not push one
@click.option("--username", required=True, help="Whose token it is.")
@click.option("--name", required=True, help="The token's name: every live token of the user with it is revoked.")
@click.option("--reason", default="", help="Why (on the audit trail).")
def revoke_token_command(username: str, name: str, reason: str) -> None:
    """Revoke a user's live API tokens of one name."""
    user = user_named(username)  # a deactivated user's tokens may be revoked too
    wanted = " ".join(name.split())
    tokens = [t for t in live_tokens(user) if t.name == wanted]
    if not tokens:
        refuse(f"{user.username} has no live token named {wanted!r}.")
    for token in tokens:
        revoke_token(token, actor=None, reason=reason)
    db.session.commit()
    click.echo(f"Revoked {', '.join(t.label for t in tokens)} of {user.username}.")
