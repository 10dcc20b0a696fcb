"""``verify-audit --jobs N`` checks the trail and the signatures in parts, in N worker processes:
whatever the number, it names the same problems in the same order with the same counts as one
process does, including a broken link where one part of the chain meets the next."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import Connection, select

from config import TestingConfig
from lab import create_app
from lab.extensions import db
from lab.models import Signature, StepValue
from lab.services import audit_verify, verify_workers
from tests.conftest import ON_POSTGRES
from tests.quality import close_all_deviations, record_results, release
from tests.test_verify_audit import tamper

pytestmark = pytest.mark.requirements("P11-10a", "P11-70")


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts small enough that a few batches make many: stretches of 40 entries, one batch a chunk."""
    monkeypatch.setattr(audit_verify, "TRAIL_STRETCH", 40)
    monkeypatch.setattr(audit_verify, "BATCH_CHUNK", 1)


@pytest.fixture
def trail(app: Flask, make_batch: Callable[..., str], small_parts: None) -> str:
    """Three batches, one released: several hundred entries and signatures of every kind."""
    number = make_batch()
    record_results(app, number)
    close_all_deviations(app, number)
    release(app, number)
    make_batch(ref="SLE-02")
    make_batch(until="enrichment", ref="SLE-03")
    return number


def _on_file(app: Flask, path: Path) -> Flask:
    """``app``'s database where worker processes can read it: itself on PostgreSQL, a file copy of
    the in-memory SQLite database otherwise."""
    if ON_POSTGRES:
        return app
    with app.app_context():
        source = db.engine.raw_connection()
        target = sqlite3.connect(path)
        source.driver_connection.backup(target)  # type: ignore[union-attr]
        target.close()
        source.close()

    class FileConfig(TestingConfig):
        SQLALCHEMY_DATABASE_URI = f"sqlite:///{path}"

    return create_app(FileConfig)


@pytest.fixture
def on_file(app: Flask, tmp_path: Path) -> Iterator[Callable[[], Flask]]:
    made: list[Flask] = []

    def copy() -> Flask:
        made.append(_on_file(app, tmp_path / f"copy{len(made)}.sqlite"))
        return made[-1]

    yield copy
    for copied in made:
        if copied is not app:
            with copied.app_context():
                db.engine.dispose()


def verify(app: Flask, jobs: int) -> Result:
    return app.test_cli_runner().invoke(args=["verify-audit", "--jobs", str(jobs)])


def test_workers_run_the_parts_and_hand_them_back_in_order(app: Flask, on_file: Callable[[], Flask]) -> None:
    with on_file().app_context():
        parts = list(verify_workers.run(_pid_and_task, list(range(8)), 2))
    assert [task for _, task in parts] == list(range(8))
    assert {pid for pid, _ in parts} - {os.getpid()}  # not all in this process


def _pid_and_task(connection: Connection, task: int) -> tuple[int, int]:
    return os.getpid(), task


def test_an_in_memory_database_is_checked_in_one_process(app: Flask) -> None:
    if ON_POSTGRES:
        pytest.skip("about SQLite in memory")
    with app.app_context():
        assert verify_workers.usable_jobs(4) == 1


def test_an_intact_trail_reads_the_same_with_any_number_of_jobs(app: Flask, trail: str,
                                                                on_file: Callable[[], Flask]) -> None:
    copy = on_file()
    serial, parallel = verify(copy, 1), verify(copy, 2)
    assert serial.exit_code == parallel.exit_code == 0, serial.output
    assert parallel.stdout == serial.stdout and parallel.stderr == serial.stderr == ""


def test_tampering_across_parts_reads_the_same_with_any_number_of_jobs(app: Flask, trail: str,
                                                                       on_file: Callable[[], Flask]) -> None:
    with app.app_context():
        values = db.session.scalars(select(StepValue.id).order_by(StepValue.id)).all()
        signature = db.session.scalars(select(Signature.id).order_by(Signature.id.desc())).first()
    tamper(app,
           "UPDATE audit_events SET reason = 'x' WHERE id IN (5, 45, 95, 130, 131, 200) OR id BETWEEN 300 AND 320",
           "DELETE FROM audit_events WHERE id IN (80, 81, 161)",  # 81 and 161 each start a stretch
           "UPDATE step_values SET text = '1' WHERE id IN (:first, :last)",
           "UPDATE signatures SET printed_name = 'Someone Else' WHERE id = :signature",
           first=values[0], last=values[-1], signature=signature)
    copy = on_file()
    serial, parallel = verify(copy, 1), verify(copy, 3)
    assert serial.exit_code == 1
    assert parallel.stdout == serial.stdout and parallel.stderr == serial.stderr
    assert "TAMPERED: Entry 82: its link to entry 79 is broken, and entries 80 to 81 are missing" in serial.stderr
    assert "TAMPERED: Entry 162: its link to entry 160 is broken, and entry 161 is missing" in serial.stderr
    assert "TAMPERED: Entry 131: its content does not match its hash" in serial.stderr
    assert f"TAMPERED: Signature {signature}: differs from what the audit trail recorded" in serial.stderr
    assert "... and 9 more." in serial.stderr  # more than are shown: the counts of every part add up


def test_the_parts_give_what_the_whole_gives(app: Flask, trail: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain cut into stretches and joined finds what one walk over it finds."""
    tamper(app, "UPDATE audit_events SET reason = 'x' WHERE id IN (39, 40, 41)",
           "DELETE FROM audit_events WHERE id = 120")
    with app.app_context():
        parts = audit_verify.verify_chain()
        monkeypatch.setattr(audit_verify, "TRAIL_STRETCH", 10 ** 9)
        whole = audit_verify.verify_chain()
    assert (parts.entries, parts.last_id, parts.last_hash) == (whole.entries, whole.last_id, whole.last_hash)
    assert parts.findings == whole.findings
    assert whole.findings.count == 4
