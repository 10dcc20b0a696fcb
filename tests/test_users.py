"""Users and roles over HTTP: sign-in and sessions, hashed passwords, the admin page, the
audit entries it leaves, and role checks on the server (the auditor reads, never writes)."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.exceptions import ImmutableRecordError
from lab.extensions import db
from lab.models import AuditEvent, Batch, Patient, Signature, StepEntry, User
from lab.sent_forms import new_token
from lab.services.users import update_user
from tests.factories import PASSWORD, entries, form_data, get_batch, step_values, user

pytestmark = pytest.mark.requirements("P11-10d", "A11-12.1")

Login = Callable[..., FlaskClient]
NEW_PATIENT = {"patient_ref": "SLE-03", "initials": "CD", "date_of_birth": "1990-02-03", "weight_kg": "70",
               "indication": "SLE"}
OWN_PASSWORD = "chosen-by-the-owner-5"
NEW_USER = {"username": "newqc", "full_name": "Nora Quality", "role": "qc_analyst", "password": "new-user-pass-1"}


def text_of(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def counts(app: Flask) -> dict[str, int]:
    """Rows in every table: what a refused request must leave unchanged."""
    with app.app_context():
        return {table.name: db.session.scalar(select(func.count()).select_from(table)) or 0
                for table in db.metadata.sorted_tables}


def account(app: Flask, username: str) -> tuple[str, bool]:
    with app.app_context():
        found = user(username)
        return found.role, found.active


def deactivate(app: Flask, username: str) -> None:
    with app.app_context():
        update_user(user(username), role=user(username).role, active=False, actor=user("admin"),
                    reason="Left the lab")
        db.session.commit()


# --- sign-in and sessions --------------------------------------------------------------------

def test_login_and_logout(client: FlaskClient, users: dict[str, int]) -> None:
    form = client.get("/login")
    assert form.status_code == 200
    assert "Sign in" in text_of(form)
    response = client.post("/login", data={"username": "tech1", "password": PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert "Tess Technician" in text_of(page)
    assert client.get("/login").status_code == 302  # already signed in
    out = client.post("/logout")
    assert out.status_code == 302
    assert out.headers["Location"] == "/login"
    assert "You are signed out." in text_of(client.get("/login"))
    assert client.get("/").status_code == 302


@pytest.mark.requirements("ALCOA-ATTRIBUTABLE")
def test_login_records_the_sign_in(app: Flask, client: FlaskClient, users: dict[str, int]) -> None:
    client.post("/login", data={"username": " Tech1 ", "password": PASSWORD})
    assert client.get("/").status_code == 200
    with app.app_context():
        assert user("tech1").last_login_at is not None
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "user.login")).one()
        assert (event.actor_username, event.field, event.row_id) == ("tech1", "last_login_at", str(users["tech1"]))


def test_login_goes_back_to_the_page_asked_for_but_not_off_site(client: FlaskClient, users: dict[str, int]) -> None:
    asked = client.get("/patients/")
    assert asked.status_code == 302
    assert asked.headers["Location"].startswith("/login?next=")
    response = client.post("/login?next=/patients/", data={"username": "tech1", "password": PASSWORD})
    assert response.headers["Location"] == "/patients/"
    client.post("/logout")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        response = client.post("/login", query_string={"next": target},
                               data={"username": "tech1", "password": PASSWORD})
        assert response.status_code == 302
        assert response.headers["Location"] == "/", target
        client.post("/logout")


@pytest.mark.parametrize(("username", "password"), [
    ("tech1", "wrong-password"),
    ("tech1", PASSWORD.upper()),
    ("nobody", PASSWORD),
    ("tech1", " " + PASSWORD),
])
def test_wrong_credentials_are_refused(app: Flask, client: FlaskClient, users: dict[str, int],
                                       username: str, password: str) -> None:
    before = counts(app)
    response = client.post("/login", data={"username": username, "password": password})
    assert response.status_code == 401
    assert "Unknown username, wrong password, or a deactivated or locked account." in text_of(response)
    assert client.get("/").status_code == 302
    after = counts(app)
    assert after.pop("sign_in_attempts") == before.pop("sign_in_attempts") + 1  # only the attempt is kept
    assert after.pop("audit_events") > before.pop("audit_events")
    assert after == before


@pytest.mark.parametrize("data", [{}, {"username": "tech1"}, {"password": PASSWORD},
                                  {"username": "x" * 5000, "password": PASSWORD},
                                  {"username": "tech1", "password": "p" * 5000}])
def test_malformed_login_is_refused(client: FlaskClient, users: dict[str, int], data: dict[str, str]) -> None:
    response = client.post("/login", data=data)
    assert response.status_code == 401
    text = text_of(response)
    assert "This field is required." in text or "Field cannot be longer than" in text
    assert client.get("/").status_code == 302


def test_deactivated_user_cannot_log_in(app: Flask, client: FlaskClient, users: dict[str, int]) -> None:
    deactivate(app, "tech2")
    response = client.post("/login", data={"username": "tech2", "password": PASSWORD})
    assert response.status_code == 401
    assert "deactivated or locked account" in text_of(response)
    assert client.get("/").status_code == 302


def test_deactivated_users_session_ends_on_the_next_request(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("tech1")
    assert client.get("/patients/").status_code == 200
    deactivate(app, "tech1")
    response = client.get("/patients/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    refused = client.post("/patients/new", data=NEW_PATIENT)
    assert refused.status_code == 302
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Patient)) == 0


@pytest.mark.parametrize("url", ["/", "/patients/", "/patients/new", "/patients/SLE-01", "/patients/SLE-01/batches",
                                 "/batches/B-A9999-26-00001-X", "/batches/anything", "/batches/x/steps/receipt",
                                 "/admin/users", "/admin/users/1", "/inventory/", "/scan?code=B", "/no-such-page",
                                 "/logout"])
def test_every_page_needs_a_session(app: Flask, client: FlaskClient, users: dict[str, int], url: str) -> None:
    before = counts(app)
    for method in (client.get, client.post):
        response = method(url)
        assert response.status_code == 302, (method, url)
        assert response.headers["Location"].startswith("/login"), url
    assert counts(app) == before


def test_login_page_and_static_files_need_no_session(client: FlaskClient) -> None:
    assert client.get("/login").status_code == 200
    for name in ("celltrail.css", "celltrail.js"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        response.close()


@pytest.mark.requirements("P11-300")
def test_passwords_are_stored_hashed(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("admin")
    assert client.post("/admin/users", data=NEW_USER).status_code == 302
    with app.app_context():
        stored = user("newqc").password_hash
    assert stored != NEW_USER["password"]
    assert NEW_USER["password"] not in stored
    assert stored.startswith(("scrypt:", "pbkdf2:"))
    with app.app_context():
        other = User(username="x", full_name="x", role="auditor")
        other.set_password(NEW_USER["password"])
    assert other.password_hash != stored  # salted: the same password hashes differently
    assert other.check_password(NEW_USER["password"])


# --- role checks on the server ---------------------------------------------------------------

@pytest.mark.requirements("P11-10g")
@pytest.mark.parametrize("username", ["tech1", "super1", "qc1", "qa1", "auditor1"])
def test_only_admin_reaches_user_administration(app: Flask, login: Login, users: dict[str, int],
                                                username: str) -> None:
    client = login(username)
    assert 'href="/admin/users"' not in client.get("/").get_data(as_text=True)
    before = counts(app)
    for response in (
        client.get("/admin/users"),
        client.get(f"/admin/users/{users['tech2']}"),
        client.post("/admin/users", data={**NEW_USER, "role": "admin"}),
        client.post(f"/admin/users/{users[username]}", data={"role": "admin", "status": "active",
                                                              "reason": "Promote myself"}),
        client.post(f"/admin/users/{users['admin']}", data={"role": "admin", "status": "inactive",
                                                             "reason": "Lock out the administrator"}),
    ):
        assert response.status_code == 403
        assert "Only an administrator may manage user accounts" in text_of(response)
    assert counts(app) == before
    assert account(app, username)[0] != "admin"
    assert account(app, "admin") == ("admin", True)


def test_admin_sees_the_users_link_and_page(login: Login, users: dict[str, int]) -> None:
    client = login("admin")
    assert 'href="/admin/users"' in client.get("/").get_data(as_text=True)
    page = client.get("/admin/users")
    assert page.status_code == 200
    text = text_of(page)
    for name in ("tech1", "Audrey Auditor", "QA officer", "Accounts are never deleted"):
        assert name in text


# --- the admin page --------------------------------------------------------------------------

def test_admin_adds_a_user_who_can_then_sign_in(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("admin")
    response = client.post("/admin/users", data={**NEW_USER, "username": "NewQC", "full_name": "  Nora   Quality "})
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/users"
    assert "Account newqc (QC analyst) created." in text_of(client.get("/admin/users"))
    with app.app_context():
        created = user("newqc")
        assert (created.full_name, created.role, created.active) == ("Nora Quality", "qc_analyst", True)
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "user.create")).one()
        assert (event.actor_username, event.actor_id) == ("admin", user("admin").id)
        assert (event.table_name, event.row_id, event.operation) == ("users", str(created.id), "insert")
        content = json.loads(event.new_value or "{}")
        assert content["username"] == "newqc"
        assert content["role"] == "qc_analyst"
        assert content["password_hash"] == "(redacted)"
        new_id = created.id
    history = text_of(client.get(f"/admin/users/{new_id}"))
    assert "user.create" in history
    signed_in = login("newqc", NEW_USER["password"])
    assert signed_in.get("/").headers["Location"] == "/account/password"  # the admin's password is temporary
    signed_in.post("/account/password", data={"current_password": NEW_USER["password"],
                                              "new_password": OWN_PASSWORD, "confirm": OWN_PASSWORD,
                                              "form_token": new_token()})
    page = signed_in.get("/")
    assert page.status_code == 200
    assert "Nora Quality · QC analyst" in text_of(page)


def test_admin_changes_a_role(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("admin")
    response = client.post(f"/admin/users/{users['tech2']}",
                           data={"role": "supervisor", "status": "active", "reason": "Promoted to shift lead"})
    assert response.status_code == 302
    assert "Account tech2 updated." in text_of(client.get("/admin/users"))
    assert account(app, "tech2") == ("supervisor", True)
    with app.app_context():
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "user.update")).one()
        assert (event.table_name, event.row_id, event.field) == ("users", str(users["tech2"]), "role")
        assert (event.old_value, event.new_value) == ("technician", "supervisor")
        assert (event.actor_username, event.reason) == ("admin", "Promoted to shift lead")
    history = text_of(client.get(f"/admin/users/{users['tech2']}"))
    assert "Promoted to shift lead" in history
    assert "technician" in history and "supervisor" in history
    # the new role takes effect on the server at once
    promoted = login("tech2")
    assert "Theo Second · Supervisor" in text_of(promoted.get("/"))


def test_admin_deactivates_with_a_reason(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("admin")
    target = f"/admin/users/{users['tech2']}"
    before = counts(app)
    for reason in ("", "   "):
        refused = client.post(target, data={"role": "technician", "status": "inactive", "reason": reason})
        assert refused.status_code == 422
        assert "This field is required." in text_of(refused)
    missing = client.post(target, data={"role": "technician", "status": "inactive"})
    assert missing.status_code == 422
    assert counts(app) == before
    assert account(app, "tech2") == ("technician", True)

    done = client.post(target, data={"role": "technician", "status": "inactive", "reason": "Left the company"})
    assert done.status_code == 302
    assert account(app, "tech2") == ("technician", False)
    with app.app_context():
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "user.update")).one()
        assert (event.field, event.old_value, event.new_value) == ("active", "true", "false")
        assert (event.actor_username, event.reason) == ("admin", "Left the company")
    assert "deactivated" in text_of(client.get("/admin/users"))
    client.post("/logout")
    assert client.post("/login", data={"username": "tech2", "password": PASSWORD}).status_code == 401


def test_admin_update_refuses_bad_input(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("admin")
    target = f"/admin/users/{users['tech2']}"
    before = counts(app)
    for data, message in [
        ({"role": "technician", "status": "active", "reason": "No change"}, "The role and status are already as given."),
        ({"role": "overlord", "status": "active", "reason": "Typo"}, "Not a valid choice"),
        ({"role": "technician", "status": "deleted", "reason": "Typo"}, "Not a valid choice"),
        ({"role": "supervisor", "status": "active", "reason": "r" * 501}, "Field cannot be longer than 500 characters."),
    ]:
        response = client.post(target, data=data)
        assert response.status_code == 422, data
        assert message in text_of(response), data
    assert counts(app) == before
    assert client.post("/admin/users/999999", data={"role": "admin", "status": "active", "reason": "x"}).status_code \
        == 404
    assert client.get("/admin/users/not-a-number").status_code == 404


@pytest.mark.parametrize("data", [
    {"role": "admin", "status": "inactive", "reason": "Tidying up"},
    {"role": "auditor", "status": "active", "reason": "Stepping down"},
    {"role": "technician", "status": "inactive", "reason": "Both"},
])
def test_admin_cannot_deactivate_or_demote_themselves(app: Flask, login: Login, users: dict[str, int],
                                                      data: dict[str, str]) -> None:
    client = login("admin")
    before = counts(app)
    response = client.post(f"/admin/users/{users['admin']}", data=data)
    assert response.status_code == 403
    assert "You cannot change your own role or deactivate yourself" in text_of(response)
    assert counts(app) == before
    assert account(app, "admin") == ("admin", True)
    assert client.get("/admin/users").status_code == 200  # still signed in, still admin


def test_another_admin_can_demote_an_admin(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("admin")
    assert client.post("/admin/users", data={**NEW_USER, "username": "admin2", "role": "admin"}).status_code == 302
    second = login("admin2", NEW_USER["password"])
    second.post("/account/password", data={"current_password": NEW_USER["password"],
                                           "new_password": OWN_PASSWORD, "confirm": OWN_PASSWORD,
                                              "form_token": new_token()})
    response = second.post(f"/admin/users/{users['admin']}",
                           data={"role": "auditor", "status": "active", "reason": "Handover to admin2"})
    assert response.status_code == 302
    assert account(app, "admin") == ("auditor", True)


@pytest.mark.requirements("P11-100")
def test_users_are_never_deleted(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("admin")
    before = counts(app)
    target = users["tech2"]
    assert client.delete(f"/admin/users/{target}").status_code == 405
    assert client.delete("/admin/users").status_code == 405
    for url in (f"/admin/users/{target}/delete", f"/admin/users/{target}/remove", "/admin/users/delete"):
        assert client.post(url, data={"reason": "gone"}).status_code in (404, 405), url
    assert counts(app) == before
    with app.app_context():
        db.session.delete(user("tech2"))
        with pytest.raises(ImmutableRecordError, match="never deleted"):
            db.session.flush()
        db.session.rollback()
        assert user("tech2").active


def test_password_hash_never_reaches_the_audit_trail(app: Flask, login: Login, users: dict[str, int]) -> None:
    client = login("admin")
    client.post("/admin/users", data=NEW_USER)
    with app.app_context():
        new_id = user("newqc").id
    client.post(f"/admin/users/{new_id}", data={"role": "auditor", "status": "inactive", "reason": "Test account"})
    with app.app_context():
        hashes = [u.password_hash for u in db.session.scalars(select(User))]
        trail = db.session.scalars(select(AuditEvent)).all()
        assert {e.action for e in trail} >= {"test.setup", "user.create", "user.update", "user.login"}
        for event in trail:
            for text in (event.old_value, event.new_value, event.reason):
                assert not any(h in (text or "") for h in hashes), event.action
                assert NEW_USER["password"] not in (text or "")
        for event in trail:
            if event.table_name == "users" and event.operation == "insert":
                assert json.loads(event.new_value or "{}")["password_hash"] == "(redacted)"
    page = client.get(f"/admin/users/{new_id}").get_data(as_text=True)
    assert not any(h in page for h in hashes)


LONG = "x" * 5000


@pytest.mark.parametrize(("changes", "message"), [
    ({"username": ""}, "This field is required."),
    ({"username": "   "}, "This field is required."),
    ({"username": "Bad Name!"}, "Use 2 to 64 lower-case letters, digits, dots, hyphens or underscores"),
    ({"username": "1abc"}, "starting with a letter"),
    ({"username": "a"}, "Use 2 to 64 lower-case letters"),
    ({"username": "tech1"}, "The username 'tech1' is taken (users are never deleted)."),
    ({"username": "TECH1"}, "The username 'tech1' is taken"),
    ({"username": LONG}, "Field cannot be longer than 64 characters."),
    ({"full_name": LONG}, "Field cannot be longer than 128 characters."),
    ({"full_name": ""}, "This field is required."),
    ({"full_name": "X"}, "Enter the full name printed with this person's signatures"),
    ({"role": "superuser"}, "Not a valid choice"),
    ({"role": ""}, "Not a valid choice"),
    ({"password": ""}, "This field is required."),
    ({"password": "short"}, "Use at least 12 characters."),
    ({"password": LONG}, "Field cannot be longer than 256 characters."),
])
def test_admin_form_refuses_bad_input(app: Flask, login: Login, users: dict[str, int], changes: dict[str, str], message: str) -> None:
    client = login("admin")
    before = counts(app)
    response = client.post("/admin/users", data={**NEW_USER, **changes})
    assert response.status_code == 422
    text = text_of(response)
    assert message in text
    assert "created." not in text
    assert counts(app) == before


# --- the auditor reads everything it can see, and writes nothing ------------------------------

@pytest.mark.requirements("P11-10g")
def test_auditor_reads_but_never_writes(app: Flask, make_batch: Callable[..., str], login: Login) -> None:
    scheduled = make_batch(until="receipt", ref="SLE-01")
    awaiting = make_batch(until="enrichment", ref="SLE-02", verify=False)
    with app.app_context():
        batch = get_batch(scheduled)
        version = batch.version
        receipt_values = step_values("receipt", when=datetime.now(UTC), batch=batch)
        receipt = entries(awaiting, "receipt")[0].id
        awaiting_version = get_batch(awaiting).version
    client = login("auditor1")
    for url in ("/", "/patients/", "/patients/SLE-01", "/patients/SLE-02", f"/batches/{scheduled}",
                f"/batches/{awaiting}", "/inventory/"):
        response = client.get(url)
        assert response.status_code == 200, url
    assert scheduled in text_of(client.get("/"))
    assert client.get(f"/scan?code={scheduled}").headers["Location"] == f"/batches/{scheduled}"
    before = counts(app)
    receipt_form = form_data(receipt_values, batch_version=version)
    writes = [
        ("/patients/new", NEW_PATIENT, "Only a lab technician or supervisor may register a patient"),
        ("/patients/SLE-01/batches", {}, "Only a lab technician or supervisor may start a batch"),
        (f"/batches/{scheduled}/steps/receipt", receipt_form, "Only a lab technician may record"),
        (f"/batches/{awaiting}/entries/{receipt}/verify", {"password": PASSWORD, "batch_version": awaiting_version},
         "may verify"),
        (f"/batches/{awaiting}/entries/{receipt}/fields/volume_ml/correct",
         {"value": "181", "reason": "Typo", "batch_version": awaiting_version}, "Only a lab technician may correct"),
        ("/admin/users", NEW_USER, "Only an administrator may manage user accounts"),
    ]
    for url, data, message in writes:
        response = client.post(url, data=data)
        assert response.status_code == 403, url
        text = text_of(response)
        assert message in text, url
        assert "you are signed in as auditor" in text, url
    for url in ("/patients/new", f"/batches/{scheduled}/steps/receipt", "/admin/users"):
        assert client.get(url).status_code == 403, url
    assert counts(app) == before
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Patient)) == 2
        assert db.session.scalar(select(func.count()).select_from(Batch)) == 2
        assert not get_batch(scheduled).entries
        assert db.session.scalar(select(func.count()).select_from(StepEntry)) == 1
        assert db.session.scalar(select(func.count()).select_from(Signature).where(Signature.meaning == "verified")) == 0
        assert db.session.scalar(select(func.count()).select_from(User).where(User.username == "newqc")) == 0
    # the same requests from a technician go through: the auditor was refused for its role alone
    technician = login("tech1")
    assert technician.post("/patients/new", data=NEW_PATIENT).status_code == 302
    assert technician.post(f"/batches/{scheduled}/steps/receipt", data=receipt_form).status_code == 302
    with app.app_context():
        assert [e.step_key for e in get_batch(scheduled).entries] == ["receipt"]


def test_auditor_page_shows_no_write_buttons(make_batch: Callable[..., str], login: Login) -> None:
    number = make_batch(until="receipt")
    client = login("auditor1")
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    assert f'action="/batches/{number}/steps/' not in page
    assert f'href="/batches/{number}/steps/' not in page


@pytest.mark.parametrize("column", ["username", "full_name"])
def test_a_users_username_and_full_name_never_change(app: Flask, users: dict[str, int], column: str) -> None:
    """Records and the pages kept per batch mark show them as they were: a change is refused
    before anything is written."""
    with app.app_context():
        before = getattr(user("tech1"), column)
        with pytest.raises(ImmutableRecordError):
            setattr(user("tech1"), column, "someone-else")
        db.session.rollback()
        assert getattr(user("tech1"), column) == before
