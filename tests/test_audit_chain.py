"""The audit trail's hash chain: every entry links to the one before, concurrent writers never
fork it, the database refuses to rewrite it, and upgrading a database chains its old trail."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from datetime import UTC, date, datetime
from typing import Any

import pytest
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import MetaData, Table, event, exc, func, insert, select, text

from config import TestingConfig
from lab import audit, create_app
from lab.audit_chain import GENESIS, ChainHeadMissing
from lab.extensions import db
from lab.models import AuditChainHead, AuditEvent, MaterialLot, User
from lab.services.audit_verify import verify_chain
from tests.conftest import ON_POSTGRES, ROLES
from tests.factories import PASSWORD_HASH, user

pytestmark = pytest.mark.requirements("P11-10e", "P11-10a")


def trail() -> list[dict[str, Any]]:
    return [dict(row) for row in db.session.execute(select(AuditEvent.__table__).order_by(AuditEvent.id)).mappings()]


def head() -> tuple[int, str] | None:
    row = db.session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)).one_or_none()
    return None if row is None else (row.last_id, row.last_hash)


def documented_hash(entry: dict[str, Any]) -> str:
    """The hash as the README and lab.audit_chain describe it, computed independently."""
    fields = ("id", "prev_hash", "occurred_at", "actor_id", "actor_username", "action", "operation", "table_name",
              "row_id", "field", "old_value", "new_value", "reason", "batch_id")
    content = {name: entry[name] for name in fields}
    content["occurred_at"] = entry["occurred_at"].astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def add_lot(code: str, actor_name: str | None = None) -> None:
    """One audited insert (a material lot) by ``actor_name`` (None: the command line)."""
    with audit.action("test.lot", actor=user(actor_name) if actor_name else None, reason="Zürich supplier"):
        db.session.add(MaterialLot(code=code, material="medium", name="Medium", lot_number=code,
                                   supplier="Nobody", expiry_date=date(2030, 1, 1)))


def test_every_entry_links_to_the_one_before_and_the_head_names_the_last(app: Flask, make_batch: Any) -> None:
    make_batch(until="enrichment")
    with app.app_context():
        entries = trail()
        assert len(entries) > 30
        assert [e["id"] for e in entries] == list(range(1, len(entries) + 1))  # numbered under the lock: no gaps
        assert entries[0]["prev_hash"] == GENESIS
        for before, entry in itertools.pairwise(entries):
            assert entry["prev_hash"] == before["hash"]
        for entry in entries:
            assert entry["hash"] == documented_hash(entry)
        assert len({e["hash"] for e in entries}) == len(entries)
        assert head() == (entries[-1]["id"], entries[-1]["hash"])
        assert verify_chain().findings.count == 0


def test_non_ascii_text_is_hashed_as_itself(app: Flask, users: dict[str, int]) -> None:
    with app.app_context():
        add_lot("LOT-Ü1", "tech1")
        db.session.commit()
        [entry] = [e for e in trail() if e["action"] == "test.lot"]
        assert entry["reason"] == "Zürich supplier"
        assert "Zürich".encode() in json.dumps(entry["reason"], ensure_ascii=False).encode()
        assert entry["hash"] == documented_hash(entry)


def test_a_rolled_back_write_leaves_chain_and_head_as_they_were(app: Flask, users: dict[str, int]) -> None:
    with app.app_context():
        before = (trail(), head())
        add_lot("LOT-RB1", "tech1")
        assert head() != before[1]  # flushed: appended inside this transaction
        db.session.rollback()
        assert (trail(), head()) == before
        add_lot("LOT-RB2", "tech1")
        db.session.commit()
        entries = trail()
        assert entries[-1]["prev_hash"] == before[0][-1]["hash"]
        assert entries[-1]["id"] == before[0][-1]["id"] + 1
        assert verify_chain().findings.count == 0


def test_a_savepoint_rolled_back_after_entries_leaves_the_chain_whole(app: Flask, users: dict[str, int]) -> None:
    with app.app_context():
        before = trail()
        add_lot("LOT-SP1", "tech1")  # entries of the transaction, before the savepoint
        savepoint = db.session.begin_nested()
        add_lot("LOT-SP2", "tech1")
        savepoint.rollback()
        add_lot("LOT-SP3", "tech1")
        db.session.commit()
        added = trail()[len(before):]
        assert {json.loads(e["new_value"])["code"] for e in added if e["table_name"] == "material_lots"} == {
            "LOT-SP1", "LOT-SP3"}
        assert [e["id"] for e in added] == list(range(before[-1]["id"] + 1, before[-1]["id"] + 1 + len(added)))
        assert head() == (added[-1]["id"], added[-1]["hash"])
        assert verify_chain().findings.count == 0


def test_a_transaction_reads_and_locks_the_head_once_however_many_flushes(app: Flask, users: dict[str, int]) -> None:
    """Each flush appends its entries, but the head is read (and locked) by the first only: the
    later ones chain after what the first returned (issue 17's write overhead)."""
    heads_read: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "audit_chain_head" in statement:
            heads_read.append(statement)

    with app.app_context():
        before = trail()
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            for code in ("LOT-H1", "LOT-H2", "LOT-H3"):
                add_lot(code, "tech1")  # one flush each
            db.session.commit()
            add_lot("LOT-H4", "tech1")  # the next transaction reads the head again
            db.session.commit()
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert len(heads_read) == 2
        added = trail()[len(before):]
        assert [json.loads(e["new_value"])["code"] for e in added] == ["LOT-H1", "LOT-H2", "LOT-H3", "LOT-H4"]
        assert head() == (added[-1]["id"], added[-1]["hash"])
        assert verify_chain().findings.count == 0


@pytest.mark.skipif(ON_POSTGRES, reason="sessions share one connection on in-memory SQLite only")
def test_sessions_sharing_one_connection_append_to_one_chain(app: Flask, users: dict[str, int]) -> None:
    """A session that appended, then another on the same connection that committed (a request
    inside a test's app context): the first chains after the other's entries, not after its own."""
    with app.app_context():
        before = trail()
        add_lot("LOT-C1", "tech1")  # flushed: the head is known to this transaction
        with app.app_context():  # another session, on the one in-memory connection
            add_lot("LOT-C2", "tech1")
            db.session.commit()
        add_lot("LOT-C3", "tech1")
        db.session.commit()
        added = trail()[len(before):]
        assert [json.loads(e["new_value"])["code"] for e in added] == ["LOT-C1", "LOT-C2", "LOT-C3"]
        assert head() == (added[-1]["id"], added[-1]["hash"])
        assert verify_chain().findings.count == 0


def test_a_trail_without_its_chain_head_refuses_every_write(app: Flask, users: dict[str, int]) -> None:
    with app.app_context():
        db.session.execute(text("DELETE FROM audit_chain_head"))
        db.session.commit()
        count = len(trail())
        with pytest.raises(ChainHeadMissing, match="chain head is missing: nothing was saved"):
            add_lot("LOT-NH1", "tech1")
        db.session.rollback()
        assert len(trail()) == count
        assert db.session.scalar(select(func.count()).select_from(MaterialLot)) == 0


# --- concurrent writers -----------------------------------------------------------------------

def test_concurrent_writers_never_fork_the_chain(shared_app: Flask) -> None:
    with shared_app.app_context():
        with audit.action("test.setup", actor=None):
            db.session.add_all(User(username=name, full_name=full, role=role, password_hash=PASSWORD_HASH)
                               for name, (role, full) in ROLES.items())
        db.session.commit()
    writers, rounds = 6, 5
    start = threading.Barrier(writers)
    errors: list[Exception] = []

    def write(number: int) -> None:
        try:
            with shared_app.app_context():
                start.wait()
                for round_ in range(rounds):  # two flushes per transaction: the head stays locked between them
                    add_lot(f"LOT-{number}-{round_}-A", "tech1")
                    add_lot(f"LOT-{number}-{round_}-B", "tech2")
                    db.session.commit()
        except Exception as error:  # noqa: BLE001 - reported below, with the others
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with shared_app.app_context():
        entries = [e for e in trail() if e["action"] == "test.lot"]
        assert len(entries) == writers * rounds * 2
        everything = trail()
        assert [e["id"] for e in everything] == list(range(1, len(everything) + 1))
        links = [e["prev_hash"] for e in everything]
        assert len(set(links)) == len(links)  # no two entries follow the same one: no fork
        assert links == [GENESIS] + [e["hash"] for e in everything[:-1]]
        assert head() == (everything[-1]["id"], everything[-1]["hash"])
        assert verify_chain().findings.count == 0


# --- the database refuses to rewrite the trail ----------------------------------------------------

@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET new_value = 'rewritten' WHERE id = 1",
    "UPDATE audit_events SET reason = 'backdated', occurred_at = occurred_at",
    "DELETE FROM audit_events WHERE id = 1",
    "DELETE FROM audit_events",
])
def test_the_database_refuses_updates_and_deletes_of_entries(app: Flask, users: dict[str, int],
                                                              statement: str) -> None:
    with app.app_context():
        before = trail()
        with pytest.raises(exc.DBAPIError, match="audit_events is append-only"):
            db.session.execute(text(statement))
        db.session.rollback()
        assert trail() == before


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite has no TRUNCATE")
def test_postgres_refuses_truncating_the_trail(app: Flask, users: dict[str, int]) -> None:
    with app.app_context():
        count = len(trail())
        with pytest.raises(exc.DBAPIError, match="append-only: TRUNCATE refused"):
            db.session.execute(text("TRUNCATE audit_events"))
        db.session.rollback()
        assert len(trail()) == count > 0


def test_the_database_accepts_new_entries(app: Flask, users: dict[str, int]) -> None:
    with app.app_context():
        count = len(trail())
        add_lot("LOT-OK1", "tech1")
        db.session.commit()
        assert len(trail()) == count + 1


# --- upgrading a database whose trail predates the chain ------------------------------------------

def test_the_migration_chains_an_existing_trail_and_adds_the_triggers(empty_database: str) -> None:
    class EmptyDatabaseConfig(TestingConfig):
        SQLALCHEMY_DATABASE_URI = empty_database

    app = create_app(EmptyDatabaseConfig)
    old = [{"occurred_at": datetime(2026, 3, 1, 9, 30, n, 123400 + n, tzinfo=UTC), "actor_id": None,
            "actor_username": "system", "action": "demo.inventory", "operation": "insert",
            "table_name": "material_lots", "row_id": str(n), "field": None, "old_value": None,
            "new_value": json.dumps({"code": f"LOT-{n}", "supplier": "Müller"}, ensure_ascii=False),
            "reason": None, "batch_id": None} for n in range(1, 4)]
    try:
        with app.app_context():
            upgrade(revision="0003")
            events = Table("audit_events", MetaData(), autoload_with=db.engine)
            with db.engine.begin() as connection:
                connection.execute(insert(events), old)
            upgrade()
            entries = trail()
            assert [e["id"] for e in entries] == [1, 2, 3]
            assert entries[0]["prev_hash"] == GENESIS
            assert [e["prev_hash"] for e in entries[1:]] == [e["hash"] for e in entries[:2]]
            assert all(e["hash"] == documented_hash(e) for e in entries)
            assert head() == (3, entries[-1]["hash"])
            result = app.test_cli_runner().invoke(args=["verify-audit"])
            assert result.exit_code == 0, result.output
            assert "3 entries" in result.output
            with pytest.raises(exc.DBAPIError, match="append-only"):
                db.session.execute(text("DELETE FROM audit_events WHERE id = 2"))
            db.session.rollback()
            downgrade(revision="0003")  # and back: the downgrade removes what the upgrade added
            assert db.session.execute(text("SELECT count(*) FROM audit_events")).scalar() == 3
            db.session.rollback()  # the migration's ALTER TABLE would wait on this session's read lock
            upgrade()
            assert head() == (3, entries[-1]["hash"])
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
