"""The installation check (IQ, issue 16 item 7): ``check-install`` passes on a migrated database
with a production configuration and the shipped processes approved, and fails, exit 1, naming
each thing wrong: a placeholder key, a missing trigger, a database behind the newest migration,
no approved process, a database not built by the migrations, a package too old."""

from __future__ import annotations

import importlib.metadata
import secrets
from collections.abc import Callable, Iterator

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import text

from config import TestingConfig
from lab import audit, create_app
from lab.extensions import db
from lab.models import User
from lab.services.install_check import config_checks, package_checks
from lab.services.processes import approve_shipped
from lab.services.signatures import Credentials
from tests.factories import PASSWORD, PASSWORD_HASH

pytestmark = pytest.mark.requirements("IQ-1")

REAL_KEY = secrets.token_hex(32)
PRODUCTION = {"SECRET_KEY": REAL_KEY, "SESSION_COOKIE_SECURE": True, "FACILITY_ID": "B1234",
              "FACILITY_NAME": "Northern Cell Therapy Unit", "TIMEZONE": "Europe/Berlin"}


@pytest.fixture
def installation(empty_database: str) -> Iterator[Callable[..., Flask]]:
    """Apps on the scratch database ``empty_database``, configured as a facility would (``PRODUCTION``)
    unless told otherwise."""
    apps: list[Flask] = []

    def _app(**settings: object) -> Flask:
        config = type("InstalledConfig", (TestingConfig,), {"SQLALCHEMY_DATABASE_URI": empty_database,
                                                            **PRODUCTION, **settings})
        app = create_app(config)
        apps.append(app)
        return app

    yield _app
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def check(app: Flask) -> tuple[Result, set[str]]:
    """check-install's answer, and the names of the checks it failed."""
    result = app.test_cli_runner().invoke(args=["check-install"])
    failed = {line[5:].split(":", 1)[0] for line in result.stdout.splitlines() if line.startswith("FAIL ")}
    return result, failed


def approve_shipped_processes(app: Flask) -> None:
    with app.app_context():
        with audit.action("test.setup", actor=None):
            qa = User(username="qa1", full_name="Quentin Assurance", role="qa_officer", password_hash=PASSWORD_HASH)
            db.session.add(qa)
        approve_shipped(actor=qa, credentials=Credentials(PASSWORD, "qa1"))
        db.session.commit()


def test_passes_on_a_proper_installation_and_names_each_failure(installation: Callable[..., Flask]) -> None:
    app = installation()
    assert app.test_cli_runner().invoke(args=["init-db"]).exit_code == 0

    result, failed = check(app)  # nothing approved yet
    assert result.exit_code == 1
    assert failed == {"process versions"}
    assert "Installation check failed: process versions." in result.stderr
    assert "no approved, effective version of cd19-car-t" in result.stdout

    approve_shipped_processes(app)
    result, failed = check(app)
    assert (result.exit_code, failed) == (0, set()), result.output
    lines = result.stdout.splitlines()
    assert "PASS package flask: " in result.stdout and "PASS database schema: at the newest migration" in result.stdout
    assert "PASS process versions: cd19-car-t version" in result.stdout
    assert REAL_KEY not in result.stdout
    assert lines[-1].startswith("Installation check passed:")
    assert all(line.startswith("PASS ") for line in lines[:-1])

    for key in ("testing-only", "dev", "short-key-1", "celltrail-debug-only-not-a-secret"):
        result, failed = check(installation(SECRET_KEY=key))
        assert (result.exit_code, failed) == (1, {"secret key"}), key
    result, failed = check(installation(SESSION_COOKIE_SECURE=False, FACILITY_ID="A9999"))
    assert (result.exit_code, failed) == (1, {"secure session cookie", "facility"})

    with app.app_context():
        trigger = "audit_events_append_only" if db.engine.dialect.name == "postgresql" else "audit_events_no_delete"
        db.session.execute(text(f"DROP TRIGGER {trigger}" + (" ON audit_events" if "only" in trigger else "")))
        db.session.commit()
    result, failed = check(app)
    assert (result.exit_code, failed) == (1, {"audit triggers"})
    assert f"missing or disabled on audit_events: {trigger}" in result.stdout

    with app.app_context():  # as if the code was upgraded and init-db not run again
        db.session.execute(text("UPDATE alembic_version SET version_num = '0016'"))
        db.session.commit()
    result, failed = check(app)
    assert (result.exit_code, failed) == (1, {"audit triggers", "database schema"})
    assert "at migration 0016, the newest is" in result.stdout
    assert "Installation check failed: database schema, audit triggers." in result.stderr


def test_a_database_not_built_by_the_migrations_is_reported(installation: Callable[..., Flask]) -> None:
    app = installation()
    with app.app_context():
        db.create_all()
    result, failed = check(app)
    assert result.exit_code == 1
    assert failed == {"database schema", "process versions"}
    assert "no alembic_version table" in result.stdout


def test_packages_are_checked_against_their_requirements(monkeypatch: pytest.MonkeyPatch) -> None:
    required = ["flask>=3.1", "flask>=99", "surely-not-installed-package>=1", "sqlalchemy>=2,<2.0",
                'psycopg[binary]>=3.2; extra == "postgres"', 'gunicorn>=23; extra == "server"']
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: required)
    checks = package_checks(set())
    assert [(c.name, c.ok) for c in checks] == [("package flask", True), ("package flask", False),
                                                ("package surely-not-installed-package", False),
                                                ("package sqlalchemy", False)]
    assert checks[1].detail.endswith("installed, >=99 required")
    assert checks[2].detail == "not installed (required >=1)"
    assert "package psycopg" in {c.name for c in package_checks({"postgres"})}  # on PostgreSQL, its driver too


def test_configuration_checks_name_what_is_not_set() -> None:
    checks = {c.name: c for c in config_checks({**PRODUCTION, "TIMEZONE": "Mars/Olympus", "FACILITY_NAME": " "})}
    assert {name for name, c in checks.items() if not c.ok} == {"time zone", "facility"}
    assert "FACILITY_NAME" in checks["facility"].detail
    assert REAL_KEY not in " ".join(c.detail for c in checks.values())
