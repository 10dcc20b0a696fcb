"""The canonical form of an audit entry, written fast, is byte for byte the documented one (the
JSON object ``json.dumps`` writes with sorted keys), and the chain walk, which reads entries as
plain rows, hashes each stored entry exactly as the application hashed it when it wrote it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from lab import audit
from lab.audit_chain import HASHED_FIELDS, canonical, entry_hash
from lab.extensions import db
from lab.models import AuditEvent
from lab.models.base import simulated_clock
from lab.services.audit_verify import verify_chain
from tests.conftest import ON_POSTGRES
from tests.factories import user
from tests.test_audit import _lot
from tests.test_verify_audit import tamper

pytestmark = pytest.mark.requirements("P11-10e", "P11-10a")

AT = datetime(2026, 11, 25, 8, 30, 1, 123456, tzinfo=UTC)
ENTRY: dict[str, Any] = {
    "id": 41, "prev_hash": "a" * 64, "occurred_at": AT, "actor_id": 3, "actor_username": "tech1",
    "action": "step.record", "operation": "insert", "table_name": "step_values", "row_id": "17", "field": None,
    "old_value": None, "new_value": '{"text": "91.5", "unit": "mL"}', "reason": None, "batch_id": 7, "via": None,
}


def documented(entry: dict[str, Any]) -> bytes:
    """The canonical form as lab.audit_chain documents it, through json.dumps."""
    content = {name: entry[name] for name in HASHED_FIELDS}
    if entry.get("via") is not None:
        content["via"] = entry["via"]
    content["occurred_at"] = entry["occurred_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


AWKWARD_TEXTS = ["Zürich – “quoted” ✓ 日本 🧪", 'say "no"', "back\\slash/", "\x01\x1f\x7f\n\r\t\b\f",
                 "\u2028\u2029\ufeff", "", " ", "null", "{\"nested\": [1, 2]}", "é" * 300]
AWKWARD_TIMES = [AT, AT.replace(microsecond=0), datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=ZoneInfo("Europe/Paris")),
                 datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),
                 datetime(2027, 1, 1, 0, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
                 datetime(999, 12, 31, 23, 59, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)]


@pytest.mark.parametrize("value", [*AWKWARD_TEXTS, "\x00"])  # NUL: not storable in PostgreSQL text
@pytest.mark.parametrize("name", ["actor_username", "action", "row_id", "field", "old_value", "new_value", "reason",
                                  "via"])
def test_every_text_is_written_as_json_dumps_writes_it(name: str, value: str) -> None:
    entry = {**ENTRY, name: value}
    assert canonical(entry) == documented(entry)


@pytest.mark.parametrize("when", AWKWARD_TIMES, ids=str)
def test_every_time_is_written_in_utc_with_six_decimals_as_documented(when: datetime) -> None:
    assert canonical({**ENTRY, "occurred_at": when}) == documented({**ENTRY, "occurred_at": when})


@pytest.mark.parametrize("changes", [
    {"actor_id": None, "actor_username": "system", "batch_id": None},
    {"id": 2**62, "batch_id": 0, "actor_id": -1},
    {"via": "API token “NC-200 bench 2” (ct_abc…)"},
    {"field": "volume_ml", "old_value": None, "new_value": None, "operation": "update"},
])
def test_absent_values_numbers_and_the_token_are_written_as_documented(changes: dict[str, Any]) -> None:
    entry = {**ENTRY, **changes}
    assert canonical(entry) == documented(entry)
    assert (b'"via"' in canonical(entry)) is (entry["via"] is not None)


def test_an_entry_without_a_via_key_hashes_as_one_whose_via_is_none() -> None:
    entry = {name: value for name, value in ENTRY.items() if name != "via"}
    assert canonical(entry) == canonical(ENTRY) == documented(entry)


def _entries(action: str) -> list[dict[str, Any]]:
    return [dict(row) for row in db.session.execute(select(AuditEvent.__table__).where(AuditEvent.action == action)
                                                    .order_by(AuditEvent.id)).mappings()]


def test_the_walk_hashes_stored_entries_as_the_writer_did(app: Flask, users: dict[str, int]) -> None:
    """Times with and without microseconds, texts with every awkward character: the walk, which
    reads the stored rows as the driver hands them, finds each entry's hash as written."""
    with app.app_context():
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
        with simulated_clock(start) as clock:
            for number, reason in enumerate(AWKWARD_TEXTS):
                clock.set(start + timedelta(minutes=number, microseconds=number % 2))
                with audit.action("test.awkward", actor=user("tech1"), reason=reason):
                    db.session.add(_lot(f"AWK-{number}"))
        db.session.commit()
        written = _entries("test.awkward")
        assert written[0]["occurred_at"] == start and written[1]["occurred_at"].microsecond == 1
        assert all(entry_hash(entry) == entry["hash"] and canonical(entry) == documented(entry) for entry in written)
        report = verify_chain()
        assert (report.findings.count, report.last_id) == (0, written[-1]["id"])


def test_a_time_moved_by_a_microsecond_in_the_database_is_named(app: Flask, users: dict[str, int]) -> None:
    with app.app_context():
        with audit.action("test.awkward", actor=None, reason="Zürich"):
            db.session.add(_lot("AWK-T"))
        db.session.commit()
        [entry] = _entries("test.awkward")
    moved = entry["occurred_at"] + timedelta(microseconds=1)
    if ON_POSTGRES:
        tamper(app, "UPDATE audit_events SET occurred_at = :moved WHERE id = :id", moved=moved, id=entry["id"])
    else:  # as SQLite stores it
        tamper(app, "UPDATE audit_events SET occurred_at = :moved WHERE id = :id",
               moved=moved.strftime("%Y-%m-%d %H:%M:%S.%f"), id=entry["id"])
    with app.app_context():
        report = verify_chain()
    assert report.findings.problems == [(f"Entry {entry['id']}: its content does not match its hash: edited or "
                                         "inserted in the database.")]
