"""GET /batches/<batch number>/coa.pdf: the certificate of analysis built from the record."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.factories import get_batch
from tests.quality import EXCEPTIONAL, post_result, record_results, release
from tests.readback import qr_texts, text_of

pytestmark = pytest.mark.requirements("P11-10b")


def coa_text(client, number: str) -> str:
    response = client.get(f"/batches/{number}/coa.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == f"attachment; filename=CoA-{number}.pdf"
    return text_of(response.data)


def test_the_certificate_lists_each_test_result_analyst_and_the_signed_release(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    release(app, number)
    client = login("auditor1")
    response = client.get(f"/batches/{number}/coa.pdf")
    text = text_of(response.data)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    with app.app_context():
        coi = get_batch(number).patient.coi
    for expected in (number, coi, "Autologous anti-CD19 CAR T cells, cryopreserved", "cd19-car-t, version 4",
                     "Viability", "≥ 80 %", "91.2 %", "PASS", "Quinn Analyst", today,
                     "LAL", "< 0.5 EU/mL",
                     "no growth to", "date (interim)", "PENDING", "Vector copy",
                     f"Disposition: Released: release on {today}",
                     "Signed by Quentin Assurance. Meaning: approved for release."):
        assert expected in text, expected
    assert "Residual beads" not in text  # optional, not reported
    assert qr_texts(response.data, 203)[0] == number


def test_an_undecided_batch_says_so(app, make_batch, login):
    number = make_batch()
    record_results(app, number, viability="72")
    text = coa_text(login("qc1"), number)
    assert "FAIL" in text and "72 %" in text
    assert "Disposition: not yet decided. This batch has not been released." in text


def test_an_exceptional_release_is_printed_with_its_physician_record(app, make_batch, login):
    number = make_batch()
    record_results(app, number, viability="72")
    release(app, number, "exceptional_release", **EXCEPTIONAL)
    text = coa_text(login("qa1"), number)
    assert "Exceptional release" in text
    assert "Treating physician: Dr. Hanna Berg" in text
    assert "Risk assessment: Lower viability may reduce expansion in vivo" in text


def test_a_released_batch_on_hold_says_it_is_on_hold(app, make_batch, login):
    number = make_batch()
    record_results(app, number)
    release(app, number)
    post_result(app, login("qc1"), number, "sterility", "growth")
    text = coa_text(login("qa1"), number)
    assert "Disposition: On hold (after release on" in text
    assert "FAIL" in text


def test_an_unknown_or_malformed_batch_number(app, users, login):
    client = login("qa1")
    assert client.get("/batches/B-A9999-26-00042-X/coa.pdf").status_code in (400, 404)
    assert client.get("/batches/not-a-batch/coa.pdf").status_code == 400
