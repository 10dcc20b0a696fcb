"""CellTrail configuration: defaults, tests, and deployment settings from the environment.

Deployment reads ``DATABASE_URL`` and ``SECRET_KEY``; any other setting can be given as
an environment variable prefixed ``LAB_`` (``LAB_FACILITY_ID=B1234``, ``LAB_TIMEZONE=Europe/Berlin``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar


def database_url(url: str | None) -> str | None:
    """Point bare PostgreSQL URLs at psycopg 3, the driver CellTrail installs."""
    if url is None:
        return None
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Config:
    #: Signs sessions and CSRF tokens. Required outside debug and testing.
    SECRET_KEY: str | None = os.environ.get("SECRET_KEY")
    #: None means a SQLite file ``celltrail.sqlite`` in the instance folder.
    SQLALCHEMY_DATABASE_URI: str | None = database_url(os.environ.get("DATABASE_URL"))
    SQLALCHEMY_ENGINE_OPTIONS: ClassVar[dict[str, Any]] = {"pool_pre_ping": True}
    #: ISBT 128 facility identification number used in COIs and batch numbers.
    #: A9999 is ICCBBA's example FIN; a licensed facility sets its own.
    FACILITY_ID = "A9999"
    #: Name and address of the establishment, printed on labels (21 CFR 1271.370(c)).
    FACILITY_NAME = "CellTrail demo cell therapy facility"
    FACILITY_ADDRESS: ClassVar[list[str]] = []
    #: Times are stored in UTC and shown in this zone.
    TIMEZONE = "UTC"
    #: Folder of process definitions new batches start from (None: the packaged ones).
    WORKFLOW_DIR: str | None = None
    #: Inactivity after which a session ends (Part 11: a continuous session is a controlled one).
    SESSION_MINUTES = 30
    #: A session ends this long after its sign-in, however busy: a copied cookie is not renewed forever.
    SESSION_MAX_HOURS = 12
    #: Password policy (lab.passwords): shortest and longest password, how many earlier passwords may
    #: not come back, and the age after which the owner must choose a new one (0: never).
    PASSWORD_MIN_LENGTH = 12
    PASSWORD_MAX_LENGTH = 256
    PASSWORD_HISTORY = 5
    PASSWORD_MAX_AGE_DAYS = 0
    #: Largest request, except a form that carries an attachment (lab.views.attachments).
    MAX_CONTENT_LENGTH = 1024 * 1024
    #: Largest attached file (a supplier's or calibration certificate, PDF or image).
    ATTACHMENT_MAX_BYTES = 5 * 1024 * 1024
    #: The largest request the API reads: a JSON body, or a cell counter's export file.
    API_MAX_UPLOAD_BYTES = 1024 * 1024
    #: Werkzeug's hashing method for passwords; scrypt is slow on purpose.
    PASSWORD_HASH_METHOD = "scrypt"
    #: Failed sign-ins in a row that lock an account, and for how long (0: until an administrator unlocks it).
    LOGIN_LOCKOUT_AFTER = 5
    LOGIN_LOCKOUT_MINUTES = 30
    #: Failed sign-ins one client address may make within the window before it is refused (429).
    #: Behind a reverse proxy the address is the proxy's unless the app is told to trust its headers.
    LOGIN_ADDRESS_LIMIT = 20
    #: Reverse proxies in front of the app whose X-Forwarded-For/-Proto/-Host it trusts (0: none, the
    #: address is the connection's). Set it to the number of proxies (LAB_PROXY_HOPS=1): too high lets a
    #: client choose the address the sign-in limit counts.
    PROXY_HOPS = 0
    LOGIN_ADDRESS_WINDOW_MINUTES = 15
    SESSION_COOKIE_HTTPONLY = True
    #: Sent over HTTPS only. None: secure unless debugging or testing; false only for a test
    #: install served over plain HTTP (LAB_SESSION_COOKIE_SECURE=false).
    SESSION_COOKIE_SECURE: bool | None = None
    SESSION_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_TIME_LIMIT = None  # a form left open at the bench must still submit
    TESTING = False


class TestingConfig(Config):
    TESTING = True
    SECRET_KEY = "testing-only"
    SQLALCHEMY_DATABASE_URI = database_url(os.environ.get("TEST_DATABASE_URL")) or "sqlite://"
    WTF_CSRF_ENABLED = False
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"  # tests sign thousands of times
