"""Fixtures: an app per test on SQLite (in memory) or, with TEST_DATABASE_URL, on PostgreSQL.

On PostgreSQL the schema is dropped and rebuilt by the migrations once per run, whatever
an earlier run left behind, and every table is emptied before each test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from flask_migrate import upgrade
from sqlalchemy import text
from sqlalchemy.engine import make_url
from werkzeug.datastructures import MultiDict

from config import TestingConfig, database_url
from lab import audit, create_app
from lab.backup import scratch_database
from lab.demo import Recorder
from lab.extensions import db
from lab.models import Site, User
from lab.sent_forms import TOKEN_FIELD, new_token
from lab.services.api_tokens import create_token
from lab.services.batches import start_batch
from lab.services.patients import PatientInput, register_patient
from lab.services.processes import approve_shipped
from lab.services.progress import definition_for
from lab.services.signatures import Credentials
from tests.factories import PASSWORD, PASSWORD_HASH, add_inventory, form_data, get_batch, page_text, step_values, user
from tests.quality import record_results, release, state
from tests.routes import every_kind_of_record

pytest_plugins = ["tests.validation_plugin"]  # $CELLTRAIL_ARTIFACTS/test-results.json, for validation-report
ON_POSTGRES = bool(os.environ.get("TEST_DATABASE_URL"))
ROLES = {
    "tech1": ("technician", "Tess Technician"),
    "tech2": ("technician", "Theo Second"),
    "super1": ("supervisor", "Sam Supervisor"),
    "qc1": ("qc_analyst", "Quinn Analyst"),
    "qa1": ("qa_officer", "Quentin Assurance"),
    "auditor1": ("auditor", "Audrey Auditor"),
    "admin": ("admin", "Ada Admin"),
}


@pytest.fixture(scope="session")
def _schema() -> None:
    if not ON_POSTGRES:
        return
    app = create_app(TestingConfig)
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        upgrade()
        db.engine.dispose()


@pytest.fixture
def empty_database(tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database that is not the session's test schema. On PostgreSQL it
    is named after the test database, so runs on different test databases never collide."""
    if not ON_POSTGRES:
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
        return
    server_url = make_url(database_url(os.environ["TEST_DATABASE_URL"]) or "")
    with scratch_database(server_url.set(database=f"{server_url.database}_empty")) as url:
        yield url


@pytest.fixture
def shared_app(app: Flask, tmp_path: Path) -> Iterator[Flask]:
    """An app whose sessions use separate connections, for tests that race them: the
    PostgreSQL test app, or an app on a SQLite file (in-memory SQLite is one connection)."""
    if ON_POSTGRES:
        yield app
        return

    class FileConfig(TestingConfig):
        SQLALCHEMY_DATABASE_URI = f"sqlite:///{tmp_path / 'shared.sqlite'}"

    file_app = create_app(FileConfig)
    with file_app.app_context():
        db.create_all()
    yield file_app
    with file_app.app_context():
        db.engine.dispose()


def empty_tables(app: Flask) -> None:
    """Give ``app`` empty tables: created on SQLite (in memory, new per app), emptied on PostgreSQL."""
    with app.app_context():
        if ON_POSTGRES:
            tables = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
            # The audit trail's trigger refuses TRUNCATE; a superuser's replica role skips triggers.
            db.session.execute(text("SET LOCAL session_replication_role = replica"))
            db.session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            db.session.commit()
        else:
            db.create_all()


class PageClient(FlaskClient):
    """Sends a form as its page would: with a fresh one-time token unless the body has one."""

    def post(self, *args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data")
        if "json" in kwargs or str(args[0] if args else kwargs.get("path", "")).startswith("/api/"):
            return super().post(*args, **kwargs)  # an API call: no form, no form token
        if data is None or (isinstance(data, dict) and TOKEN_FIELD not in data):
            body = data.copy() if isinstance(data, MultiDict) else dict(data or {})
            body[TOKEN_FIELD] = new_token()
            kwargs["data"] = body
        return super().post(*args, **kwargs)


# Every app the tests make (the per-test app, shared_app, a module's seeded demo) posts as its pages do;
# tests of a form without its token use a plain FlaskClient.
Flask.test_client_class = PageClient


@pytest.fixture
def app(_schema: None) -> Iterator[Flask]:
    app = create_app(TestingConfig)
    empty_tables(app)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def ctx(app: Flask) -> Iterator[None]:
    """An application context for tests that call services directly."""
    with app.app_context():
        yield
        db.session.rollback()


@pytest.fixture
def users(app: Flask) -> dict[str, int]:
    """One user per role (plus a second technician), all with password PASSWORD; name -> id."""
    with app.app_context():
        with audit.action("test.setup", actor=None):
            rows = [User(username=name, full_name=full, role=role, password_hash=PASSWORD_HASH)
                    for name, (role, full) in ROLES.items()]
            db.session.add_all(rows)
        db.session.commit()
        approve_processes()
        return {u.username: u.id for u in rows}


def approve_processes(keys: tuple[str, ...] = ("cd19-car-t",)) -> None:
    """What a lab does once on installation (approve-shipped-processes), in an app context: the
    newest definition of ``keys`` in WORKFLOW_DIR approved by qa1, effective a year back (batches
    are started in the past), even over a newer version approved before (a version 1 batch)."""
    approve_shipped(actor=user("qa1"), credentials=Credentials(PASSWORD, "qa1"),
                    now=datetime.now(UTC) - timedelta(days=365), keys=keys, even_older=True)
    db.session.commit()


def setup_lab(app: Flask) -> None:
    """The users of ROLES, the processes approved and the materials in stock, in ``app`` (for an
    app other than the per-test one, such as ``shared_app``)."""
    with app.app_context():
        with audit.action("test.setup", actor=None):
            db.session.add_all(User(username=name, full_name=full, role=role, password_hash=PASSWORD_HASH)
                               for name, (role, full) in ROLES.items())
            add_inventory(datetime.now(UTC).date(), PASSWORD)
        db.session.commit()
        approve_processes()


@pytest.fixture
def inventory(app: Flask, users: dict[str, int]) -> None:
    with app.app_context():
        with audit.action("test.setup", actor=None):
            add_inventory(datetime.now(UTC).date(), PASSWORD)
        db.session.commit()


@pytest.fixture
def login(client: FlaskClient) -> Callable[[str], FlaskClient]:
    def _login(username: str, password: str = PASSWORD) -> FlaskClient:
        client.post("/logout")
        response = client.post("/login", data={"username": username, "password": password})
        assert response.status_code == 302, response.get_data(as_text=True)
        return client
    return _login


@pytest.fixture
def never_500(app: Flask) -> Iterator[None]:
    """Fails the test if any answer it got was a server error: a module of bad-input tests
    uses it for every test (``pytestmark = pytest.mark.usefixtures("never_500")``)."""
    statuses: list[int] = []

    @app.after_request
    def _note(response: Any) -> Any:
        statuses.append(response.status_code)
        return response

    yield
    assert all(status < 500 for status in statuses), statuses


@pytest.fixture
def api_token(app: Flask, users: dict[str, int]) -> Callable[..., dict[str, str]]:
    """Make a live API token (as its user would) and return the request headers that carry it:
    ``api_token("qc1", "write")``."""
    def _token(username: str = "tech1", scope: str = "read", name: str = "test client",
               days: int = 30) -> dict[str, str]:
        with app.app_context():
            _, secret = create_token(user(username), name, scope, days, actor=user(username))
            db.session.commit()
        return {"Authorization": f"Bearer {secret}"}
    return _token


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def make_batch(app: Flask, users: dict[str, int], inventory: None) -> Callable[..., str]:
    """Register a patient, start a batch and record its steps up to (not including) ``until``.

    tech1 records every step at realistic past times (so time windows hold) and tech2
    verifies, unless ``verify`` is False. Returns the batch number.
    """
    def _make_batch(until: str | None = None, *, ref: str = "SLE-01", weight_kg: float = 58.0,
                    verify: bool = True, days_ago: int = 14, process: str | None = None, expansion: tuple[dict[str, str], ...] = (
                        {"culture_day": "6", "viable_cells": "1.5e9", "viability_pct": "92"},)) -> str:
        with app.app_context():
            now = datetime.now(UTC)
            start = now - timedelta(days=days_ago)
            patient = register_patient(PatientInput(ref, "AB", date(1980, 5, 1), weight_kg, "SLE"),
                                       actor=user("super1"), now=start)
            approve_processes()  # a test may have pointed WORKFLOW_DIR at version 1
            batch = start_batch(patient, actor=user("super1"), now=start, process_key=process)
            recorder = Recorder(user("tech1"), user("tech2"), PASSWORD, now)
            skip = frozenset(s.key for s in definition_for(batch).steps) if not verify else frozenset()
            recorder.run(batch, start, until=until, expansion=expansion, unverified=skip)
            db.session.commit()
            return batch.batch_number
    return _make_batch


@pytest.fixture
def in_review(app: Flask, make_batch: Callable[..., str]) -> str:
    """A batch with every release result recorded, waiting for QA's review."""
    number = make_batch()
    record_results(app, number)
    assert state(app, number) == "qa_review"
    return number


@pytest.fixture
def released(app: Flask, make_batch: Callable[..., str]) -> str:
    """A batch released on the demo's results: sterility "no growth to date" (interim)."""
    number = make_batch()
    record_results(app, number)
    release(app, number)
    return number


#: The treatment sites of ``sites``, and their clinicians (password PASSWORD): code -> (name, clinicians).
SITES = {
    "NUH-HEM": ("Northern University Hospital, Haematology", {"nurse1": "Nora Nurse", "doc1": "Dana Doctor"}),
    "SGH-ONC": ("St George's Hospital, Oncology", {"nurse3": "Olga Other"}),
}


@pytest.fixture
def sites(app: Flask, users: dict[str, int]) -> dict[str, int]:
    """Two treatment sites, two clinicians at NUH-HEM (nurse1, doc1) and one at SGH-ONC (nurse3);
    adds the clinicians to ``users`` and returns site code -> id."""
    with app.app_context():
        with audit.action("test.setup", actor=None):
            made = {}
            for code, (name, clinicians) in SITES.items():
                site = Site(code=code, name=name, address=f"{name}\n1 Hospital Road", contact="Ward desk +44 20 0000 0000")
                db.session.add(site)
                db.session.flush()
                made[code] = site.id
                for username, full_name in clinicians.items():
                    clinician = User(username=username, full_name=full_name, role="clinician",
                                     password_hash=PASSWORD_HASH, site_id=site.id)
                    db.session.add(clinician)
                    db.session.flush()
                    users[username] = clinician.id
        db.session.commit()
    return made


@pytest.fixture
def two_bag_batch(app: Flask, make_batch: Callable[..., str], login: Callable[[str], FlaskClient]) -> str:
    """A batch filled into two product bags (a dilute product for a 58 kg patient)."""
    number = make_batch(until="formulation")
    client = login("tech1")
    with app.app_context():
        batch = get_batch(number)
        raw = step_values("formulation", when=datetime.now(UTC), batch=batch, car_t_per_ml="5e5")
        version = batch.version
    response = client.post(f"/batches/{number}/steps/formulation", data=form_data(raw, batch_version=version))
    assert response.status_code == 302, page_text(response)[:3000]
    return number


@pytest.fixture
def lab_records(app: Flask, make_batch: Callable[..., str]) -> dict[str, Any]:
    """One record of every kind a route names, and the value of each URL argument."""
    return every_kind_of_record(app, make_batch)
