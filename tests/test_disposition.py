"""QA disposition over HTTP: release and what blocks it, reject, exceptional release of an
out-of-specification product, holds, segregation of duties, and a record closed after release."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import Disposition, Signature
from lab.services.signatures import Credentials
from lab.services.steps import correct_value, record_step, verify_entry
from tests.factories import PASSWORD, entries, get_batch, page_text, signature, snapshot, step_values, user
from tests.quality import EXCEPTIONAL, close_all_deviations, post_decision, record_results, release, state, words

pytestmark = pytest.mark.requirements("PROC-12", "A11-15")


def decisions(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Disposition))


def test_annex_11_15_qa_releases_a_conforming_batch_with_a_signature_naming_the_releaser(app, in_review, login):
    qa = login("qa1")
    page = qa.get(f"/batches/{in_review}/disposition")
    assert page.status_code == 200
    assert "Release : possible." in words(page)
    response = post_decision(app, qa, in_review, "release")
    assert response.status_code == 302, page_text(response)
    with app.app_context():
        batch = get_batch(in_review)
        [decision] = batch.dispositions
        assert (batch.state, decision.decision, decision.state_before, decision.state_after) == (
            "released", "release", "qa_review", "released")
        [signed] = db.session.scalars(select(Signature).where(Signature.record_type == "disposition")).all()
        assert (signed.meaning, signed.printed_name, signed.record_id) == (
            "approved for release", "Quentin Assurance", decision.id)
        signed_at = signed.signed_at.strftime("%Y-%m-%d %H:%M")
    detail = words(qa.get(f"/batches/{in_review}"))
    assert f"✔ Quentin Assurance — approved for release — {signed_at} UTC" in detail


@pytest.mark.requirements("P11-10g")
@pytest.mark.parametrize("username", ["tech1", "super1", "qc1", "auditor1", "admin"])
def test_211_22_only_the_quality_unit_decides_a_disposition(app, in_review, login, username):
    client = login(username)
    assert client.get(f"/batches/{in_review}/disposition").status_code == 403
    before = snapshot(app, in_review)
    response = post_decision(app, client, in_review, "release")
    assert response.status_code == 403
    assert "Only a qa officer may decide a batch's disposition" in page_text(response)
    assert snapshot(app, in_review) == before


def test_a_decision_in_the_wrong_state_is_refused(app, make_batch, login):
    number = make_batch()  # in QC testing: no results yet
    qa = login("qa1")
    before = snapshot(app, number)
    response = post_decision(app, qa, number, "release")
    assert response.status_code == 409
    assert "The batch is in QC testing: 'Release' is taken only when it is in QA review." in page_text(response)
    response = post_decision(app, qa, number, "lift_hold", reason="Nothing to lift.")
    assert response.status_code == 409
    assert snapshot(app, number) == before
    response = post_decision(app, qa, number, "bless")
    assert response.status_code == 422
    assert snapshot(app, number) == before


def test_release_waits_for_a_missing_result(app, make_batch, login):
    number = make_batch()
    record_results(app, number, potency=None)
    response = post_decision(app, login("qa1"), number, "release")
    assert response.status_code == 409  # without its results the batch is not in QA review yet
    assert "The batch is in QC testing: 'Release' is taken only when it is in QA review." in page_text(response)
    review = words(login("qa1").get(f"/batches/{number}/review"))
    assert "Potency: IFN-γ release: no result yet the final result is needed before release" in review


def test_211_192_release_is_blocked_by_an_out_of_specification_result_and_its_open_deviation(app, make_batch, login):
    number = make_batch()
    record_results(app, number, viability="72")
    qa = login("qa1")
    before = decisions(app)
    response = post_decision(app, qa, number, "release")
    assert response.status_code == 409
    text = page_text(response)
    assert "Release refused." in text
    assert "Viability is out of specification: 72 % (specification ≥ 80 %)." in text
    assert "Open deviation: DEV-" in text
    assert decisions(app) == before and state(app, number) == "qa_review"


def test_211_192_release_is_blocked_by_an_open_deviation_until_it_is_investigated_and_closed(app, make_batch, login):
    days = ({"culture_day": "6", "viable_cells": "1.5e9", "viability_pct": "65",
             "comment": "Low after feed; repeated next day."},)
    number = make_batch(expansion=days)
    record_results(app, number)
    qa = login("qa1")
    response = post_decision(app, qa, number, "release")
    assert response.status_code == 409
    assert "Open deviation: DEV-" in page_text(response)
    close_all_deviations(app, number)
    assert post_decision(app, qa, number, "release").status_code == 302


def test_211_188_b_11_release_is_blocked_by_an_entry_awaiting_verification(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    with app.app_context():  # a correction in QA review voids the storage verification
        batch = get_batch(number)
        correct_value(batch, entries(number, "storage")[0], "position", "A6", reason="Moved to A6.",
                      expected_version=None, actor=user("tech1"), credentials=Credentials(PASSWORD))
        db.session.commit()
    response = post_decision(app, login("qa1"), number, "release")
    assert response.status_code == 409
    assert "Entries awaiting verification by a second person: Storage (LN2 vapour phase)." in page_text(response)


@pytest.mark.requirements("PROC-13")
def test_211_188_b_11_segregation_a_qa_officer_who_performed_or_verified_a_step_may_not_decide(app, make_batch, login):
    number = make_batch(until="storage")
    with app.app_context():  # tech2 becomes a QA officer after verifying steps of this batch
        batch = get_batch(number)
        record_step(batch, "storage", step_values("storage", when=datetime.now(UTC), batch=batch), comment="",
                    expected_version=None, actor=user("tech1"), credentials=Credentials(PASSWORD))
        db.session.commit()
    with app.app_context():
        verify_entry(get_batch(number), entries(number, "storage")[0], credentials=Credentials(PASSWORD),
                     expected_version=None, actor=user("super1"))
        db.session.commit()
    record_results(app, number)
    with app.app_context():
        with audit.action("test.promote", actor=None):
            user("tech2").role = "qa_officer"
            user("super1").role = "qa_officer"
        db.session.commit()
    for username, step in (("tech2", "Apheresis receipt"), ("super1", "Storage (LN2 vapour phase)")):
        client = login(username)
        before = snapshot(app, number)
        response = post_decision(app, client, number, "release")
        assert response.status_code == 403
        text = page_text(response)
        assert "of this batch: its disposition must be taken by someone independent of its production" in text
        assert step in text
        assert snapshot(app, number) == before
    assert post_decision(app, login("qa1"), number, "release").status_code == 302


def test_reject_needs_a_reason_and_is_signed_rejected(app, in_review, login):
    qa = login("qa1")
    response = post_decision(app, qa, in_review, "reject", reason="")
    assert response.status_code == 422
    assert "Give the reason for 'Reject'." in page_text(response)
    assert post_decision(app, qa, in_review, "reject", reason="Cassette damaged in storage.").status_code == 302
    assert state(app, in_review) == "rejected"
    with app.app_context():
        [signed] = db.session.scalars(select(Signature).where(Signature.record_type == "disposition")).all()
        assert signed.meaning == "rejected"
        assert get_batch(in_review).dispositions[0].reason == "Cassette damaged in storage."


@pytest.mark.requirements("PROC-14")
def test_atmp_11_5_exceptional_release_records_the_physicians_request_risk_assessment_and_confirmation(app, make_batch, login):
    number = make_batch()
    record_results(app, number, viability="72")
    qa = login("qa1")
    response = post_decision(app, qa, number, "exceptional_release", reason=EXCEPTIONAL["reason"])
    assert response.status_code == 422
    text = page_text(response)
    for missing in ("Record the treating physician's name.", "Record the treating physician's request.",
                    "Record the risk assessment given to the physician.",
                    "Record the physician's confirmation that the out-of-specification product is accepted."):
        assert missing in text
    assert post_decision(app, qa, number, "exceptional_release", **EXCEPTIONAL).status_code == 302
    with app.app_context():
        batch = get_batch(number)
        [decision] = batch.dispositions
        assert batch.state == "released" and decision.is_exceptional
        assert (decision.physician_name, decision.risk_assessment) == (
            EXCEPTIONAL["physician_name"], EXCEPTIONAL["risk_assessment"])
        assert [d.is_open for d in batch.deviations] == [True]  # the OOS investigation goes on
    detail = words(qa.get(f"/batches/{number}"))
    assert "Physician's confirmation " + EXCEPTIONAL["physician_confirmation"] in detail


@pytest.mark.requirements("PROC-14")
def test_exceptional_release_is_for_out_of_specification_products_only(app, in_review, login):
    response = post_decision(app, login("qa1"), in_review, "exceptional_release", **EXCEPTIONAL)
    assert response.status_code == 409
    assert "No result is out of specification: use the normal release." in page_text(response)
    response = post_decision(app, login("qa1"), in_review, "release", physician_name="Dr. Nobody")
    assert response.status_code == 422
    assert "Only an exceptional release records the treating physician's request." in page_text(response)


def test_a_hold_and_its_lifting_return_the_batch_where_it_was(app, in_review, login):
    qa = login("qa1")
    assert post_decision(app, qa, in_review, "hold", reason="Freezer alarm overnight: check the curve.").status_code == 302
    with app.app_context():
        assert (get_batch(in_review).state, get_batch(in_review).held_from) == ("on_hold", "qa_review")
    assert post_decision(app, qa, in_review, "release").status_code == 409
    assert post_decision(app, qa, in_review, "lift_hold", reason="Curve within profile.").status_code == 302
    with app.app_context():
        assert (get_batch(in_review).state, get_batch(in_review).held_from) == ("qa_review", None)


def test_a_hold_for_a_rejected_bag_lifts_only_once_corrected(app, make_batch, login):
    number = make_batch(until="receipt")
    with app.app_context():
        batch = get_batch(number)
        raw = step_values("receipt", when=datetime.now(UTC), batch=batch, decision="reject")
        record_step(batch, "receipt", raw, comment="Seal looked damaged.", expected_version=None,
                    actor=user("tech1"), credentials=Credentials(PASSWORD))
        db.session.commit()
    assert state(app, number) == "on_hold"
    close_all_deviations(app, number)
    qa = login("qa1")
    response = post_decision(app, qa, number, "lift_hold", reason="Seal intact on second inspection.")
    assert response.status_code == 409
    assert "Lifting the hold would put the batch straight back on hold" in page_text(response)
    assert post_decision(app, qa, number, "reject", reason="Bag not usable.").status_code == 302
    assert state(app, number) == "rejected"


def test_after_release_the_record_is_read_only_but_for_late_results_and_deviations(app, in_review, login):
    release(app, in_review)
    tech = login("tech1")
    with app.app_context():
        entry_id = entries(in_review, "receipt")[0].id
        version = get_batch(in_review).version
    before = snapshot(app, in_review)
    response = tech.post(f"/batches/{in_review}/entries/{entry_id}/fields/volume_ml/correct",
                         data={"value": "181", "reason": "Typo.", "batch_version": version, **signature("tech1")})
    assert response.status_code == 409
    assert "its record is closed to corrections" in page_text(response)
    assert tech.get(f"/batches/{in_review}/steps/storage").status_code == 409
    assert snapshot(app, in_review) == before
    assert "Correct</a>" not in tech.get(f"/batches/{in_review}").get_data(as_text=True)
    response = tech.post(f"/batches/{in_review}/deviations/new",
                         data={"title": "Shipper logger missing", "description": "Found after release."})
    assert response.status_code == 302


def test_a_stale_disposition_form_is_refused(app, in_review, login):
    qa = login("qa1")
    with app.app_context():
        old = get_batch(in_review).version
    assert post_decision(app, qa, in_review, "hold", reason="Check.").status_code == 302
    response = qa.post(f"/batches/{in_review}/disposition",
                       data={"decision": "lift_hold", "reason": "Fine.", "batch_version": old, **signature("qa1")})
    assert response.status_code == 409
    assert "You changed this batch at" in page_text(response)  # the officer's own hold, from another page
