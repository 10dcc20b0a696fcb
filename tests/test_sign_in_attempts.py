"""Sign-in attempts (issue 12, items 2 and 3): every failure is recorded and audited, an
account locks after a run of failures (until an administrator unlocks it or the lockout
time passes), a client address is limited, and every refusal costs one password check.
The storm test races real connections (PostgreSQL with TEST_DATABASE_URL, else a SQLite file).
"""

from __future__ import annotations

import html
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import AuditEvent, User, utcnow
from lab.models.users import SignInAttempt
from lab.services import sign_in
from lab.services.users import unlock_user, update_user
from tests.conftest import ROLES
from tests.factories import PASSWORD, PASSWORD_HASH, user

GENERIC = "Unknown username, wrong password, or a deactivated or locked account."

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("P11-300d")]


def text_of(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def post(client: FlaskClient, username: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.post("/login", data={"username": username, "password": password},
                       environ_base={"REMOTE_ADDR": address})


def attempts(app: Flask) -> list[tuple[str, str, str]]:
    """(username tried, address, reason) of every recorded failed sign-in, oldest first."""
    with app.app_context():
        rows = db.session.scalars(select(SignInAttempt).order_by(SignInAttempt.id)).all()
        return [(row.username, row.address, row.reason) for row in rows]


def test_a_failed_sign_in_is_recorded_and_in_the_audit_trail(app: Flask, client: FlaskClient, login,
                                                             users: dict[str, int]) -> None:
    response = post(client, "tech1", "wrong-password")
    assert response.status_code == 401
    assert GENERIC in text_of(response)
    post(client, "nobody", PASSWORD, "10.0.0.2")
    assert attempts(app) == [("tech1", "10.0.0.1", "wrong password"), ("nobody", "10.0.0.2", "unknown username")]
    with app.app_context():
        [failed] = db.session.scalars(select(SignInAttempt).where(SignInAttempt.username == "tech1")).all()
        assert failed.user_id == users["tech1"] and failed.attempted_at is not None
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.table_name == "sign_in_attempts")).all()
        assert [e.action for e in events] == ["user.sign_in_refused"] * 2
        assert "10.0.0.1" in events[0].new_value and "wrong password" in events[0].new_value
    trail = text_of(login("admin").get("/audit"))
    assert "user.sign_in_refused" in trail


def test_the_nth_failure_in_a_row_locks_until_an_admin_unlocks(app: Flask, client: FlaskClient,
                                                               users: dict[str, int]) -> None:
    limit = app.config["LOGIN_LOCKOUT_AFTER"]
    for _ in range(limit):
        assert post(client, "tech2", "wrong-password").status_code == 401
    response = post(client, "tech2", PASSWORD)
    assert response.status_code == 401
    text = text_of(response)
    assert GENERIC in text
    assert (f"After {limit} failed sign-ins in a row an account locks for {app.config['LOGIN_LOCKOUT_MINUTES']} "
            "minutes or until an administrator unlocks it.") in text
    assert [reason for _, _, reason in attempts(app)] == ["wrong password"] * limit + ["account locked"]
    with app.app_context():
        assert user("tech2").locked_at is not None
        locked = db.session.scalars(select(AuditEvent).where(AuditEvent.table_name == "users",
                                                             AuditEvent.field == "locked_at")).one()
        assert locked.action == "user.sign_in_refused"
    with app.app_context():
        unlock_user(user("tech2"), actor=user("admin"), reason="Owner mistyped.")
        db.session.commit()
    assert post(client, "tech2", PASSWORD).status_code == 302


def test_a_lockout_ends_after_the_configured_time(app: Flask, client: FlaskClient, users: dict[str, int]) -> None:
    for _ in range(app.config["LOGIN_LOCKOUT_AFTER"]):
        post(client, "tech2", "wrong-password")
    with app.app_context():
        tech2 = user("tech2")
        assert tech2.locked_until is not None
        with audit.action("test.time_passes", actor=None):
            tech2.locked_until = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert post(client, "tech2", PASSWORD).status_code == 302
    with app.app_context():
        tech2 = user("tech2")
        assert (tech2.locked_at, tech2.locked_until, tech2.failed_sign_ins) == (None, None, 0)


def test_a_successful_sign_in_ends_the_run_of_failures(app: Flask, client: FlaskClient,
                                                       users: dict[str, int]) -> None:
    limit = app.config["LOGIN_LOCKOUT_AFTER"]
    for _ in range(limit - 1):
        post(client, "tech1", "wrong-password")
    assert post(client, "tech1", PASSWORD).status_code == 302
    client.post("/logout")
    with app.app_context():
        assert user("tech1").failed_sign_ins == 0
    for _ in range(limit - 1):
        post(client, "tech1", "wrong-password")
    assert post(client, "tech1", PASSWORD).status_code == 302


def test_failures_from_one_address_are_limited(app: Flask, client: FlaskClient, users: dict[str, int]) -> None:
    app.config.update(LOGIN_ADDRESS_LIMIT=3, LOGIN_ADDRESS_WINDOW_MINUTES=10)
    for name in ("tech1", "tech2", "nobody"):
        assert post(client, name, "wrong-password").status_code == 401
    response = post(client, "qa1", PASSWORD)
    assert response.status_code == 429
    assert "Too many failed sign-ins from your address: try again in 10 minutes." in text_of(response)
    assert attempts(app)[-1] == ("qa1", "10.0.0.1", "too many from this address")
    assert post(client, "qa1", PASSWORD, address="10.0.0.9").status_code == 302


@pytest.mark.parametrize("case", ["unknown", "deactivated", "locked", "wrong", "right"])
def test_every_sign_in_checks_one_password_hash(app: Flask, client: FlaskClient, users: dict[str, int],
                                                monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Unknown, deactivated, locked and wrong all take one hash check of the same cost, so
    response times do not tell which usernames exist."""
    if case == "deactivated":
        with app.app_context():
            update_user(user("tech2"), role="technician", active=False, actor=user("admin"), reason="Left")
            db.session.commit()
    if case == "locked":
        for _ in range(app.config["LOGIN_LOCKOUT_AFTER"]):
            post(client, "tech2", "wrong-password")
    checked: list[str] = []
    real = sign_in.check_password_hash

    def counting(stored: str, password: str) -> bool:
        checked.append(stored.split("$", 1)[0])
        return real(stored, password)

    monkeypatch.setattr(sign_in, "check_password_hash", counting)
    username, password = {"unknown": ("nobody", PASSWORD), "deactivated": ("tech2", PASSWORD),
                          "locked": ("tech2", PASSWORD), "wrong": ("tech1", "wrong-password"),
                          "right": ("tech1", PASSWORD)}[case]
    response = post(client, username, password)
    assert checked == [app.config["PASSWORD_HASH_METHOD"]]
    assert response.status_code == (302 if case == "right" else 401)
    if case != "right":
        assert GENERIC in text_of(response)


@pytest.mark.parametrize("password", [
    "x", "ä" * 256, "密码" * 100, "🔑" * 200, " " * 50, "a\tb\nc", "\x00" * 10, "correct-horse-42\x00",
    "' OR 1=1 --", "%00%0a",
])
def test_passwords_of_every_length_and_alphabet_are_refused_cleanly(app: Flask, client: FlaskClient,
                                                                    users: dict[str, int], password: str) -> None:
    with app.app_context():
        before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    response = post(client, "tech1", password)
    assert response.status_code in (400, 401)
    assert client.get("/").status_code == 302
    with app.app_context():
        recorded = db.session.scalar(select(func.count()).select_from(SignInAttempt))
        assert recorded <= 1
        assert user("tech1").last_login_at is None
        tables = set(db.session.scalars(select(AuditEvent.table_name).offset(before)))
        assert tables <= {"sign_in_attempts", "users"}


@pytest.mark.parametrize("username", ["tech1\x00", "\x00", "te\x01ch1", "x" * 64, "tëch1", "tech1 ; drop"])
def test_odd_usernames_are_refused_and_recorded_safely(app: Flask, client: FlaskClient, users: dict[str, int],
                                                       username: str) -> None:
    response = post(client, username, PASSWORD)
    assert response.status_code in (400, 401)
    for tried, _, _ in attempts(app):
        assert tried.isprintable() and len(tried) <= 64


def test_a_megabyte_password_is_refused_quickly_without_hashing(app: Flask, client: FlaskClient,
                                                                users: dict[str, int]) -> None:
    started = time.monotonic()
    for size in (1024 * 1024, 1000 * 1000, 4096):
        response = post(client, "tech1", "p" * size)
        assert response.status_code in (401, 413), size
        assert "longer than" in text_of(response) or "Too large" in text_of(response)
    assert time.monotonic() - started < 2
    assert attempts(app) == []


def test_a_storm_of_wrong_passwords_locks_the_account_exactly_at_the_limit(shared_app: Flask) -> None:
    """20 simultaneous wrong passwords, each on its own connection: exactly the limit counts
    and locks; the rest find the account locked. Nothing but the attempts is written."""
    with shared_app.app_context():
        with audit.action("test.setup", actor=None):
            db.session.add_all(User(username=name, full_name=full, role=role, password_hash=PASSWORD_HASH)
                               for name, (role, full) in ROLES.items())
        db.session.commit()
    limit = shared_app.config["LOGIN_LOCKOUT_AFTER"]
    threads_count = 20
    barrier = threading.Barrier(threads_count)
    statuses: list[int] = []

    def attempt(number: int) -> None:
        client = shared_app.test_client()
        barrier.wait()
        statuses.append(post(client, "tech1", f"wrong-{number}", address=f"10.1.0.{number}").status_code)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [401] * threads_count
    reasons = [reason for _, _, reason in attempts(shared_app)]
    assert len(reasons) == threads_count
    assert reasons.count("wrong password") == limit
    assert reasons.count("account locked") == threads_count - limit
    with shared_app.app_context():
        assert user("tech1").locked_at is not None
    assert post(shared_app.test_client(), "tech1", PASSWORD, address="10.2.0.1").status_code == 401
