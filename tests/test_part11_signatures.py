"""21 CFR Part 11 electronic signatures (DOMAIN.md §4.1), one test per requirement this
release touches: steps, QC results, deviation closures and QA decisions all sign the same way."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import AuditEvent, Signature, SigningFailure
from lab.services.signatures import LOCKOUT_AFTER, entry_sha256
from tests.factories import PASSWORD, entries, get_batch, page_text, signature, snapshot, user
from tests.quality import post_decision, post_result, record_results, release, words
from tests.readback import text_of


def verify_url(app, number: str, step_key: str = "receipt") -> str:
    with app.app_context():
        return f"/batches/{number}/entries/{entries(number, step_key)[0].id}/verify"


def verify(app, client, number: str, **components: str):
    with app.app_context():
        version = get_batch(number).version
    return client.post(verify_url(app, number), data={"batch_version": version, **components})


def failures(app) -> list[SigningFailure]:
    with app.app_context():
        rows = db.session.scalars(select(SigningFailure).order_by(SigningFailure.id)).all()
        for row in rows:
            db.session.expunge(row)
        return list(rows)


@pytest.mark.requirements("P11-50", "A11-14")
def test_11_50_a_signature_shows_printed_name_time_and_meaning(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    release(app, number)
    with app.app_context():
        shown = {(s.record_type, s.meaning): (s.printed_name, s.signed_at.strftime("%Y-%m-%d %H:%M"))
                 for s in db.session.scalars(select(Signature).where(Signature.batch_id.is_not(None)))}
    assert set(shown) == {("step_entry", "performed"), ("step_entry", "verified"), ("qc_result", "performed"),
                          ("disposition", "approved for release")}
    client = login("auditor1")
    record = words(client.get(f"/batches/{number}"))
    for meaning in ("performed", "verified"):
        name, at = shown[("step_entry", meaning)]
        assert f"✔ {name} — {meaning} — " in record
    name, at = shown[("disposition", "approved for release")]
    assert f"✔ {name} — approved for release — {at} UTC" in record
    name, at = shown[("qc_result", "performed")]
    assert f"✔ {name} — performed — {at} UTC" in words(client.get(f"/batches/{number}/results"))


@pytest.mark.requirements("P11-50", "A11-14")
def test_11_50_b_the_printed_certificate_carries_the_release_signature(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    release(app, number)
    response = login("auditor1").get(f"/batches/{number}/coa.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    text = text_of(response.data)
    with app.app_context():
        signed = db.session.scalars(select(Signature).where(Signature.record_type == "disposition")).one()
        at = signed.signed_at.strftime("%Y-%m-%d %H:%M")
    assert "Signed by Quentin Assurance. Meaning: approved for release." in text
    assert at in text
    assert "Downloaded by Audrey Auditor" in text


@pytest.mark.requirements("P11-70", "A11-14")
def test_11_70_a_signature_is_linked_to_a_hash_of_its_record_and_shows_when_the_record_changed(app, make_batch, login):
    number = make_batch(until="enrichment")
    with app.app_context():
        entry = entries(number, "receipt")[0]
        performed = db.session.scalars(select(Signature).where(Signature.record_type == "step_entry",
                                                               Signature.meaning == "performed")).one()
        assert (performed.record_id, performed.content_sha256) == (entry.id, entry_sha256(entry))
        version = get_batch(number).version
    tech = login("tech1")
    response = tech.post(f"/batches/{number}/entries/{entry.id}/fields/volume_ml/correct",
                         data={"value": "185", "reason": "Scale print-out reads 185 mL.", "batch_version": version,
                               **signature("tech1")})
    assert response.status_code == 302
    page = words(tech.get(f"/batches/{number}"))
    assert "✖ Tess Technician — performed" in page  # the original signature no longer matches
    assert "✖ Theo Second — verified" in page
    assert "✔ Tess Technician — corrected" in page  # the corrector signs the corrected entry


@pytest.mark.requirements("P11-70", "A11-14")
def test_11_70_a_signature_cannot_be_copied_to_another_record(app, make_batch, login):
    make_batch(until="enrichment")  # its receipt carries tech2's verification
    other = make_batch(until="enrichment", ref="SLE-02", verify=False)
    with app.app_context():
        original = db.session.scalars(select(Signature).where(Signature.meaning == "verified")).one()
        target = entries(other, "receipt")[0]
        with audit.action("test.forge", actor=None):  # what a tampered database would hold
            db.session.add(Signature(batch_id=target.batch_id, record_type="step_entry", record_id=target.id,
                                     signer_id=original.signer_id, printed_name=original.printed_name,
                                     meaning="verified", signed_at=original.signed_at,
                                     content_sha256=original.content_sha256))
        db.session.commit()
    page = words(login("auditor1").get(f"/batches/{other}"))
    assert "✖ Theo Second — verified" in page
    assert "Awaiting verification by a second person." in page


@pytest.mark.requirements("P11-100")
def test_11_100_a_signature_belongs_to_its_signer_alone(app, make_batch, login):
    number = make_batch(until="enrichment", verify=False)
    client = login("tech2")
    before = snapshot(app, number)
    response = verify(app, client, number, username="super1", password=PASSWORD)
    assert response.status_code == 403
    assert "That username is not yours: you sign only as yourself (tech2). Nothing was signed." in page_text(response)
    after = snapshot(app, number)
    after.pop("AuditEvent"), before.pop("AuditEvent")
    assert after == before
    [failure] = failures(app)
    assert failure.reason == "username not the signer's"
    with app.app_context():
        assert failure.user_id == user("tech2").id


@pytest.mark.requirements("P11-200")
def test_11_200_a_1_i_the_first_signature_of_a_session_takes_both_components(app, make_batch, login):
    number = make_batch(until="enrichment", verify=False)
    client = login("tech2")
    form = page_text(client.get(verify_url(app, number)))
    assert 'name="username"' in form and 'name="password"' in form
    before = snapshot(app, number)
    response = verify(app, client, number, password=PASSWORD)
    assert response.status_code == 422
    assert "Your first signature in this session needs your username as well as your password" in page_text(response)
    assert snapshot(app, number) == before
    assert failures(app) == []  # a missing component is not an attempt
    assert verify(app, client, number, username="TECH2 ", password=PASSWORD).status_code == 302


@pytest.mark.requirements("P11-200")
def test_11_200_a_1_ii_later_signatures_of_the_session_take_the_password(app, make_batch, login):
    first = make_batch(until="enrichment", verify=False)
    second = make_batch(until="enrichment", verify=False, ref="SLE-02")
    client = login("tech2")
    assert verify(app, client, first, **signature("tech2")).status_code == 302
    form = page_text(client.get(verify_url(app, second)))
    assert 'name="username"' not in form and 'name="password"' in form
    assert verify(app, client, second, password=PASSWORD).status_code == 302


@pytest.mark.requirements("P11-200")
def test_11_200_a_outside_a_continuous_session_every_signature_takes_both_components(app, make_batch, login):
    first = make_batch(until="enrichment", verify=False)
    second = make_batch(until="enrichment", verify=False, ref="SLE-02")
    client = login("tech2")
    assert verify(app, client, first, **signature("tech2")).status_code == 302
    client = login("tech2")  # a new sign-in (after sign-out or the inactivity time-out)
    assert 'name="username"' in page_text(client.get(verify_url(app, second)))
    assert verify(app, client, second, password=PASSWORD).status_code == 422


@pytest.mark.requirements("P11-200")
@pytest.mark.parametrize(("password", "status", "message", "kept"), [
    ("not-my-password", 403, "The password is wrong: nothing was signed.", True),
    ("", 422, "Enter your password to sign.", False),
])
def test_11_200_a_2_signing_with_a_wrong_or_empty_password_signs_nothing(app, make_batch, login, password, status,
                                                                          message, kept):
    number = make_batch()
    qc = login("qc1")
    with app.app_context():
        signatures_before = db.session.scalar(select(func.count()).select_from(Signature))
    response = post_result(app, qc, number, "viability", "91", password=password)
    assert response.status_code == status
    assert message in page_text(response)
    with app.app_context():
        assert get_batch(number).results == []
        assert db.session.scalar(select(func.count()).select_from(Signature)) == signatures_before
    assert len(failures(app)) == (1 if kept else 0)


@pytest.mark.requirements("P11-300d")
def test_11_300_d_a_refused_attempt_is_recorded_although_the_action_is_rolled_back(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    qa = login("qa1")
    with app.app_context():
        events_before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    response = post_decision(app, qa, number, "release", password="guess")
    assert response.status_code == 403
    assert "The password is wrong: nothing was signed. 4 more refused attempts will lock your account." in (
        page_text(response))
    with app.app_context():
        batch = get_batch(number)
        assert (batch.state, batch.dispositions) == ("qa_review", [])
        [failure] = db.session.scalars(select(SigningFailure)).all()
        assert (failure.user.username, failure.meaning, failure.reason, failure.batch_id) == (
            "qa1", "approved for release", "wrong password", batch.id)
        assert failure.subject == f"Release of batch {number}"
        events = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id).offset(events_before)).all()
        assert {e.action for e in events} == {"signature.refused"}
        assert {e.table_name for e in events} == {"signing_failures", "users"}
        assert user("qa1").failed_signatures == 1


@pytest.mark.requirements("P11-300d")
def test_11_300_d_refused_attempts_in_a_row_lock_the_account_until_an_admin_unlocks_it(app, make_batch, login):
    number = make_batch(until="enrichment", verify=False)
    client = login("tech2")
    for attempt in range(1, LOCKOUT_AFTER + 1):
        response = verify(app, client, number, username="tech2", password=f"wrong-{attempt}")
        assert response.status_code == 403
    assert "Your account is now locked after 5 refused signing attempts in a row" in page_text(response)
    with app.app_context():
        assert user("tech2").locked_at is not None
    assert client.get("/").status_code == 302  # signed out at once
    response = client.post("/login", data={"username": "tech2", "password": PASSWORD})
    assert response.status_code == 401
    assert "locked account" in page_text(response)
    admin = login("admin")
    with app.app_context():
        tech2 = user("tech2").id
    assert "LOCKED since" in words(admin.get(f"/admin/users/{tech2}"))
    assert admin.post(f"/admin/users/{tech2}/unlock", data={"reason": ""}).status_code == 422
    response = admin.post(f"/admin/users/{tech2}/unlock", data={"reason": "Owner confirmed the attempts were hers."})
    assert response.status_code == 302
    assert admin.post(f"/admin/users/{tech2}/unlock", data={"reason": "Again."}).status_code == 422
    with app.app_context():
        assert (user("tech2").locked_at, user("tech2").failed_signatures) == (None, 0)
    client = login("tech2")
    assert verify(app, client, number, **signature("tech2")).status_code == 302


@pytest.mark.requirements("P11-300d")
def test_11_300_d_a_valid_signature_ends_a_run_of_refused_attempts(app, make_batch, login):
    number = make_batch(until="enrichment", verify=False)
    client = login("tech2")
    for _ in range(LOCKOUT_AFTER - 1):
        verify(app, client, number, username="tech2", password="wrong")
    assert verify(app, client, number, **signature("tech2")).status_code == 302
    with app.app_context():
        assert user("tech2").failed_signatures == 0 and user("tech2").locked_at is None
    assert len(failures(app)) == LOCKOUT_AFTER - 1  # still on record


@pytest.mark.requirements("P11-10e", "A11-12.4")
def test_11_10_e_decisions_results_and_closures_are_in_the_audit_trail(app, make_batch, login):
    number = make_batch()
    record_results(app, number, endotoxin="6")
    with app.app_context():
        actions = {e.action for e in db.session.scalars(select(AuditEvent).where(
            AuditEvent.batch_id == get_batch(number).id))}
    assert {"result.record", "step.record", "step.verify"} <= actions
    qa = login("qa1")
    response = post_decision(app, qa, number, "hold", reason="OOS endotoxin: investigate.")
    assert response.status_code == 302
    with app.app_context():
        [event] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "batch.hold",
                                                              AuditEvent.field == "state")).all()
        assert (event.old_value, event.new_value, event.reason, event.actor_username) == (
            "qa_review", "on_hold", "OOS endotoxin: investigate.", "qa1")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*", event.occurred_at.isoformat())
