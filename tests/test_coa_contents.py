"""The certificate of analysis QA signs, read back from the PDF the app serves (issue 11, item 8):
the product (fill, expiry, bags, volume and CAR+ viable T cells per bag, dose per kg with the
weight), every result against its specification, the deviations with their closure, who
recorded the QC results, the QA release signature, and the statement of a release on an
interim result; written as the bag labels write the same facts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from lab.demo import Recorder
from lab.extensions import db
from lab.models import Container, Patient, Signature
from lab.services.batches import start_batch
from lab.services.deviations import report_deviation
from lab.services.patients import PatientInput, register_patient
from lab.services.progress import definition_for
from tests.factories import PASSWORD, get_batch, user
from tests.quality import close_all_deviations, post_result, record_results, release
from tests.readback import cells_text, text_of
from workflows.definition import DEFINITIONS_DIR, load_definition
from workflows.formatting import format_utc

pytestmark = pytest.mark.requirements("P11-10b")

DEMO_PASSWORD = "demo-password-42"


def coa(client, number: str) -> tuple[str, str]:
    """The certificate's text and its table cells."""
    response = client.get(f"/batches/{number}/coa.pdf")
    assert response.status_code == 200, response.get_data(as_text=True)
    return text_of(response.data), cells_text(response.data)


def product_bags(number: str) -> list[Container]:
    return sorted((c for c in get_batch(number).containers if c.kind == "product_bag"), key=lambda c: c.number)


def test_one_bag_its_volume_cells_dose_fill_and_expiry(app: Flask, make_batch, login):
    # 1 × 10⁶ cells/kg for 64.5 kg at 2.0 × 10⁶ cells/mL: one bag of 32.25 mL, half up 32.3 mL.
    number = make_batch(weight_kg=64.5)
    record_results(app, number)
    release(app, number)
    text, cells = coa(login("auditor1"), number)
    with app.app_context():
        [bag] = product_bags(number)
        filled = bag.created_entry.performed_at
        code = bag.code
    for expected in (f"Filled {format_utc(filled)}", f"Expires {format_utc(filled + timedelta(days=365))}",
                     "Number of bags 1",
                     "Dose 1.00 × 10⁶ cells/kg (CAR+ viable T cells per kg of a patient weight of 64.5 kg)"):
        assert expected in text, expected
    assert f"1 of 1 | {code} | 32.3 mL | 6.45 × 10⁷" in cells
    assert "32.2 mL" not in text and "32.25" not in text


def test_several_bags_each_with_its_volume_and_cells(app: Flask, make_batch, login):
    # 1.5 × 10⁸ cells at 2.0 × 10⁶ cells/mL: 75 mL, more than the 70 mL one bag holds: 2 × 37.5 mL.
    number = make_batch(weight_kg=150.0)
    text, cells = coa(login("qa1"), number)
    with app.app_context():
        codes = [bag.code for bag in product_bags(number)]
    assert len(codes) == 2 and "Number of bags 2" in text
    for n, code in enumerate(codes, start=1):
        assert f"{n} of 2 | {code} | 37.5 mL | 7.50 × 10⁷" in cells
    assert "Dose 1.00 × 10⁶ cells/kg (CAR+ viable T cells per kg of a patient weight of 150 kg)" in text


def test_every_result_against_its_specification_and_who_recorded_and_released(app: Flask, make_batch, login):
    number = make_batch(weight_kg=64.5)
    record_results(app, number)
    release(app, number)
    text, cells = coa(login("auditor1"), number)
    with app.app_context():
        batch = get_batch(number)
        tests = {t.key: t for t in definition_for(batch).release_tests}
        results = [(tests[r.test_key].title, r.spec_text) for r in batch.results]
        signed = db.session.scalars(select(Signature).where(Signature.record_type == "disposition")).one()
        signed_at = signed.signed_at
    joined = cells.replace("- ", "-")  # a title hyphenated across lines
    for title, specification in results:
        assert f"{title} |" in joined and f"| {specification} |" in joined, (title, specification)
    # Recorded numbers in the one notation, the digits typed: "1.02e6" reads "1.02 × 10⁶".
    assert "1.02 × 10⁶ cells/kg" in cells and "1.02e6" not in text
    assert "< 0.5 EU/mL" in cells and "91.2 %" in cells
    assert ("Recorded and signed (meaning: performed) by Quinn Analyst. No separate QC review signature is kept: "
            "QA reviews the results with the batch record before the disposition decision.") in text
    assert (f"Signed by Quentin Assurance. Meaning: approved for release. Signed at {format_utc(signed_at)}."
            in text)


def test_a_release_on_an_interim_sterility_says_so_until_the_final_result(app: Flask, make_batch, login):
    number = make_batch(weight_kg=64.5)
    record_results(app, number)
    text, _ = coa(login("qa1"), number)
    assert "released on an interim result" not in text  # not released yet: pending, said as such
    assert "Sterility" in text[text.index("results pending:"):]
    release(app, number)
    text, _ = coa(login("qa1"), number)
    assert ("This batch was released on an interim result (Sterility: no growth to date (interim)). The final "
            "result follows: it is recorded after release, and a result out of specification puts the batch on "
            "hold.") in text
    response = post_result(app, login("qc1"), number, "sterility", "no growth")
    assert response.status_code == 302, response.get_data(as_text=True)
    text, cells = coa(login("qa1"), number)
    assert "released on an interim result" not in text and "pending: Sterility" not in text
    assert "| no growth | PASS |" in cells


def test_deviations_with_classification_and_closure(app: Flask, make_batch, login):
    number = make_batch(weight_kg=64.5)
    text, _ = coa(login("qa1"), number)
    assert "No deviation was opened for this batch." in text
    with app.app_context():
        for title in ("Counter mis-set", "Late transfer"):
            report_deviation(get_batch(number), title=title, description=f"{title} on day 6.", actor=user("super1"))
        db.session.commit()
    close_all_deviations(app, number)
    with app.app_context():
        report_deviation(get_batch(number), title="Label smudged", description="Reprinted.", actor=user("super1"))
        db.session.commit()
        deviations = [(d.number, d.closed_at) for d in get_batch(number).deviations]
    text, cells = coa(login("qa1"), number)
    for number_, closed_at in deviations[:2]:
        assert f"{number_} |" in cells
        assert f"minor | Closed by Quentin Assurance at {format_utc(closed_at)}" in cells
    open_one = deviations[2][0]
    assert f"{open_one} | Label smudged | not classified | Not closed (open)" in cells


def test_the_bag_label_prints_the_same_volume_cells_dose_and_expiry(app: Flask, make_batch, login):
    number = make_batch(weight_kg=64.5)
    with app.app_context():
        [bag] = product_bags(number)
        code = bag.code
        expires = format_utc(bag.created_entry.performed_at + timedelta(days=365))
    client = login("tech1")
    label = client.get(f"/containers/{code}/label.pdf", query_string={"reason": "Compared with the certificate"})
    assert label.status_code == 200, label.get_data(as_text=True)
    label_text = text_of(label.data)
    certificate, _ = coa(client, number)
    for fact in ("32.3 mL", "6.45 × 10⁷", "1.00 × 10⁶ cells/kg", expires):
        assert fact in label_text and fact in certificate, fact


def test_a_batch_of_definition_version_1_still_has_a_certificate(app: Flask, users, inventory, login):
    with app.app_context():
        now = datetime.now(UTC)
        start = now - timedelta(days=14)
        patient = register_patient(PatientInput("SLE-01", "AB", date(1980, 5, 1), 64.5, "SLE"),
                                   actor=user("super1"), now=start)
        v1 = load_definition(DEFINITIONS_DIR / "cd19_car_t_v1.toml")
        batch = start_batch(patient, actor=user("super1"), now=start, definition=v1)
        Recorder(user("tech1"), user("tech2"), PASSWORD, now).run(batch, start, expansion=(
            {"culture_day": "6", "viable_cells": "1.5e9", "viability_pct": "92"},))
        db.session.commit()
        number = batch.batch_number
        assert definition_for(batch).version == 1
    record_results(app, number)
    text, cells = coa(login("qa1"), number)
    assert "cd19-car-t, version 1" in text
    assert "Expires not set: version 1 of the process defines no shelf life" in text
    assert "Number of bags 1" in text and "32.3 mL" in cells
    assert "Dose 1.00 × 10⁶ cells/kg" in text


def test_before_the_fill_there_is_no_product_yet(app: Flask, make_batch, login):
    number = make_batch("formulation")
    text, _ = coa(login("qa1"), number)
    assert "No product bag has been filled yet." in text


def test_the_demo_certificates(app: Flask, runner, login):
    """DLBCL-09 was released on its interim sterility; SLE-08 waits for QA with a closed deviation."""
    result = runner.invoke(args=["seed-demo", "--password", DEMO_PASSWORD])
    assert result.exit_code == 0, result.output
    with app.app_context():
        numbers = {p.patient_ref: p.batches[-1].batch_number for p in db.session.scalars(select(Patient))}
        closed = [d for d in get_batch(numbers["SLE-08"]).deviations if d.closed_at is not None]
        assert closed
        closure = [f"{d.number} |" for d in closed], [f"Closed by {d.closed_by.full_name} at {format_utc(d.closed_at)}"
                                                      for d in closed]
    client = login("auditor1", DEMO_PASSWORD)
    released, _ = coa(client, numbers["DLBCL-09"])
    assert "This batch was released on an interim result (Sterility: no growth to date (interim))." in released
    assert "Meaning: approved for release. Signed at " in released
    waiting, cells = coa(client, numbers["SLE-08"])
    assert "Disposition: not yet decided." in waiting and "released on an interim result" not in waiting
    for expected in (*closure[0], *closure[1]):
        assert expected in cells, expected
    for text in (released, waiting):
        assert "Number of bags" in text and "Expires" in text and "cells/kg (CAR+ viable T cells per kg" in text


def test_a_pending_dose_is_printed_against_the_batchs_own_target(app: Flask, make_batch, login):
    number = make_batch(weight_kg=64.5)
    record_results(app, number, dose=None)
    _, cells = coa(login("qa1"), number)
    row = cells[cells.index("Dose: CAR+"):]
    columns = row.split(" | ")
    assert columns[4] == "PENDING", row[:300]
    assert columns[2] == "8.00 × 10⁵–1.20 × 10⁶ cells/kg (80–120 % of the target dose 1.00 × 10⁶ cells/kg)", row[:300]
    assert "of the batch's target" not in cells
