"""Reviews of the audit trail (issue 12, item 10): QA records the period, the findings and a
signature meaning "reviewed", with the chain head it saw; auditors and administrators read
them; verify-audit checks the chain still passes through every review's head; the batch
record says when its trail was last reviewed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import AuditChainHead, AuditEvent, AuditReview, Signature, SigningFailure, User
from lab.services.audit_review import record_review
from lab.services.batch_record import COPY_TABLES
from lab.services.deviations import report_deviation
from lab.services.signatures import Credentials, record_signatures
from tests.factories import PASSWORD, get_batch, page_text, signature, user
from tests.readback import text_of
from tests.test_audit_anchor import add_lots, rewrite_whole_chain, verify

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("A11-9")]

TODAY = datetime.now(UTC).date()


def review_form(period_from: str = "", period_to: str = "", findings: str = "No unexplained changes.",
                signer: str = "qa1", password: str = PASSWORD) -> dict[str, str]:
    return {"period_from": period_from or (TODAY - timedelta(days=7)).isoformat(),
            "period_to": period_to or TODAY.isoformat(), "findings": findings, **signature(signer, password)}


def counts(app: Flask) -> tuple[int, int, int]:
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(AuditReview)) or 0,
                db.session.scalar(select(func.count()).select_from(Signature)) or 0,
                db.session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def review_by_service(app: Flask, period_from: date, period_to: date) -> int:
    with app.app_context():
        review = record_review(period_from, period_to, "Nothing to report.", actor=user("qa1"),
                               credentials=Credentials(PASSWORD, "qa1"))
        db.session.commit()
        return review.id


def test_qa_records_a_signed_review_that_keeps_the_head_it_saw(app: Flask, users: dict[str, int],
                                                               login: Callable[[str], FlaskClient]) -> None:
    add_lots(app, 3)
    client = login("qa1")
    with app.app_context():
        head = db.session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)).one()
    page = client.get("/audit/reviews")
    assert page.status_code == 200 and "Record a review" in page_text(page)
    assert 'href="/audit/reviews"' in client.get("/audit").get_data(as_text=True)
    response = client.post("/audit/reviews", data=review_form(findings="Two lots received; no unexplained change."))
    assert response.status_code == 302, page_text(response)
    with app.app_context():
        [review] = db.session.scalars(select(AuditReview)).all()
        assert (review.head_entry_id, review.head_hash) == (head.last_id, head.last_hash)
        assert review.reviewed_by.username == "qa1"
        assert (review.period_from, review.period_to) == (TODAY - timedelta(days=7), TODAY)
        [(signed, valid)] = record_signatures(review)
        assert valid and signed.meaning == "reviewed" and signed.printed_name == "Quentin Assurance"
        assert signed.batch_id is None
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "audit.review")) >= 2  # the review and its signature
    listed = page_text(client.get("/audit/reviews"))
    assert "Two lots received; no unexplained change." in listed
    assert "Quentin Assurance" in listed and "valid" in listed and head.last_hash in listed
    result = verify(app)
    assert result.exit_code == 0, result.output
    assert "1 audit-trail reviews" in result.stdout


@pytest.mark.parametrize("name", ["auditor1", "admin"])
def test_auditors_and_administrators_read_reviews_but_cannot_record_one(app: Flask, users: dict[str, int],
                                                                        login: Callable[[str], FlaskClient],
                                                                        name: str) -> None:
    review_by_service(app, TODAY - timedelta(days=1), TODAY)
    client = login(name)
    page = client.get("/audit/reviews")
    assert page.status_code == 200
    assert "Nothing to report." in page_text(page) and "Record a review" not in page_text(page)
    before = counts(app)
    response = client.post("/audit/reviews", data=review_form(signer=name))
    assert response.status_code == 403
    assert "may record a review of the audit trail" in page_text(response)
    assert counts(app) == before


@pytest.mark.parametrize("name", ["tech1", "super1", "qc1"])
def test_other_roles_neither_read_nor_record_reviews(app: Flask, users: dict[str, int],
                                                     login: Callable[[str], FlaskClient], name: str) -> None:
    client = login(name)
    assert client.get("/audit/reviews").status_code == 403
    before = counts(app)
    assert client.post("/audit/reviews", data=review_form(signer=name)).status_code == 403
    assert counts(app) == before


TOMORROW = (TODAY + timedelta(days=2)).isoformat()  # ahead of today in any lab time zone


@pytest.mark.parametrize(("data", "message"), [
    ({"period_from": TODAY.isoformat(), "period_to": (TODAY - timedelta(days=3)).isoformat()},
     "The period cannot end before it starts."),
    ({"period_from": TOMORROW, "period_to": TOMORROW}, "The period cannot start in the future"),
    ({"period_to": TOMORROW}, "The period cannot end in the future"),
    ({"findings": "   "}, "Say what the review found"),
    ({"findings": "x" * 4001}, "4000"),
    ({"period_from": "yesterday"}, "Not a valid date value."),
    ({"period_from": "1999-12-31"}, "The period cannot start before 2000-01-01."),
    ({"period_to": ""}, None),
])
def test_bad_input_is_refused_on_its_field_and_nothing_is_written(app: Flask, users: dict[str, int],
                                                                   login: Callable[[str], FlaskClient],
                                                                   data: dict[str, str], message: str | None) -> None:
    client = login("qa1")
    before = counts(app)
    body = review_form()
    body.update(data)
    if data.get("period_to") == "":
        body["period_to"] = ""  # review_form fills an empty value: send it empty
    response = client.post("/audit/reviews", data=body)
    assert response.status_code == 422
    text = page_text(response)
    assert "has-error" in text
    if message:
        assert message in text
    assert counts(app) == before


def test_a_wrong_password_signs_nothing_and_counts_towards_the_lockout(app: Flask, users: dict[str, int],
                                                                       login: Callable[[str], FlaskClient]) -> None:
    client = login("qa1")
    before = counts(app)[:2]
    response = client.post("/audit/reviews", data=review_form(password="not-the-password"))
    assert response.status_code in (403, 422)
    assert "The password is wrong: nothing was signed." in page_text(response)
    assert "4 more refused attempts will lock your account." in page_text(response)
    assert counts(app)[:2] == before
    with app.app_context():
        qa = db.session.get(User, users["qa1"])
        assert qa is not None and qa.failed_signatures == 1
        [failure] = db.session.scalars(select(SigningFailure)).all()
        assert failure.meaning == "reviewed" and failure.batch_id is None


def test_the_service_refuses_anyone_but_qa(app: Flask, users: dict[str, int]) -> None:
    from lab.exceptions import NotAllowed

    with app.app_context(), pytest.raises(NotAllowed):
        record_review(TODAY, TODAY, "Fine.", actor=user("admin"), credentials=Credentials(PASSWORD, "admin"))


def test_a_rewrite_of_the_whole_chain_after_a_review_is_detected(app: Flask, users: dict[str, int]) -> None:
    add_lots(app, 3)
    rewrite_whole_chain(app, 2, "Approved by phone.")
    assert verify(app).exit_code == 0  # the chain alone cannot tell: it was rewritten consistently
    review_id = review_by_service(app, TODAY - timedelta(days=1), TODAY)
    add_lots(app, 2, start=10)
    assert verify(app).exit_code == 0
    rewrite_whole_chain(app, 3, "Received without inspection.")
    result = verify(app)
    assert result.exit_code == 1, result.output
    assert f"TAMPERED: Audit-trail review {review_id} (Quentin Assurance" in result.stderr
    assert "the trail was rewritten in the database since" in result.stderr
    assert "chain intact." in result.stdout  # only the review's head tells


def test_a_review_whose_head_entry_was_deleted_is_named(app: Flask, users: dict[str, int]) -> None:
    from tests.test_verify_audit import tamper

    add_lots(app, 2)
    review_id = review_by_service(app, TODAY, TODAY)
    with app.app_context():
        head = db.session.scalar(select(AuditReview.head_entry_id))
    tamper(app, f"DELETE FROM audit_events WHERE id = {int(head)}")
    result = verify(app)
    assert result.exit_code == 1
    assert f"Audit-trail review {review_id}" in result.stderr and f"entry {head} is missing" in result.stderr


def record_pdf(client: FlaskClient, number: str) -> str:
    response = client.get(f"/batches/{number}/record.pdf")
    assert response.status_code == 200
    return text_of(response.data)


def test_the_batch_record_says_when_its_trail_was_last_reviewed(app: Flask, make_batch: Callable[..., Any],
                                                                login: Callable[[str], FlaskClient]) -> None:
    number = make_batch(until="enrichment")
    client = login("auditor1")
    assert "Audit trail review: this trail has not been reviewed yet." in record_pdf(client, number)
    with app.app_context():
        started = get_batch(number).created_at.date()
    # A review of a period before the batch does not cover it.
    review_by_service(app, started - timedelta(days=30), started - timedelta(days=20))
    assert "this trail has not been reviewed yet." in record_pdf(client, number)
    review_by_service(app, started - timedelta(days=3), TODAY)
    with app.app_context():
        review = db.session.scalars(select(AuditReview).order_by(AuditReview.id.desc())).first()
        assert review is not None
        head, reviewed_at = review.head_entry_id, review.reviewed_at
    text = record_pdf(client, number)
    assert (f"Audit trail last reviewed by Quentin Assurance at {reviewed_at:%Y-%m-%d %H:%M} UTC, "
            f"period {(started - timedelta(days=3)).isoformat()} to {TODAY.isoformat()}, up to entry {head}.") in text
    assert "not reviewed yet" not in text
    with app.app_context():  # the batch's trail grows after the review: the record says how much is unreviewed
        report_deviation(get_batch(number), title="Label smudged", description="Relabelled.", actor=user("tech1"))
        db.session.commit()
        later = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.batch_id == get_batch(number).id, AuditEvent.id > head,
            AuditEvent.table_name.not_in(COPY_TABLES)))  # downloads of copies are not in the record's trail
    noun = "entry" if later == 1 else "entries"
    assert later and f"up to entry {head}. {later} later {noun} of this batch not reviewed yet." in record_pdf(
        client, number)


def test_the_reviews_page_is_labelled_and_needs_no_inline_script_or_style(app: Flask, users: dict[str, int],
                                                                          login: Callable[[str], FlaskClient]) -> None:
    from tests.htmlcheck import problems

    review_by_service(app, TODAY, TODAY)
    client = login("qa1")
    for response in (client.get("/audit/reviews"),
                     client.post("/audit/reviews", data=review_form(findings=""))):
        html = response.get_data(as_text=True)
        assert problems(html) == []
        assert "<script>" not in html and " style=" not in html and " onclick=" not in html


@pytest.mark.parametrize("change", ["findings = 'Nothing to report (edited)'", "head_hash = :forged",
                                    "period_to = period_from"])
def test_a_review_changed_in_the_database_no_longer_matches_its_signature(app: Flask, users: dict[str, int],
                                                                           change: str) -> None:
    from tests.test_verify_audit import tamper

    add_lots(app, 2)
    review_id = review_by_service(app, TODAY - timedelta(days=1), TODAY)
    with app.app_context():
        forged = db.session.scalar(select(AuditEvent.hash).where(AuditEvent.id == 1))
    tamper(app, f"UPDATE audit_reviews SET {change}", forged=forged)
    result = verify(app)
    assert result.exit_code == 1
    assert f"the audit review {review_id} it signs has changed with no signed correction since" in result.stderr
