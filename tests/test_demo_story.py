"""seed-demo tells a consistent story (issue 11, item 3): its history runs on a simulated
clock that every stored time reads, in time order across batches, ends before now, and
every audit entry it writes says it is demo data. Requests never run on that clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from config import TestingConfig
from lab import create_app
from lab.extensions import UTCDateTime, db
from lab.models import AuditEvent, Batch, Container, Signature, StepEntry, StepValue
from lab.models.base import simulated_clock, utcnow
from lab.services import materials  # noqa: F401 - registers its SignedRecord (lot decisions) on import
from lab.services.progress import definition_for
from lab.services.signatures import RECORD_TYPES
from tests.conftest import empty_tables
from tests.factories import PASSWORD, get_batch, post_step
from workflows.engine import typed_value
from workflows.formatting import format_datetime
from workflows.timing import culture_day

pytestmark = pytest.mark.requirements("ALCOA-CONTEMPORANEOUS")

#: The time column of each audited table whose rows the demo writes at the time of their action.
TIME_OF = {"patients": "registered_at", "batches": "created_at", "step_entries": "performed_at",
           "step_values": "recorded_at", "signatures": "signed_at", "containers": "created_at",
           "label_prints": "printed_at", "custody_events": "occurred_at", "deviations": "opened_at",
           "qc_results": "recorded_at", "dispositions": "decided_at"}
TABLE_OF_RECORD_TYPE = {name: model.__tablename__ for model, name in RECORD_TYPES.items()}


def is_demo_reason(reason: str | None) -> bool:
    return reason is not None and "demo data" in reason.lower() and "simulated clock" in reason


@dataclass(frozen=True)
class Demo:
    app: Flask
    started: datetime  # real time before and after seeding
    finished: datetime
    output: str  # what seed-demo said


@pytest.fixture(scope="module")
def demo(_schema: None) -> Iterator[Demo]:
    """The demo lab, seeded once for the read-only tests of this module."""
    app = create_app(TestingConfig)
    empty_tables(app)
    started = datetime.now(UTC)
    result = app.test_cli_runner().invoke(args=["seed-demo", "--password", PASSWORD])
    assert result.exit_code == 0, result.output
    yield Demo(app, started, datetime.now(UTC), result.output)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def trail() -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def insert_entries() -> dict[tuple[str, str], AuditEvent]:
    """The audit entry of each row's insert, by (table, row id)."""
    return {(e.table_name, e.row_id): e for e in trail() if e.operation == "insert"}


# --- requests never run on the simulated clock ----------------------------------------------------
# (These use the function-scoped app, so they come before the module's seeded demo.)


def test_a_request_after_seeding_is_audited_at_the_real_time_without_the_demo_mark(
        app: Flask, runner: FlaskCliRunner, login) -> None:
    assert runner.invoke(args=["seed-demo", "--password", PASSWORD]).exit_code == 0
    with app.app_context():
        last_demo_id = db.session.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1))
        number = db.session.scalars(select(Batch.batch_number).where(~Batch.entries.any())).first()
    before = datetime.now(UTC)
    client = login("tech1")
    response = post_step(app, client, number, "receipt")
    assert response.status_code == 302, response.get_data(as_text=True)
    after = datetime.now(UTC)
    with app.app_context():
        written = db.session.scalars(select(AuditEvent).where(AuditEvent.id > last_demo_id)).all()
        receipt = next(e for e in get_batch(number).entries if e.step_key == "receipt")
        assert {e.action for e in written} >= {"step.record"}
        for entry in written:
            assert before <= entry.occurred_at <= after, entry.occurred_at
            assert not is_demo_reason(entry.reason), entry.reason
        assert before <= receipt.performed_at <= after


def test_a_request_served_while_the_clock_is_simulated_reads_the_real_clock(app: Flask, make_batch, login) -> None:
    number = make_batch("enrichment", verify=False)
    client = login("tech2")
    with app.app_context():
        batch = get_batch(number)
        receipt, version = next(e for e in batch.entries if e.step_key == "receipt"), batch.version
        last_id = db.session.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1))
    past = datetime.now(UTC) - timedelta(days=3)
    before = datetime.now(UTC)
    with simulated_clock(past):
        assert utcnow() == past  # outside the request: the simulated time
        response = client.post(f"/batches/{number}/entries/{receipt.id}/verify",
                               data={"username": "tech2", "password": PASSWORD, "batch_version": version})
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.app_context():
        written = db.session.scalars(select(AuditEvent).where(AuditEvent.id > last_id)).all()
        assert written
        for entry in written:
            assert entry.occurred_at >= before
            assert not is_demo_reason(entry.reason)
        [signature] = db.session.scalars(select(Signature).where(Signature.record_id == receipt.id,
                                                                 Signature.meaning == "verified")).all()
        assert signature.signed_at >= before


def test_the_clock_cannot_be_simulated_in_a_request_nor_run_backwards_or_ahead(app: Flask) -> None:
    past = datetime.now(UTC) - timedelta(days=2)
    with app.test_request_context("/"), pytest.raises(RuntimeError), simulated_clock(past):
        pass
    with simulated_clock(past) as clock:
        clock.set(past + timedelta(hours=1))
        assert utcnow() == past + timedelta(hours=1)
        with pytest.raises(ValueError, match="cannot go back"):
            clock.set(past)
        with pytest.raises(ValueError, match="ahead of the real time"):
            clock.set(datetime.now(UTC) + timedelta(minutes=1))
        with pytest.raises(RuntimeError), simulated_clock(past):
            pass
    assert utcnow() - datetime.now(UTC) < timedelta(seconds=1)  # the real clock again


# --- the seeded demo ----------------------------------------------------------------------------


def test_verify_audit_passes_on_the_demo(demo: Demo) -> None:
    result = demo.app.test_cli_runner().invoke(args=["verify-audit"])
    assert result.exit_code == 0, result.output
    assert "Intact" in result.output


def test_audit_times_never_decrease_with_id(demo: Demo) -> None:
    with demo.app.app_context():
        times = [e.occurred_at for e in trail()]
    assert len(times) > 500
    assert all(earlier <= later for earlier, later in pairwise(times))
    assert times[-1] - times[0] > timedelta(days=20)  # a history over weeks, not one instant


def test_every_demo_audit_entry_says_it_is_demo_data(demo: Demo) -> None:
    with demo.app.app_context():
        entries = trail()
        assert entries
        assert [e.id for e in entries if not is_demo_reason(e.reason)] == []
        corrected = [e for e in entries if e.action == "step.correct"]
        assert corrected and all(e.reason.startswith("Transcription error") for e in corrected)  # its own reason kept
        history = f"{format_datetime(entries[0].occurred_at)} to {format_datetime(entries[-1].occurred_at)}"
    assert f"Its history, {history}, was recorded on a simulated clock" in demo.output


def test_no_stored_time_is_in_the_future_nor_before_the_history_began(demo: Demo) -> None:
    with demo.app.app_context():
        first = min(e.occurred_at for e in trail())
        checked = 0
        for table in db.metadata.sorted_tables:
            for column in table.columns:
                if isinstance(column.type, UTCDateTime):
                    for moment in db.session.scalars(select(column).where(column.is_not(None))):
                        assert first <= moment <= demo.finished, (table.name, column.name, moment)
                        checked += 1
    assert checked > 500
    assert demo.started - first > timedelta(days=20)  # the released batch started three weeks ago


def test_every_row_shares_the_time_of_its_audit_entry(demo: Demo) -> None:
    """The entry, its values, its signature, its containers and their audit entries: one instant."""
    with demo.app.app_context():
        inserted = insert_entries()
        for table_name, column_name in TIME_OF.items():
            table = db.metadata.tables[table_name]
            rows = db.session.execute(select(table.c.id, table.c[column_name])).all()
            assert rows, table_name
            for row_id, moment in rows:
                assert moment == inserted[(table_name, str(row_id))].occurred_at, (table_name, row_id)


def test_every_signature_follows_the_audit_entry_of_what_it_signs(demo: Demo) -> None:
    with demo.app.app_context():
        inserted = insert_entries()
        signatures = db.session.scalars(select(Signature)).all()
        assert {s.meaning for s in signatures} >= {"performed", "verified", "corrected"}
        for signature in signatures:
            signed = inserted[(TABLE_OF_RECORD_TYPE[signature.record_type], str(signature.record_id))]
            own = inserted[("signatures", str(signature.id))]
            assert signature.signed_at >= signed.occurred_at, signature.id
            assert signed.id < own.id
            assert signature.signed_at == own.occurred_at


def test_each_batch_records_its_steps_in_order_and_in_time(demo: Demo) -> None:
    with demo.app.app_context():
        for batch in db.session.scalars(select(Batch)):
            order = [s.key for s in definition_for(batch).steps]
            entries = sorted(batch.entries, key=lambda e: e.id)
            assert [e.step_key for e in entries] == sorted((e.step_key for e in entries), key=order.index)
            assert all(earlier.performed_at < later.performed_at for earlier, later in pairwise(entries))


def _value(entry: StepEntry, field_key: str) -> object:
    [value] = [v for v in entry.values if v.field_key == field_key and not v.is_correction]
    current = next((v for v in entry.values if v.supersedes_id == value.id), value)
    spec = definition_for(entry.batch).step(entry.step_key).field(field_key)
    return typed_value(spec, current.text)


def test_every_freezer_run_starts_after_harvest_and_fill_and_ends_after_it_starts(demo: Demo) -> None:
    with demo.app.app_context():
        runs = db.session.scalars(select(StepEntry).where(StepEntry.step_key == "cryopreservation")).all()
        assert len(runs) >= 3
        for run in runs:
            steps = {e.step_key: e.performed_at for e in run.batch.entries}
            bags = [c.created_at for c in db.session.scalars(select(Container).where(
                Container.batch_id == run.batch_id, Container.kind == "product_bag"))]
            start, end = _value(run, "run_start"), _value(run, "run_end")
            assert bags and start >= max(bags)
            assert steps["harvest"] < steps["formulation"] <= start < end <= steps["cryopreservation"]


def test_every_count_is_recorded_on_its_culture_day(demo: Demo) -> None:
    with demo.app.app_context():
        counts = db.session.scalars(select(StepEntry).where(StepEntry.step_key == "expansion")).all()
        assert len(counts) >= 10
        for count in counts:
            [activation] = [e for e in count.batch.entries if e.step_key == "activation"]
            day = culture_day(activation.performed_at, count.performed_at)
            assert _value(count, "culture_day") == day, count.batch.batch_number


def test_values_are_recorded_with_their_entry(demo: Demo) -> None:
    """Every value but a correction carries its entry's time; a correction comes after it."""
    with demo.app.app_context():
        values = db.session.scalars(select(StepValue)).all()
        for value in values:
            entry_time = value.entry.performed_at
            assert (value.recorded_at > entry_time) if value.is_correction \
                else (value.recorded_at == entry_time)
