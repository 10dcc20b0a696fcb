"""Sessions end on the server (issue 12, item 4): a cookie copied before sign-out, a password
change, deactivation or an administrator's "end sessions" is useless afterwards, and a session
is bound to its sign-in: a copied cookie kept busy is not renewed past the maximum session age."""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lab.extensions import db
from lab.sent_forms import new_token
from lab.services.users import unlock_user, update_user
from tests.factories import PASSWORD, user

pytestmark = pytest.mark.requirements("P11-10d", "P11-300")

Login = Callable[..., FlaskClient]
NEW_PASSWORD = "a-fresh-owner-passphrase-7"


def copy_of(app: Flask, client: FlaskClient) -> FlaskClient:
    """A second client holding the same session cookie, as an attacker who copied it would."""
    cookie = client.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie(cookie.key, cookie.value)
    return thief


def test_a_cookie_copied_before_sign_out_no_longer_works(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("tech1")
    thief = copy_of(app, client)
    assert thief.get("/").status_code == 200
    assert client.post("/logout").status_code == 302
    response = thief.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    assert thief.get("/patients/").status_code == 302


def test_a_password_change_ends_every_other_session(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("tech1")
    thief = copy_of(app, client)
    response = client.post("/account/password", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                                       "confirm": NEW_PASSWORD, "form_token": new_token()})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert client.get("/").status_code == 200  # the session that changed it goes on
    assert thief.get("/").status_code == 302


def test_deactivation_ends_sessions_for_good(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("tech2")
    thief = copy_of(app, client)
    with app.app_context():
        update_user(user("tech2"), role="technician", active=False, actor=user("admin"), reason="Left the lab")
        db.session.commit()
        update_user(user("tech2"), role="technician", active=True, actor=user("admin"), reason="Came back")
        db.session.commit()
    assert thief.get("/").status_code == 302  # reactivation does not revive the old cookie
    assert client.get("/").status_code == 302


def test_unlocking_does_not_revive_the_sessions_of_before_the_lock(app: Flask, login: Login,
                                                                  users: dict[str, int]) -> None:
    client = login("tech1")
    thief = copy_of(app, client)
    with app.app_context():
        from lab import audit
        with audit.action("test.setup", actor=None):
            user("tech1").locked_at = datetime.now(UTC)
        db.session.commit()
        unlock_user(user("tech1"), actor=user("admin"), reason="The owner confirmed the attempts")
        db.session.commit()
    assert thief.get("/").status_code == 302
    assert login("tech1").get("/").status_code == 200


def test_an_administrator_ends_a_users_sessions(app: Flask, login: Login, users: dict[str, int]) -> None:
    victim = app.test_client()
    victim.post("/login", data={"username": "qc1", "password": PASSWORD})
    assert victim.get("/").status_code == 200
    admin = login("admin")
    response = admin.post(f"/admin/users/{users['qc1']}/end-sessions", data={"reason": "Laptop stolen",
                                                                                  "form_token": new_token()})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert victim.get("/").status_code == 302
    assert admin.get("/").status_code == 200
    page = admin.get(f"/admin/users/{users['qc1']}").get_data(as_text=True)
    assert "user.end_sessions" in page and "Laptop stolen" in page


def test_end_sessions_needs_a_reason(app: Flask, login: Login, users: dict[str, int]) -> None:
    victim = app.test_client()
    victim.post("/login", data={"username": "qc1", "password": PASSWORD})
    admin = login("admin")
    response = admin.post(f"/admin/users/{users['qc1']}/end-sessions", data={"reason": " ", "form_token": new_token()})
    assert response.status_code == 422
    assert "Say why this person's sessions end." in html.unescape(response.get_data(as_text=True)).split('id="end-reason-error">')[1]
    assert victim.get("/").status_code == 200


def test_a_copied_cookie_is_not_renewed_past_the_maximum_session_age(app: Flask, login: Login,
                                                                      users: dict[str, int]) -> None:
    client = login("tech1")
    assert client.get("/").status_code == 200
    hours = app.config["SESSION_MAX_HOURS"]
    with client.session_transaction() as session:
        session["signed_in_at"] = (datetime.now(UTC) - timedelta(hours=hours, minutes=1)).timestamp()
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_signing_in_again_after_sign_out_works(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("tech1")
    client.post("/logout")
    assert login("tech1").get("/").status_code == 200
