"""CellTrail: manufacturing tracker for autologous CAR T-cell therapy labs."""

from __future__ import annotations

import gc
import os
import unicodedata
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask, abort, request
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter
from werkzeug.wrappers import Response

from config import database_url
from lab.extensions import csrf, db, login_manager, migrate
from workflows.codes import is_valid_fin

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT_DIR = PACKAGE_DIR.parent
#: Placeholder keys from examples and tutorials that must never sign real sessions.
INSECURE_KEYS = frozenset({"dev", "secret", "changeme", "change-me", "testing-only"})
DEBUG_KEY = "celltrail-debug-only-not-a-secret"
#: No inline script or style anywhere: the pages' script and style are files under /static.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
#: Browsers keep to HTTPS for a year once they have seen this over HTTPS.
HSTS = "max-age=31536000"
#: Line breaks and tabs are text; every other control character (C0, DEL, C1) is not.
ALLOWED_CONTROLS = frozenset("\t\n\r")


class ConfigurationError(RuntimeError):
    """The app refuses to start with this configuration; the message says how to fix it."""


def create_app(config_object: object | str = "config.Config") -> Flask:
    """Create and configure the app; tests pass ``config.TestingConfig``."""
    app = Flask(__name__, template_folder=str(ROOT_DIR / "templates"), instance_relative_config=True)
    app.config.from_object(config_object)
    if not app.testing:
        _read_environment(app)
    _check_configuration(app)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{Path(app.instance_path) / 'celltrail.sqlite'}"
    if app.config.get("SESSION_COOKIE_SECURE") is None:
        app.config["SESSION_COOKIE_SECURE"] = not (app.debug or app.testing)
    app.url_map.converters["int"] = DatabaseIntConverter
    from lab.views.attachments import allow_attachment_size
    app.before_request(allow_attachment_size)  # first: the hooks after it read the body
    app.before_request(_refuse_control_characters)
    app.after_request(_add_security_headers)
    if hops := int(app.config["PROXY_HOPS"]):
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    app.permanent_session_lifetime = timedelta(minutes=int(app.config["SESSION_MINUTES"]))

    db.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    migrate.init_app(app, db, directory=str(PACKAGE_DIR / "migrations"), render_as_batch=True)

    from lab import auth, cli, errors, sent_forms, templating
    from lab.views import admin, audit, batches, containers, deviations, inventory, main, patients, quality, records

    auth.init_app(app)
    from lab import clinic_access
    clinic_access.init_app(app)  # after the session checks, before a form's token is claimed
    sent_forms.init_app(app)
    for module in (main, patients, batches, containers, admin, inventory, quality, deviations, records, audit):
        app.register_blueprint(module.bp)
    from lab.views import account, attachments, audit_reviews, equipment, materials, processes
    for module in (account, attachments, audit_reviews, equipment, materials, processes):
        app.register_blueprint(module.bp)
    from lab.views import batch_list
    app.register_blueprint(batch_list.bp)
    from lab.views import shipments
    app.register_blueprint(shipments.bp)
    from lab.views import bedside
    app.register_blueprint(bedside.bp)
    from lab.views import sites
    app.register_blueprint(sites.bp)
    from lab.views import notices
    app.register_blueprint(notices.bp)
    from lab.views import submissions
    app.register_blueprint(submissions.bp)
    from lab.views import api_tokens
    app.register_blueprint(api_tokens.bp)
    from lab.views import counter_files
    app.register_blueprint(counter_files.bp)
    from lab import api
    app.register_blueprint(api.bp)
    errors.register_error_handlers(app)
    templating.register(app)
    cli.register_commands(app)
    if not app.testing:
        settle_heap()
    return app


def settle_heap() -> None:
    """Keep the garbage collector's full collections off what start-up made.

    A server process holds about 175,000 long-lived objects from the start (the ORM's mappers,
    the fonts, the templates' machinery). A full collection walks every one of them again, and
    one comes every few requests: about 85 ms in the middle of a record download, measured. What
    is alive once the app is made is moved to the permanent generation (``gc.freeze``, meant for
    servers; it also spares forked workers copying those pages); it is collected first, so only
    live objects are kept. Not under tests, which make an app per test."""
    gc.collect()
    gc.freeze()


def _read_environment(app: Flask) -> None:
    """Deployment settings: SECRET_KEY, DATABASE_URL, then any LAB_* variable."""
    if os.environ.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]
    if os.environ.get("DATABASE_URL"):
        app.config["SQLALCHEMY_DATABASE_URI"] = database_url(os.environ["DATABASE_URL"])
    app.config.from_prefixed_env("LAB")
    for name in ("FACILITY_ID", "FACILITY_NAME", "TIMEZONE"):  # text as typed: from_prefixed_env reads 12345 as a number
        if f"LAB_{name}" in os.environ:
            app.config[name] = os.environ[f"LAB_{name}"]


def _check_configuration(app: Flask) -> None:
    key = app.config.get("SECRET_KEY")
    if not (app.debug or app.testing) and (not key or key in INSECURE_KEYS or len(key) < 16):
        raise ConfigurationError(
            "CellTrail will not start without a real secret key: it signs sessions and signatures' "
            "forms. Set one in the environment, for example\n"
            "    export SECRET_KEY=\"$(python3 -c 'import secrets; print(secrets.token_hex(32))')\"\n"
            "(keep it the same across restarts and app servers). For a local demo, run with --debug."
        )
    if not key:
        app.config["SECRET_KEY"] = DEBUG_KEY
    if not isinstance(app.config.get("SESSION_COOKIE_SECURE"), bool | None):
        raise ConfigurationError("SESSION_COOKIE_SECURE is true or false (set LAB_SESSION_COOKIE_SECURE=false only "
                                 "for a test install served over plain HTTP).")
    hops = app.config.get("PROXY_HOPS")
    if isinstance(hops, bool) or not isinstance(hops, int) or not 0 <= hops <= 5:
        raise ConfigurationError(f"PROXY_HOPS {hops!r} is the number of reverse proxies in front of CellTrail, "
                                 "0 to 5 (set LAB_PROXY_HOPS=1 behind one proxy).")
    if not is_valid_fin(str(app.config["FACILITY_ID"])):
        raise ConfigurationError(
            f"FACILITY_ID {app.config['FACILITY_ID']!r} is not a facility identifier: five characters "
            "such as A9999 (set LAB_FACILITY_ID)."
        )
    try:
        ZoneInfo(str(app.config["TIMEZONE"]))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"TIMEZONE {app.config['TIMEZONE']!r} is not a time zone name such as Europe/Berlin "
            "(set LAB_TIMEZONE)."
        ) from None


class DatabaseIntConverter(IntegerConverter):
    """``<int:...>`` ids, bounded to a 32-bit column: a larger number is no record (404), not
    a query the database refuses (500)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(*args, **kwargs)


def _refuse_control_characters() -> None:
    """Control characters (a NUL from a scanner, an escape from a paste) are refused in the
    path, the query and every form field, before any query: PostgreSQL cannot store NUL, and
    none of them belongs in a record."""
    texts = [("The address", request.path)]
    for source, values in (("query", request.args), ("form", request.form)):
        for name, items in values.lists():
            shown = "".join(char for char in name[:40] if not _is_control(char))
            texts += [(f"The {source} field \u201c{shown}\u201d", text) for text in (name, *items)]
    for where, text in texts:
        bad = next((char for char in text if _is_control(char)), None)
        if bad is not None:
            abort(400, f"{where} holds a control character (U+{ord(bad):04X}), from a scanner or a paste, which "
                       "cannot be recorded. Nothing was saved: retype it and submit again.")


def _is_control(char: str) -> bool:
    return char not in ALLOWED_CONTROLS and unicodedata.category(char) == "Cc"


def _add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


@event.listens_for(Engine, "connect")
def _sqlite_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite ignores foreign keys unless asked, per connection."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
