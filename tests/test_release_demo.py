"""seed-demo's release side: a batch waiting for QA review with a closed deviation, and a
released batch whose certificate of analysis can be downloaded."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from lab.extensions import db
from lab.models import Batch, Patient
from tests.quality import words
from tests.readback import text_of

DEMO_PASSWORD = "demo-password-42"


def test_seed_demo_has_a_batch_in_review_and_a_released_batch_with_its_coa(app: Flask, runner: FlaskCliRunner,
                                                                        login) -> None:
    result = runner.invoke(args=["seed-demo", "--password", DEMO_PASSWORD])
    assert result.exit_code == 0, result.output
    with app.app_context():
        review = db.session.scalars(select(Batch).join(Batch.patient).where(Patient.patient_ref == "SLE-08")).one()
        released = db.session.scalars(select(Batch).join(Batch.patient).where(Patient.patient_ref == "DLBCL-09")).one()
        assert review.state == "qa_review"
        [deviation] = review.deviations
        assert (deviation.status, deviation.classification) == ("closed", "minor")
        assert released.state == "released"
        numbers = review.batch_number, released.batch_number, deviation.number
    assert f"{numbers[0]}  SLE-08    qa_review" in result.output
    qa = login("qa1", DEMO_PASSWORD)
    assert "Waiting for QA review (1)" in words(qa.get("/"))
    page = words(qa.get(f"/batches/{numbers[0]}/review"))
    assert f"{numbers[2]}:" in page and "closed" in page
    assert "Release : possible." in words(qa.get(f"/batches/{numbers[0]}/disposition"))
    coa = qa.get(f"/batches/{numbers[1]}/coa.pdf")
    assert coa.status_code == 200
    assert "Signed by Maria Rossi. Meaning: approved for release." in text_of(coa.data)
