"""Personal API tokens in the browser (issue 16, item 1): made by their user, the secret shown
once and kept only as a hash, listed, revoked by their user or an administrator (who lists
everyone's), and the audit trail showing what came through a token."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import or_, select

from lab.audit import VIA
from lab.extensions import db
from lab.models import ApiToken, AuditEvent, Batch
from lab.sent_forms import TOKEN_FIELD, new_token
from lab.services.api_tokens import TokenRefused, authenticate
from lab.services.deviations import report_deviation
from tests.factories import get_batch, page_text, user

pytestmark = pytest.mark.requirements("API-1")

Login = Callable[[str], FlaskClient]
SECRET = re.compile(r'<code class="code token-secret"[^>]*>(ct_[A-Za-z0-9_-]+)</code>')


def make(client: FlaskClient, name: str = "LIMS", scope: str = "write", days: str = "90") -> str:
    """Make a token on the account page; its secret, read from the page answering."""
    response = client.post("/account/tokens", data={"name": name, "scope": scope, "days": days})
    assert response.status_code == 200, page_text(response)
    found = SECRET.search(response.get_data(as_text=True))
    assert found is not None
    return found.group(1)


def token_named(app: Flask, name: str) -> ApiToken:
    with app.app_context():
        token = db.session.scalars(select(ApiToken).where(ApiToken.name == name)).one()
        db.session.expunge(token)
        return token


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_the_secret_is_shown_once_and_kept_only_as_a_hash(app: Flask, users: dict[str, int], login: Login) -> None:
    client = login("tech1")
    page = client.get("/")
    assert 'href="/account/tokens"' in page.get_data(as_text=True)  # in the account menu
    response = client.post("/account/tokens", data={"name": "  LIMS   bridge ", "scope": "write", "days": "30"})
    text = page_text(response)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "it is shown once" in text
    [secret] = SECRET.findall(response.get_data(as_text=True))
    assert secret.startswith("ct_") and len(secret) > 40
    token = token_named(app, "LIMS bridge")
    assert (token.scope, token.prefix, token.user_id) == ("write", secret[:10], users["tech1"])
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest() != secret
    assert timedelta(days=30) - (token.expires_at - token.created_at) < timedelta(seconds=1)
    with app.app_context():  # the database holds no secret, and the trail not even its hash
        assert secret not in {str(v) for v in db.session.execute(select(ApiToken.__table__)).one()}
        entries = db.session.scalars(select(AuditEvent).where(AuditEvent.table_name == "api_tokens")).all()
        assert [(e.action, e.actor_username) for e in entries] == [("api_token.create", "tech1")]
        assert '"secret_hash": "(redacted)"' in (entries[0].new_value or "")
        leaked = select(AuditEvent.id).where(or_(*(column.contains(value) for value in (secret, token.secret_hash)
                                                   for column in (AuditEvent.new_value, AuditEvent.old_value))))
        assert db.session.scalars(leaked).all() == []
        assert authenticate(f"Bearer {secret}").id == token.id

    listing = client.get("/account/tokens")  # listed, never shown again
    body = page_text(listing)
    assert listing.status_code == 200
    assert secret not in body and "LIMS bridge" in body and f"{secret[:10]}…" in body
    assert re.search(r'token-status token-live">live', body)
    assert client.get("/api/v1/batches", headers=bearer(secret)).status_code == 200


def test_a_token_revoked_answers_401_and_shows_who_revoked_it(app: Flask, users: dict[str, int],
                                                              login: Login) -> None:
    client = login("qc1")
    secret = make(client)
    token = token_named(app, "LIMS")
    response = client.post(f"/account/tokens/{token.id}/revoke", data={"reason": "Instrument replaced"})
    assert response.status_code == 302
    body = page_text(client.get("/account/tokens"))
    assert "is revoked" in body and 'token-revoked">revoked' in body and "by Quinn Analyst (qc1)" in body
    answer = client.get("/api/v1/batches", headers=bearer(secret))
    assert answer.status_code == 401
    assert "revoked" in answer.get_json()["detail"]
    with app.app_context():
        with pytest.raises(TokenRefused):
            authenticate(f"Bearer {secret}")
        entries = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "api_token.revoke")).all()
        assert {(e.field, e.actor_username, e.reason) for e in entries} == {
            ("revoked_at", "qc1", "Instrument replaced"), ("revoked_by_id", "qc1", "Instrument replaced")}
    again = client.post(f"/account/tokens/{token.id}/revoke", data={})  # revoked already: said, nothing changes
    assert again.status_code == 422
    assert "was already revoked" in page_text(again)


def test_bad_values_are_refused_with_the_reason(app: Flask, users: dict[str, int], login: Login) -> None:
    client = login("tech1")
    for data, message in (({"name": "LIMS", "scope": "write", "days": "366"}, "A token lasts 1 to 365 days."),
                          ({"name": "LIMS", "scope": "read", "days": "0"}, "A token lasts 1 to 365 days."),
                          ({"name": "LIMS", "scope": "read", "days": "ninety"}, "A token lasts 1 to 365 days."),
                          ({"name": " ", "scope": "read", "days": "9"}, "Name the token after what will use it"),
                          ({"name": "x" * 65, "scope": "read", "days": "9"}, "Use at most 64 characters."),
                          ({"name": "LIMS", "scope": "admin", "days": "9"}, "Not a valid choice")):
        response = client.post("/account/tokens", data=data)
        assert response.status_code == 422, data
        assert message in page_text(response), data
        assert SECRET.search(response.get_data(as_text=True)) is None
    with app.app_context():
        assert db.session.scalars(select(ApiToken)).all() == []


def test_the_form_is_sent_once(app: Flask, users: dict[str, int], login: Login) -> None:
    client = login("tech1")
    form = {"name": "LIMS", "scope": "read", "days": "90", TOKEN_FIELD: new_token()}
    assert client.post("/account/tokens", data=form).status_code == 200
    again = client.post("/account/tokens", data=form)  # a reload of the page showing the secret
    assert again.status_code == 409
    assert "already sent" in page_text(again)
    plain = FlaskClient(app, use_cookies=True)
    plain.set_cookie("session", client.get_cookie("session").value)  # type: ignore[union-attr]
    assert plain.post("/account/tokens", data={"name": "Other", "scope": "read", "days": "9"}).status_code == 400
    app.config["WTF_CSRF_ENABLED"] = True  # as deployed: a form without its CSRF token is refused too
    forged = client.post("/account/tokens", data={"name": "Forged", "scope": "write", "days": "9"})
    assert forged.status_code == 400
    assert "did not come from this CellTrail page" in page_text(forged)
    with app.app_context():
        assert db.session.scalars(select(ApiToken.name)).all() == ["LIMS"]


def test_only_the_owner_or_an_administrator_revokes_a_token(app: Flask, users: dict[str, int], login: Login) -> None:
    client = login("tech1")
    make(client, name="Counter")
    token = token_named(app, "Counter")
    refused = login("tech2").post(f"/account/tokens/{token.id}/revoke", data={"reason": "mine now"})
    assert refused.status_code == 403
    assert token_named(app, "Counter").revoked_at is None
    assert login("tech2").post("/account/tokens/2147483647/revoke", data={}).status_code == 404
    assert login("tech2").get("/admin/tokens").status_code == 403
    assert login("auditor1").post(f"/admin/tokens/{token.id}/revoke", data={"reason": "x"}).status_code == 403
    assert token_named(app, "Counter").revoked_at is None


def test_an_administrator_lists_and_revokes_everyones_tokens(app: Flask, users: dict[str, int], login: Login,
                                                             api_token: Callable[..., dict[str, str]]) -> None:
    api_token("tech1", "read", name="LIMS")
    api_token("qc1", "write", name="Plate reader")
    client = login("admin")
    assert 'href="/admin/tokens"' in client.get("/admin/users").get_data(as_text=True)
    body = page_text(client.get("/admin/tokens"))
    assert "LIMS" in body and "Plate reader" in body and "tech1" in body and "qc1" in body
    only = page_text(client.get("/admin/tokens?user=qc1"))
    assert "Plate reader" in only and "LIMS" not in only
    bad = client.get("/admin/tokens?user=nobody&status=lost")
    assert bad.status_code == 422
    assert "No user 'nobody'" in page_text(bad) and "A token is live, expired or revoked." in page_text(bad)

    token = token_named(app, "LIMS")
    no_reason = client.post(f"/admin/tokens/{token.id}/revoke", data={"reason": ""})
    assert no_reason.status_code == 422
    assert "Say why the token is revoked." in page_text(no_reason)
    done = client.post(f"/admin/tokens/{token.id}/revoke", data={"reason": "Tess left the lab"})
    assert done.status_code == 302
    revoked = page_text(client.get("/admin/tokens?status=revoked"))
    assert "LIMS" in revoked and "Plate reader" not in revoked and "by Ada Admin (admin)" in revoked
    live = page_text(client.get("/admin/tokens?status=live"))
    assert "Plate reader" in live and "LIMS" not in live
    with app.app_context():
        reasons = set(db.session.scalars(select(AuditEvent.reason).where(AuditEvent.action == "api_token.revoke")))
        assert reasons == {"Tess left the lab"}


def test_every_role_makes_its_own_tokens(app: Flask, users: dict[str, int], sites: dict[str, int],
                                         login: Login) -> None:
    for username in ("nurse1", "auditor1", "admin"):
        client = login(username)
        secret = make(client, name=f"{username} script", scope="read")
        with app.app_context():
            assert authenticate(f"Bearer {secret}").user.username == username


def test_the_audit_trail_names_the_token_an_entry_came_through(app: Flask, make_batch: Callable[..., str],
                                                               login: Login) -> None:
    number = make_batch(until="enrichment")
    label = "API token \u201cLIMS\u201d (ct_AbCdEfG\u2026)"
    with app.test_request_context():
        g.setdefault(VIA, label)
        report_deviation(get_batch(number), title="Label smudged", description="Relabelled.", actor=user("tech1"))
        db.session.commit()
        batch_id = db.session.scalar(select(Batch.id).where(Batch.batch_number == number))
        entries = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "deviation.open")).all()
        assert entries and {(e.via, e.batch_id, e.actor_username) for e in entries} == {(label, batch_id, "tech1")}
    client = login("qa1")
    trail = page_text(client.get("/audit?action=deviation.open"))
    assert f"via {label}" in trail
    assert f"via {label}" in page_text(client.get(f"/batches/{number}"))
    csv = client.get("/audit.csv?action=deviation.open").get_data(as_text=True)
    assert f"tech1 via {label}" in csv
    assert " via " not in page_text(client.get("/audit?action=step.record"))  # the pages' entries have none
