"""The installation check (IQ, installation qualification): what an installation must be before
it is used for GMP records, each checked on the running installation and reported with its
evidence: the required packages at versions the package asks for, the database at the newest
migration, the audit trail's append-only triggers in place, a production configuration (a real
secret key, secure cookies, a time zone, the facility named) and every shipped process with an
approved, effective version. ``flask --app lab check-install`` prints them.

Each check is read-only and needs an application context.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from config import Config
from lab import DEBUG_KEY, INSECURE_KEYS, PACKAGE_DIR
from lab.extensions import db
from lab.models.audit import APPEND_ONLY_DDL
from lab.services.processes import effective_versions, shipped
from workflows.codes import is_valid_fin

DISTRIBUTION = "celltrail"
MIGRATIONS = PACKAGE_DIR / "migrations"
#: A requirement as install_requires writes it: name, extras, specifiers, environment marker.
REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;\s*(.*))?$")
SPECIFIER = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*([0-9][0-9.]*)\s*$")
EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
TRIGGER_NAME = re.compile(r"CREATE TRIGGER (\w+)")
MIN_KEY_LENGTH = 16


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str


def run_checks() -> list[Check]:
    """Every check, in the order an installation is built. A database that cannot answer a
    check (no tables yet, no permission) fails that check with the database's reason."""
    checks: list[Check] = []
    steps: list[tuple[str, Callable[[], list[Check]]]] = [
        ("packages", lambda: package_checks(_extras())), ("database schema", lambda: [schema_check()]),
        ("audit triggers", lambda: [trigger_check()]), ("configuration", lambda: config_checks(current_app.config)),
        ("process versions", lambda: [process_check()])]
    for name, step in steps:
        try:
            checks += step()
        except SQLAlchemyError as error:
            db.session.rollback()
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            checks.append(Check(name, False, f"the database could not answer: {reason}"))
    return checks


def _extras() -> set[str]:
    """The optional parts this installation uses: the PostgreSQL driver on PostgreSQL."""
    return {"postgres"} if db.engine.dialect.name == "postgresql" else set()


def package_checks(extras: set[str]) -> list[Check]:
    """One check per package CellTrail requires (and of ``extras``): installed, at a version its
    specifier allows."""
    try:
        required = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return [Check("packages", False, f"the {DISTRIBUTION} package is not installed: pip install .")]
    checks = []
    for line in required:
        match = REQUIREMENT.match(line)
        if match is None:
            checks.append(Check(f"package {line}", False, "a requirement this check cannot read"))
            continue
        name, specifiers, marker = match.groups()
        extra = EXTRA_MARKER.search(marker or "")
        if marker and (extra is None or extra.group(1) not in extras):
            continue
        checks.append(_package_check(name, specifiers))
    return checks


def _package_check(name: str, specifiers: str) -> Check:
    label = f"package {name}"
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return Check(label, False, f"not installed (required {specifiers or 'any version'})")
    for part in filter(None, specifiers.split(",")):
        match = SPECIFIER.match(part)
        if match is None:
            return Check(label, False, f"{installed} installed; cannot check the requirement {part.strip()!r}")
        if not _satisfies(_release(installed), match.group(1), _release(match.group(2))):
            return Check(label, False, f"{installed} installed, {specifiers} required")
    return Check(label, True, f"{installed} ({specifiers or 'any version'})")


def _release(version: str) -> tuple[int, ...]:
    """The release numbers of a version (3.1.0rc1 -> (3, 1, 0)), padded for comparison."""
    numbers = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(numbers + [0] * (6 - len(numbers)))


def _satisfies(installed: tuple[int, ...], operator: str, wanted: tuple[int, ...]) -> bool:
    return {">=": installed >= wanted, "<=": installed <= wanted, "==": installed == wanted,
            "!=": installed != wanted, ">": installed > wanted, "<": installed < wanted}[operator]


def schema_check() -> Check:
    """The database's migration is the newest (alembic head) one."""
    heads = set(ScriptDirectory(str(MIGRATIONS)).get_heads())
    with db.engine.connect() as connection:
        if not db.inspect(connection).has_table("alembic_version"):
            return Check("database schema", False, "the database has no alembic_version table: it was not built by "
                                                   "the migrations (db.create_all() or an empty database); "
                                                   "build it with flask --app lab init-db")
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current == heads:
        return Check("database schema", True, f"at the newest migration {', '.join(sorted(heads))}")
    return Check("database schema", False, f"at migration {', '.join(sorted(current)) or 'none'}, the newest is "
                                           f"{', '.join(sorted(heads))}: run flask --app lab init-db")


def trigger_check() -> Check:
    """The triggers that make the database refuse to rewrite the audit trail exist (and are enabled)."""
    dialect = db.engine.dialect.name
    wanted = {name for statement in APPEND_ONLY_DDL.get(dialect, ()) for name in TRIGGER_NAME.findall(statement)}
    if not wanted:
        return Check("audit triggers", False, f"no append-only triggers are defined for {dialect}")
    if dialect == "postgresql":
        query = text("SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                     "WHERE c.relname = 'audit_events' AND NOT t.tgisinternal AND t.tgenabled <> 'D'")
    else:
        query = text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'")
    present = set(db.session.scalars(query))
    missing = sorted(wanted - present)
    if missing:
        return Check("audit triggers", False, f"missing or disabled on audit_events: {', '.join(missing)}: the "
                                              "database would let the audit trail be rewritten")
    return Check("audit triggers", True, f"{', '.join(sorted(wanted))} on audit_events")


def config_checks(config: Mapping[str, Any]) -> list[Check]:
    """A production configuration: a real secret key, secure session cookies, a time zone and
    the facility named (not the shipped examples)."""
    key = config.get("SECRET_KEY")
    if not isinstance(key, str) or not key or key in INSECURE_KEYS or key == DEBUG_KEY:
        secret = Check("secret key", False, "a placeholder or none: set SECRET_KEY to a random value of its own")
    elif len(key) < MIN_KEY_LENGTH:
        secret = Check("secret key", False, f"{len(key)} characters, at least {MIN_KEY_LENGTH} needed")
    else:
        secret = Check("secret key", True, f"set, {len(key)} characters, not a placeholder")
    secure = config.get("SESSION_COOKIE_SECURE") is True
    cookie = Check("secure session cookie", secure, "sent over HTTPS only" if secure else
                   "SESSION_COOKIE_SECURE is not true: the session cookie would travel over plain HTTP")
    zone = str(config.get("TIMEZONE") or "")
    try:
        ZoneInfo(zone)
        timezone = Check("time zone", True, zone)
    except (ZoneInfoNotFoundError, ValueError):
        timezone = Check("time zone", False, f"{zone!r} is not a time zone name: set LAB_TIMEZONE")
    return [secret, cookie, timezone, _facility_check(config)]


def _facility_check(config: Mapping[str, Any]) -> Check:
    fin, name = str(config.get("FACILITY_ID") or ""), str(config.get("FACILITY_NAME") or "").strip()
    problems = []
    if not is_valid_fin(fin) or fin == Config.FACILITY_ID:
        problems.append(f"FACILITY_ID {fin!r} is not the facility's own identifier (set LAB_FACILITY_ID)")
    if not name or name == Config.FACILITY_NAME:
        problems.append("FACILITY_NAME is not set to the facility's name (set LAB_FACILITY_NAME)")
    if problems:
        return Check("facility", False, "; ".join(problems))
    return Check("facility", True, f"{fin}, {name}")


def process_check() -> Check:
    """Every process shipped with CellTrail has an approved version in effect."""
    keys = sorted({definition.key for definition in shipped()})
    effective = {version.key: version for version in effective_versions()}
    missing = [key for key in keys if key not in effective]
    if missing:
        return Check("process versions", False, f"no approved, effective version of {', '.join(missing)}: a QA "
                                                "officer approves it (flask --app lab approve-shipped-processes, "
                                                "or on /processes)")
    return Check("process versions", True, ", ".join(f"{key} version {effective[key].version}" for key in keys))
