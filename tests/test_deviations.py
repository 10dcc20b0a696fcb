"""Deviations: opened by the system or by hand, classified and investigated, closed by QA with a
signature, listed per batch and across batches with filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import AuditEvent, Deviation, Signature
from lab.services.deviations import open_deviation
from tests.factories import get_batch, page_text, signature, user
from tests.quality import record_results, words

pytestmark = pytest.mark.requirements("PROC-9")

INVESTIGATION = {"classification": "minor", "root_cause": "Counter mis-set after maintenance.",
                 "impact": "None: the repeated count was in limit; no other batch counted that day.",
                 "corrective_action": "Count repeated with a calibrated counter.",
                 "preventive_action": "Counter set-up added to the daily checklist."}


def report(client, number: str, **data: str):
    return client.post(f"/batches/{number}/deviations/new",
                       data={"title": "Incubator door found ajar", "description": "Found at 07:10, closed at once.",
                             **data})


def only_deviation(app, number: str) -> Deviation:
    with app.app_context():
        [deviation] = get_batch(number).deviations
        db.session.expunge(deviation)
        return deviation


def test_a_deviation_is_reported_by_hand(app, make_batch, login):
    number = make_batch(until="harvest")
    tech = login("tech1")
    response = report(tech, number)
    assert response.status_code == 302
    deviation = only_deviation(app, number)
    assert (deviation.source, deviation.status, deviation.classification) == ("manual", "open", None)
    assert response.headers["Location"] == f"/deviations/{deviation.number}"
    page = words(tech.get(f"/deviations/{deviation.number}"))
    assert "Incubator door found ajar" in page and "Reported by hand" in page and "Tess Technician" in page


@pytest.mark.parametrize(("data", "message"), [
    ({"title": "Oops"}, "Say in 5 to 255 characters what departed from the process."),
    ({"description": "  "}, "Describe what happened, when and what was done at once."),
])
def test_a_deviation_without_title_or_description_is_refused(app, make_batch, login, data, message):
    number = make_batch(until="receipt")
    response = report(login("tech1"), number, **data)
    assert response.status_code == 422
    assert message in page_text(response)
    with app.app_context():
        assert get_batch(number).deviations == []


def test_auditors_and_admins_do_not_report_deviations(app, make_batch, login):
    number = make_batch(until="receipt")
    for username in ("auditor1", "admin"):
        response = report(login(username), number)
        assert response.status_code == 403
    with app.app_context():
        assert get_batch(number).deviations == []


def test_a_deviation_is_investigated_then_closed_by_qa_with_a_signature(app, make_batch, login):
    number = make_batch(until="harvest")
    report(login("tech1"), number)
    deviation = only_deviation(app, number)
    supervisor = login("super1")
    assert supervisor.post(f"/deviations/{deviation.number}/investigation", data=INVESTIGATION).status_code == 302
    qa = login("qa1")
    response = qa.post(f"/deviations/{deviation.number}/close", data=signature("qa1"))
    assert response.status_code == 302
    with app.app_context():
        closed = db.session.get(Deviation, deviation.id)
        assert (closed.status, closed.closed_by.username, closed.investigated_by.username) == (
            "closed", "qa1", "super1")
        assert closed.root_cause == INVESTIGATION["root_cause"]
        [signed] = db.session.scalars(select(Signature).where(Signature.record_type == "deviation")).all()
        assert (signed.meaning, signed.printed_name, signed.record_id) == ("reviewed", "Quentin Assurance", deviation.id)
    page = words(qa.get(f"/deviations/{deviation.number}"))
    assert "✔ Quentin Assurance — reviewed" in page and "closed" in page
    assert "Save the investigation" not in page  # closed: no form
    batch_page = words(qa.get(f"/batches/{number}"))
    assert "Closed deviations (1)" in batch_page and "Open deviations (0)" in batch_page


def test_closing_a_deviation_without_its_investigation_is_refused(app, make_batch, login):
    number = make_batch(until="harvest")
    report(login("tech1"), number)
    deviation = only_deviation(app, number)
    login("super1").post(f"/deviations/{deviation.number}/investigation",
                         data={**INVESTIGATION, "preventive_action": "", "classification": ""})
    qa = login("qa1")
    with app.app_context():
        audit_before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    response = qa.post(f"/deviations/{deviation.number}/close", data=signature("qa1"))
    assert response.status_code == 422
    assert ("The deviation cannot be closed before its investigation is complete: classification, "
            "preventive action missing.") in page_text(response)
    with app.app_context():
        assert db.session.get(Deviation, deviation.id).status == "open"
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == audit_before


def test_only_qa_closes_and_a_closed_deviation_never_changes(app, make_batch, login):
    number = make_batch(until="harvest")
    report(login("tech1"), number)
    deviation = only_deviation(app, number)
    login("super1").post(f"/deviations/{deviation.number}/investigation", data=INVESTIGATION)
    response = login("super1").post(f"/deviations/{deviation.number}/close", data=signature("super1"))
    assert response.status_code == 403
    assert "Only a qa officer may close a deviation" in page_text(response)
    qa = login("qa1")
    assert qa.post(f"/deviations/{deviation.number}/close", data=signature("qa1")).status_code == 302
    response = qa.post(f"/deviations/{deviation.number}/close", data={"password": "correct-horse-42"})
    assert response.status_code == 409
    assert "is already closed" in page_text(response)
    response = login("super1").post(f"/deviations/{deviation.number}/investigation",
                                     data={**INVESTIGATION, "root_cause": "Something else."})
    assert response.status_code == 409
    assert "is closed: its investigation can no longer change" in page_text(response)


def test_an_investigation_is_revised_without_losing_the_earlier_wording(app, make_batch, login):
    number = make_batch(until="harvest")
    report(login("tech1"), number)
    deviation = only_deviation(app, number)
    supervisor = login("super1")
    supervisor.post(f"/deviations/{deviation.number}/investigation", data=INVESTIGATION)
    supervisor.post(f"/deviations/{deviation.number}/investigation",
                    data={**INVESTIGATION, "classification": "major", "root_cause": "Counter firmware fault."})
    with app.app_context():
        changes = db.session.scalars(select(AuditEvent).where(
            AuditEvent.table_name == "deviations", AuditEvent.field == "root_cause")).all()
        assert [(c.old_value, c.new_value) for c in changes] == [
            (None, INVESTIGATION["root_cause"]), (INVESTIGATION["root_cause"], "Counter firmware fault.")]
    response = supervisor.post(f"/deviations/{deviation.number}/investigation",
                               data={**INVESTIGATION, "classification": "major", "root_cause": "Counter firmware fault."})
    assert response.status_code == 422
    assert "Nothing changed" in page_text(response)
    response = supervisor.post(f"/deviations/{deviation.number}/investigation",
                               data={**INVESTIGATION, "classification": "catastrophic"})
    assert response.status_code == 422
    assert login("qc1").post(f"/deviations/{deviation.number}/investigation", data=INVESTIGATION).status_code == 302
    assert login("tech1").post(f"/deviations/{deviation.number}/investigation", data=INVESTIGATION).status_code == 403


def test_deviations_are_listed_across_batches_with_filters(app, make_batch, login):
    first = make_batch(until="harvest", ref="SLE-01")
    second = make_batch(ref="SLE-02")
    record_results(app, second, endotoxin="8")  # OOS: opened by the system
    tech = login("tech1")
    report(tech, first)
    manual = only_deviation(app, first)
    login("super1").post(f"/deviations/{manual.number}/investigation", data=INVESTIGATION)
    login("qa1").post(f"/deviations/{manual.number}/close", data=signature("qa1"))
    client = login("auditor1")
    everything = words(client.get("/deviations"))
    assert "2 deviations." in everything
    assert "1 deviation." in words(client.get("/deviations?status=open"))
    closed = words(client.get("/deviations?status=closed&classification=minor"))
    assert "1 deviation." in closed and manual.number in closed
    assert "1 deviation." in words(client.get("/deviations?source=oos"))
    assert "0 deviations." in words(client.get("/deviations?classification=critical"))
    assert "1 deviation." in words(client.get("/deviations?classification=unclassified"))
    assert f"1 deviation. Number Batch What Source Classification Status Opened {manual.number}" in words(
        client.get(f"/deviations?batch={first.lower()}"))
    for bad in ("status=pending", "classification=severe", "source=moon"):
        response = client.get(f"/deviations?{bad}")
        assert response.status_code == 422
    assert client.get("/deviations/DEV-1999-0001").status_code == 404


def test_other_services_open_deviations_through_one_function(app, make_batch):
    number = make_batch(until="harvest")
    with app.app_context():
        batch = get_batch(number)
        with audit.action("custody.mismatch", actor=user("tech1")):
            deviation = open_deviation(batch, source="custody", title="Bag of another patient scanned",
                                       description="Scanned at transfer.", actor=user("tech1"),
                                       now=datetime.now(UTC))
        db.session.commit()
        assert deviation.number.startswith("DEV-") and deviation.source == "custody"
        with pytest.raises(ValueError):
            open_deviation(batch, source="gossip", title="?", actor=user("tech1"), now=datetime.now(UTC))
