"""Package set-up: configuration from the environment, the secret-key refusal, the schema
(migrations agree with the models; init-db builds it) and self-hosted static assets."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import inspect, text

from config import Config, TestingConfig, database_url
from lab import DEBUG_KEY, PACKAGE_DIR, ConfigurationError, create_app
from lab.extensions import db
from lab.models import User

#: A src, href or action pointing off-site (http://, https:// or protocol-relative //).
EXTERNAL_REF = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


# --- configuration ---------------------------------------------------------------------------

@pytest.fixture
def deploy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Flask]:
    """create_app with the deployment Config and exactly the environment given.

    Class attributes read at import time are cleared so that the environment of the test
    run cannot leak in; the instance folder is under tmp_path.
    """
    for name in list(os.environ):
        if name.startswith("LAB_") or name in ("SECRET_KEY", "DATABASE_URL", "FLASK_DEBUG"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(Config, "SECRET_KEY", None)
    monkeypatch.setattr(Config, "SQLALCHEMY_DATABASE_URI", None)
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(tmp_path / "instance"))
    apps: list[Flask] = []

    def _deploy(**env: str) -> Flask:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        app = create_app(Config)
        apps.append(app)
        return app

    yield _deploy
    for app in apps:
        with app.app_context():
            db.engine.dispose()


REAL_KEY = secrets.token_hex(32)


@pytest.mark.parametrize("key", [None, "", "dev", "secret", "changeme", "testing-only", "short-key-123"])
def test_refuses_to_start_without_a_real_secret_key(deploy: Callable[..., Flask], key: str | None) -> None:
    env = {} if key is None else {"SECRET_KEY": key}
    with pytest.raises(ConfigurationError) as refused:
        deploy(**env)
    message = str(refused.value)
    assert "secret key" in message
    assert "export SECRET_KEY=" in message  # says how to set one
    assert "--debug" in message


def test_debug_mode_starts_without_a_key(deploy: Callable[..., Flask]) -> None:
    app = deploy(FLASK_DEBUG="1")
    assert app.debug
    assert app.config["SECRET_KEY"] == DEBUG_KEY


def test_testing_config_starts_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    app = create_app(TestingConfig)
    assert app.testing
    assert app.config["SECRET_KEY"] == "testing-only"
    with app.app_context():
        db.engine.dispose()


def test_starts_with_settings_from_the_environment(deploy: Callable[..., Flask], tmp_path: Path) -> None:
    path = tmp_path / "deployed.sqlite"
    app = deploy(SECRET_KEY=REAL_KEY, DATABASE_URL=f"sqlite:///{path}", LAB_FACILITY_ID="B1234",
                 LAB_TIMEZONE="Europe/Berlin")
    assert not app.testing and not app.debug
    assert app.config["SECRET_KEY"] == REAL_KEY
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{path}"
    assert app.config["FACILITY_ID"] == "B1234"
    assert app.config["TIMEZONE"] == "Europe/Berlin"
    with app.app_context():
        assert db.engine.url.database == str(path)
        db.create_all()
    assert path.is_file()
    page = app.test_client().get("/login")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "facility B1234" in body
    assert "times shown in Europe/Berlin" in body


def test_a_deployed_app_hashes_passwords_with_scrypt(deploy: Callable[..., Flask], tmp_path: Path) -> None:
    """Tests use a fast hash; a deployment must not."""
    app = deploy(SECRET_KEY=REAL_KEY, DATABASE_URL=f"sqlite:///{tmp_path / 'hash.sqlite'}")
    with app.app_context():
        user = User(username="x", full_name="x", role="auditor")
        user.set_password("a long enough password")
        assert user.password_hash.startswith("scrypt:")
        assert user.check_password("a long enough password")


@pytest.mark.parametrize("fin", ["12345", "1E234", "A0001"])
def test_facility_id_is_kept_as_typed(deploy: Callable[..., Flask], fin: str) -> None:
    """A FIN that looks like a number to from_prefixed_env's JSON parsing stays text."""
    app = deploy(SECRET_KEY=REAL_KEY, LAB_FACILITY_ID=fin)
    assert app.config["FACILITY_ID"] == fin


@pytest.mark.parametrize("fin", ["XX", "A999", "A99999", "O1234", "b1234", "A 999", "null", "[]"])
def test_bad_facility_id_is_refused(deploy: Callable[..., Flask], fin: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        deploy(SECRET_KEY=REAL_KEY, LAB_FACILITY_ID=fin)
    message = str(refused.value)
    assert "is not a facility identifier" in message
    assert "LAB_FACILITY_ID" in message
    assert "A9999" in message  # shows what one looks like


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe/Berlinn", "../../etc/passwd", "", "1"])
def test_bad_timezone_is_refused(deploy: Callable[..., Flask], zone: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        deploy(SECRET_KEY=REAL_KEY, LAB_TIMEZONE=zone)
    message = str(refused.value)
    assert "is not a time zone name" in message
    assert "LAB_TIMEZONE" in message


def test_a_server_keeps_full_collections_off_what_start_up_made(tmp_path: Path) -> None:
    """A deployed app moves what start-up left alive to the collector's permanent generation
    (lab.settle_heap); a testing app, made once per test, does not. Run apart: it changes the
    interpreter it runs in."""
    script = ("import gc, sys\n"
              "from config import TestingConfig\n"
              "from lab import create_app\n"
              "create_app(TestingConfig)\n"
              "print(gc.get_freeze_count())\n"
              "create_app()\n"
              "print(gc.get_freeze_count())\n")
    env = {name: value for name, value in os.environ.items()
           if not (name.startswith("LAB_") or name in ("SECRET_KEY", "DATABASE_URL", "FLASK_DEBUG"))}
    env.update(SECRET_KEY=REAL_KEY, DATABASE_URL=f"sqlite:///{tmp_path / 'heap.sqlite'}")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                            cwd=PACKAGE_DIR.parent, check=True)
    testing, deployed = (int(line) for line in result.stdout.split())
    assert testing == 0
    assert deployed > 50_000  # the ORM, fonts and templates' objects: about 175,000


def test_default_database_is_sqlite_in_the_instance_folder(deploy: Callable[..., Flask], tmp_path: Path) -> None:
    app = deploy(SECRET_KEY=REAL_KEY)
    instance = tmp_path / "instance"
    assert app.instance_path == str(instance)
    assert instance.is_dir()  # created on start
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance / 'celltrail.sqlite'}"
    with app.app_context():
        assert db.engine.dialect.name == "sqlite"
        assert db.engine.url.database == str(instance / "celltrail.sqlite")


@pytest.mark.parametrize(("given", "expected"), [
    ("postgres://lab:pw@db.example:5432/celltrail", "postgresql+psycopg://lab:pw@db.example:5432/celltrail"),
    ("postgresql://lab@127.0.0.1/celltrail", "postgresql+psycopg://lab@127.0.0.1/celltrail"),
    ("postgresql+psycopg://lab@127.0.0.1/celltrail", "postgresql+psycopg://lab@127.0.0.1/celltrail"),
    ("sqlite:////var/lib/celltrail.sqlite", "sqlite:////var/lib/celltrail.sqlite"),
    (None, None),
])
def test_database_url_maps_postgres_to_psycopg(given: str | None, expected: str | None) -> None:
    assert database_url(given) == expected


def test_postgres_database_url_from_environment_uses_psycopg(deploy: Callable[..., Flask]) -> None:
    app = deploy(SECRET_KEY=REAL_KEY, DATABASE_URL="postgres://lab@127.0.0.1:5432/celltrail")
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://lab@127.0.0.1:5432/celltrail"
    with app.app_context():  # the engine is built, not connected
        assert db.engine.dialect.name == "postgresql"
        assert db.engine.dialect.driver == "psycopg"


# --- schema: migrations ----------------------------------------------------------------------

@pytest.fixture
def empty_app(empty_database: str) -> Iterator[Flask]:
    class EmptyDatabaseConfig(TestingConfig):
        SQLALCHEMY_DATABASE_URI = empty_database

    app = create_app(EmptyDatabaseConfig)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_migrations_agree_with_the_models(empty_app: Flask) -> None:
    with empty_app.app_context():
        assert inspect(db.engine).get_table_names() == []
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
        assert set(db.metadata.tables) <= tables  # the comparison below is not vacuous
        assert "alembic_version" in tables
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                                   "compare_server_default": True})
            differences = compare_metadata(context, db.metadata)
    assert differences == [], "models and migrations differ; run `flask --app lab db migrate`"


def test_init_db_builds_an_empty_database(empty_app: Flask) -> None:
    runner = empty_app.test_cli_runner()
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert "Database ready" in result.output
    with empty_app.app_context():
        tables = set(inspect(db.engine).get_table_names())
        assert set(db.metadata.tables) <= tables
        with db.engine.connect() as connection:
            head = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    again = runner.invoke(args=["init-db"])  # safe to run again
    assert again.exit_code == 0, again.output
    assert "Database ready" in again.output
    with empty_app.app_context(), db.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == head
    assert len(head) == 1


def test_seed_demo_on_a_database_without_tables_says_run_init_db(empty_app: Flask) -> None:
    result = empty_app.test_cli_runner().invoke(args=["seed-demo"])
    assert result.exit_code == 1
    assert "init-db" in result.output


# --- static assets ---------------------------------------------------------------------------

def test_static_assets_are_served_from_the_package(app: Flask, client) -> None:
    assert Path(app.static_folder or "") == PACKAGE_DIR / "static"
    for name, kind in (("celltrail.css", "text/css"), ("celltrail.js", "javascript")):
        response = client.get(f"/static/{name}")  # no session needed
        assert response.status_code == 200
        assert kind in response.content_type
        assert response.get_data(as_text=True).strip()
        response.close()


def test_pages_reference_no_other_site(make_batch, login, client) -> None:
    number = make_batch(until="harvest")
    login_page = client.get("/login").get_data(as_text=True)
    assert 'href="/static/celltrail.css' in login_page
    assert 'src="/static/celltrail.js' in login_page
    pages = [login_page]
    login("admin")
    for url in ("/", "/patients/", "/patients/SLE-01", f"/batches/{number}", "/inventory/", "/admin/users"):
        response = client.get(url)
        assert response.status_code == 200, url
        pages.append(response.get_data(as_text=True))
    for page in pages:
        assert not EXTERNAL_REF.search(page), EXTERNAL_REF.search(page)
        assert "cdn" not in page.lower()
