"""API tokens from the command line (issue 16, item 1): ``create-token`` prints the secret alone
on its last line, acting as the system; ``revoke-token`` revokes a user's live tokens of a name;
bad users and values exit 1 with the reason."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from lab import audit
from lab.extensions import db
from lab.models import ApiToken, AuditEvent
from lab.services.api_tokens import TokenRefused, authenticate
from tests.factories import user

pytestmark = pytest.mark.requirements("API-1")


def create(runner: FlaskCliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(args=["create-token", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_last_line_is_the_token_and_it_authenticates(app: Flask, runner: FlaskCliRunner,
                                                         users: dict[str, int]) -> None:
    code, out, _ = create(runner, "--username", "QC1", "--name", "Plate reader", "--scope", "write", "--days", "7")
    assert code == 0, out
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("ct_") and " " not in secret
    assert "shown once" in out
    with app.app_context():
        token = authenticate(f"Bearer {secret}")
        assert (token.user.username, token.name, token.scope, token.created_by_id) == ("qc1", "Plate reader", "write",
                                                                                       None)
        entries = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "api_token.create")).all()
        assert [(e.actor_id, e.actor_username, e.via) for e in entries] == [(None, "system", None)]
        assert secret not in (entries[0].new_value or "") and token.secret_hash not in (entries[0].new_value or "")

    default = create(runner, "--username", "qc1", "--name", "LIMS", "--scope", "read")
    assert default[0] == 0
    with app.app_context():
        made = db.session.scalars(select(ApiToken).where(ApiToken.name == "LIMS")).one()
        assert (made.expires_at - made.created_at).days == 90


@pytest.mark.parametrize(("args", "reason"), [
    (("--username", "nobody", "--name", "LIMS", "--scope", "read"), "No user 'nobody'"),
    (("--username", "tech1", "--name", "LIMS", "--scope", "admin"), "scope: Choose read"),
    (("--username", "tech1", "--name", "LIMS", "--scope", "read", "--days", "366"), "days: A token lasts 1 to 365"),
    (("--username", "tech1", "--name", "LIMS", "--scope", "read", "--days", "a year"), "days: A token lasts"),
    (("--username", "tech1", "--name", " ", "--scope", "read"), "name: Name the token"),
])
def test_bad_users_and_values_exit_1_with_the_reason(app: Flask, runner: FlaskCliRunner, users: dict[str, int],
                                                     args: tuple[str, ...], reason: str) -> None:
    code, out, err = create(runner, *args)
    assert code == 1
    assert reason in err
    assert "ct_" not in out
    with app.app_context():
        assert db.session.scalars(select(ApiToken)).all() == []


def test_a_deactivated_user_gets_no_token(app: Flask, runner: FlaskCliRunner, users: dict[str, int]) -> None:
    with app.app_context():
        with audit.action("test.setup", actor=None):
            user("tech2").active = False
        db.session.commit()
    code, _, err = create(runner, "--username", "tech2", "--name", "LIMS", "--scope", "read")
    assert code == 1
    assert "tech2 is deactivated" in err


def test_revoke_token_revokes_the_users_live_tokens_of_that_name(app: Flask, runner: FlaskCliRunner,
                                                                 users: dict[str, int]) -> None:
    secrets = [create(runner, "--username", name, "--name", "LIMS", "--scope", "read")[1].strip().splitlines()[-1]
               for name in ("tech1", "tech1", "tech2")]
    result = runner.invoke(args=["revoke-token", "--username", "tech1", "--name", "LIMS", "--reason", "Replaced"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("API token \u201cLIMS\u201d") == 2
    with app.app_context():
        for secret in secrets[:2]:
            with pytest.raises(TokenRefused):
                authenticate(f"Bearer {secret}")
        assert authenticate(f"Bearer {secrets[2]}").user.username == "tech2"  # another user's: untouched
        reasons = db.session.execute(select(AuditEvent.actor_username, AuditEvent.reason)
                                     .where(AuditEvent.action == "api_token.revoke")).all()
        assert set(reasons) == {("system", "Replaced")}
    again = runner.invoke(args=["revoke-token", "--username", "tech1", "--name", "LIMS"])
    assert again.exit_code == 1
    assert "tech1 has no live token named 'LIMS'" in again.stderr
    nobody = runner.invoke(args=["revoke-token", "--username", "nobody", "--name", "LIMS"])
    assert (nobody.exit_code, "No user 'nobody'" in nobody.stderr) == (1, True)
