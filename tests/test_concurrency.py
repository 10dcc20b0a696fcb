"""Two people saving the same step at once: one wins, the other is told who and when.

The threaded tests use real concurrent connections: on PostgreSQL (TEST_DATABASE_URL) they
race on row locks; on SQLite they use a database file, whose writes SQLite serializes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab import audit
from lab.demo import Recorder
from lab.exceptions import ConcurrentChangeError, SignatureError
from lab.extensions import db
from lab.models import Administration, AuditEvent, Container, Patient, SigningFailure, Site, StepEntry, User
from lab.services.batches import start_batch
from lab.services.bedside import AdministrationInput, AlreadyDone, BedsideInput, administer_bag, check_at_bedside
from lab.services.patients import PatientInput, register_patient
from lab.services.signatures import LOCKOUT_AFTER, Credentials, reauthenticate, record_failed_attempt
from lab.services.site_receipt import ReceiptInput, receive_shipment
from lab.services.steps import record_step
from tests.clinic import find_shipment, ship
from tests.conftest import ROLES, setup_lab
from tests.factories import PASSWORD, PASSWORD_HASH, form_data, get_batch, step_values, user
from tests.quality import record_results, release

pytestmark = pytest.mark.requirements("PROC-6")


def _race(app: Flask, work: Callable[[str, threading.Barrier], object], names: tuple[str, ...]) -> dict[str, object]:
    """Run ``work(name)`` in one thread per name, each in its own app context and connection,
    released together; return what each returned or raised."""
    barrier = threading.Barrier(len(names))
    outcomes: dict[str, object] = {}

    def run(name: str) -> None:
        with app.app_context():
            try:
                outcomes[name] = work(name, barrier)
                db.session.commit()
            except Exception as error:  # noqa: BLE001 - the outcome under test
                db.session.rollback()
                outcomes[name] = error

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_concurrent_saves_of_one_step_one_wins_the_other_is_told_who(shared_app: Flask) -> None:
    setup_lab(shared_app)
    with shared_app.app_context():
        tech1 = user("tech1")
        patient = register_patient(PatientInput("SLE-09", "AB", date(1980, 1, 1), 60, "SLE"), actor=tech1)
        number = start_batch(patient, actor=tech1).batch_number
        db.session.commit()

    def save(name: str, barrier: threading.Barrier) -> str:
        batch = get_batch(number)
        version = batch.version  # the form was built on this version
        raw = step_values("receipt", when=datetime.now(UTC), batch=batch)
        barrier.wait()
        record_step(batch, "receipt", raw, comment="", expected_version=version, actor=user(name),
                    credentials=Credentials(PASSWORD))
        return "saved"

    outcomes = _race(shared_app, save, ("tech1", "tech2"))
    saved = [name for name, outcome in outcomes.items() if outcome == "saved"]
    lost = [outcome for outcome in outcomes.values() if isinstance(outcome, ConcurrentChangeError)]
    assert len(saved) == 1 and len(lost) == 1, outcomes
    winner = ROLES[saved[0]][1]
    assert lost[0].changed_by == winner
    assert winner in str(lost[0]) and "Nothing of yours was saved" in str(lost[0])
    with shared_app.app_context():
        batch = get_batch(number)
        assert [e.performed_by.username for e in batch.entries] == saved
        assert batch.state == "in_process"


@pytest.mark.requirements("COI-2")
def test_concurrent_registrations_get_distinct_cois(shared_app: Flask) -> None:
    setup_lab(shared_app)

    def register(name: str, barrier: threading.Barrier) -> str:
        barrier.wait()
        ref = f"SLE-{name.upper()}"
        return register_patient(PatientInput(ref, "AB", date(1980, 1, 1), 60, "SLE"), actor=user("tech1")).coi

    outcomes = _race(shared_app, register, ("a1", "b2", "c3"))
    assert all(isinstance(coi, str) for coi in outcomes.values()), outcomes
    assert len(set(outcomes.values())) == 3
    with shared_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Patient)) == 3


def test_losing_form_keeps_its_values_and_names_who_saved_first(app: Flask, make_batch, login) -> None:
    number = make_batch(until="receipt")
    first = app.test_client()
    second = app.test_client()
    for client, name in ((first, "tech1"), (second, "tech2")):
        client.post("/login", data={"username": name, "password": "correct-horse-42"})
    form_a = first.get(f"/batches/{number}/steps/receipt").get_data(as_text=True)
    second.get(f"/batches/{number}/steps/receipt")
    version = int(re.search(r'name="batch_version"[^>]*value="(\d+)"', form_a).group(1))
    now = datetime.now(UTC)
    with app.app_context():
        theirs = step_values("receipt", when=now, batch=get_batch(number))
        mine = step_values("receipt", when=now, batch=get_batch(number), volume_ml="211")
    saved = first.post(f"/batches/{number}/steps/receipt", data=form_data(theirs, batch_version=version))
    assert saved.status_code == 302
    lost = second.post(f"/batches/{number}/steps/receipt", data=form_data(mine, signer="tech2", batch_version=version))
    page = lost.get_data(as_text=True)
    assert lost.status_code == 409
    assert "Tess Technician changed this batch" in page
    assert 'value="211"' in page  # nothing typed is lost
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(StepEntry)) == 1


@pytest.mark.requirements("P11-300d")
def test_simultaneous_wrong_signing_passwords_all_count_and_lock_once(shared_app: Flask) -> None:
    """20 refused signatures at once, each on its own connection, as the signing views keep
    them: every one is counted (no lost update) and the LOCKOUT_AFTER-th locks the account;
    an attempt that starts after the lock is refused as locked, without counting."""
    setup_lab(shared_app)
    attempts = tuple(f"attempt-{n}" for n in range(20))

    def refuse(name: str, barrier: threading.Barrier) -> str:
        signer_id = user("tech1").id
        db.session.rollback()  # no connection held while waiting: twenty would exhaust the pool
        barrier.wait()
        try:
            signer = db.session.get(User, signer_id)
            reauthenticate(signer, Credentials(name), meaning="performed", subject="a step", batch_id=None)
        except SignatureError as error:
            db.session.rollback()
            return record_failed_attempt(error.attempt) if error.attempt else "refused as locked"
        return "signed"

    outcomes = _race(shared_app, refuse, attempts)
    assert all(isinstance(note, str) and "lock" in note for note in outcomes.values()), outcomes
    counted = sum(1 for note in outcomes.values() if note != "refused as locked")
    assert counted >= LOCKOUT_AFTER
    with shared_app.app_context():
        tech1 = user("tech1")
        assert (tech1.failed_signatures, tech1.locked_at is not None) == (counted, True)
        assert db.session.scalar(select(func.count()).select_from(SigningFailure)) == counted
        changes = db.session.execute(select(AuditEvent.field, AuditEvent.new_value).where(
            AuditEvent.table_name == "users", AuditEvent.action == "signature.refused").order_by(AuditEvent.id)).all()
        assert [value for field, value in changes if field == "failed_signatures"] == [
            str(n) for n in range(1, counted + 1)]
        locking = [index for index, (field, _) in enumerate(changes) if field == "locked_at"]
        assert len(locking) == 1 and changes[locking[0] - 1] == ("failed_signatures", str(LOCKOUT_AFTER))


def test_two_infusions_of_one_bag_at_once_record_one(shared_app: Flask) -> None:
    """Two clinicians recording the same bag's infusion at the same moment: one infusion is kept,
    the other is refused as already done (the batch row is locked), never a second row or a 500."""
    setup_lab(shared_app)
    now = datetime.now(UTC)
    start = now - timedelta(days=14)
    with shared_app.app_context():
        with audit.action("test.setup", actor=None):
            site = Site(code="NUH-HEM", name="Northern University Hospital", address="1 Hospital Road", contact="Ward")
            db.session.add(site)
            db.session.flush()
            db.session.add_all(User(username=name, full_name=name, role="clinician", password_hash=PASSWORD_HASH,
                                    site_id=site.id) for name in ("nurse1", "doc1"))
        patient = register_patient(PatientInput("SLE-01", "AB", date(1980, 5, 1), 58.0, "SLE"),
                                   actor=user("super1"), now=start)
        batch = start_batch(patient, actor=user("super1"), now=start)
        Recorder(user("tech1"), user("tech2"), PASSWORD, now).run(
            batch, start, expansion=({"culture_day": "6", "viable_cells": "1.5e9", "viability_pct": "92"},))
        db.session.commit()
        number, site_id = batch.batch_number, site.id
    record_results(shared_app, number)
    release(shared_app, number)
    shipment_number = ship(shared_app, number, site_id)
    with shared_app.app_context():
        shipment = find_shipment(shipment_number)
        [code] = [bag.container.code for bag in shipment.bags]
        receive_shipment(shipment, ReceiptInput("DS-0042", [code], "-180", "-170", True, now - timedelta(hours=3),
                                                "LN2 dewar 2"), logger_file=None, actor=user("nurse1"),
                         credentials=Credentials(PASSWORD, "nurse1"), now=now - timedelta(hours=3))
        check_at_bedside(BedsideInput(code, "wristband", wristband=patient_coi(number), second_username="doc1",
                                      second_password=PASSWORD),
                         actor=user("nurse1"), credentials=Credentials(PASSWORD, "nurse1"), now=now - timedelta(hours=1))
        db.session.commit()
    zone = ZoneInfo(shared_app.config["TIMEZONE"])
    typed = [(now - timedelta(minutes=m)).astimezone(zone).strftime("%Y-%m-%dT%H:%M") for m in (50, 45, 40, 30)]

    def infuse(name: str, barrier: threading.Barrier) -> object:
        bag = db.session.scalar(select(Container).where(Container.code == code))
        barrier.wait()
        return administer_bag(bag, AdministrationInput(*typed, reactions="None observed."), actor=user(name), credentials=Credentials(PASSWORD))

    outcomes = _race(shared_app, infuse, ("nurse1", "doc1"))
    # PostgreSQL: the second waits for the batch's row lock, then finds the bag infused; SQLite: its
    # write loses the race for the batch's version. Either way it is refused, and says why.
    won = [o for o in outcomes.values() if isinstance(o, Administration)]
    lost = [o for o in outcomes.values() if isinstance(o, (AlreadyDone, ConcurrentChangeError))]
    assert (len(won), len(lost)) == (1, 1), outcomes
    with shared_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Administration)) == 1
        assert db.session.scalar(select(Container.status).where(Container.code == code)) == "infused"


def patient_coi(number: str) -> str:
    return get_batch(number).patient.coi
