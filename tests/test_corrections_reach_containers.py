"""Corrections reach what was made from them (issue 11 item 4): a corrected value or patient
weight recomputes the derived values, and product bags that no longer match open a deviation
naming each bag, with the computed number and volume before and after; the bags stay as they
were filled and their labels are marked for reprinting until printed again."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.exceptions import InvalidInput, NotAllowed, SignatureError
from lab.extensions import db
from lab.models import AuditEvent, Container, Deviation, Signature, StepEntry, StepValue
from lab.models.patients import WeightCorrection
from lab.services.patients import correct_weight
from lab.services.progress import entry_view
from lab.services.signatures import Credentials, current_values, weight_correction_sha256
from lab.services.steps import correct_value
from tests.factories import PASSWORD, entries, get_batch, page_text, patient, signature, signed_in, user
from workflows.formatting import format_quantity

pytestmark = pytest.mark.requirements("PROC-8", "PROC-5")

WEIGHT = 64.5  # with the demo formulation (1e6 cells/kg, 2.0e6 cells/mL, 70 mL per bag): one bag
MAX_FILL = 70.0
TARGET = 1e6
CONCENTRATION = 2.0e6


def made(weight: float, per_ml: float, target: float = TARGET) -> tuple[int, float]:
    """Bags and volume per bag, as the definition's formulas compute them."""
    volume = target * weight / per_ml
    bags = math.ceil(volume / MAX_FILL)
    return bags, volume / bags


def words(bags: int, volume: float) -> str:
    return f"{bags} × {format_quantity(volume, 'mL')}"


@pytest.fixture
def formulated(make_batch: Callable[..., str]) -> str:
    """A batch recorded up to and including formulation (its labels printed), for a 64.5 kg patient."""
    return make_batch(until="cryopreservation", weight_kg=WEIGHT)


def product_bags(number: str) -> list[tuple[str, int, int, float | None, int]]:
    return [(c.code, c.number, c.count, c.volume_ml, c.created_entry_id)
            for c in get_batch(number).containers if c.kind == "product_bag"]


def rows() -> dict[str, int]:
    return {model.__name__: db.session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Container, Deviation, StepValue, WeightCorrection, Signature, AuditEvent)}


def correction_deviations(number: str) -> list[Deviation]:
    return [d for d in get_batch(number).deviations if d.source == "correction"]


def correct_formulation(number: str, field: str, text: str, *, actor: str = "tech1") -> None:
    batch = get_batch(number)
    entry = entries(number, "formulation")[0]
    correct_value(batch, entry, field, text, reason="Transcription error: the count sheet reads otherwise.",
                  expected_version=batch.version, actor=user(actor), credentials=Credentials(PASSWORD, actor))
    db.session.commit()


# --- through the services ------------------------------------------------------------------------


def test_correcting_the_concentration_names_the_bag_and_leaves_it_as_filled(app: Flask, formulated: str) -> None:
    with app.app_context():
        [bag] = product_bags(formulated)
        code, _, _, volume, _ = bag
        assert (bag[1], bag[2]) == (1, 1) and math.isclose(volume or 0, made(WEIGHT, CONCENTRATION)[1])
        containers_before = rows()["Container"]
        correct_formulation(formulated, "car_t_per_ml", "5e5")

        assert product_bags(formulated) == [bag]  # the row is as it was filled: no bag added or changed
        assert rows()["Container"] == containers_before
        [deviation] = correction_deviations(formulated)
        before, after = words(*made(WEIGHT, CONCENTRATION)), words(*made(WEIGHT, 5e5))
        assert before != after
        assert deviation.title == (f"Formulation and fill: a correction changes the product bags from {before} to "
                                   f"{after}; 1 to reconcile")
        assert deviation.status == "open" and deviation.entry_id == bag[4]
        assert f"- {code}: Final product bag 1 of 1, recorded {format_quantity(volume or 0, 'mL')}" \
            in deviation.description
        assert "from 2.0 × 10⁶ cells/mL to 5 × 10⁵ cells/mL" in deviation.description
        assert "Transcription error: the count sheet reads otherwise." in deviation.description

        container = db.session.scalar(select(Container).where(Container.code == code))
        assert container is not None and container.label_outdated
        assert container.label_outdated_reason is not None
        assert container.label_outdated_reason.startswith(f"{deviation.number}: CAR+ T cells per mL")

        batch = get_batch(formulated)  # the derived values are those of the corrected entry
        derived = entry_view(batch, entries(formulated, "formulation")[0]).derived
        assert derived["bags"].value == made(WEIGHT, 5e5)[0]
        assert math.isclose(derived["volume_per_bag_ml"].value or 0, made(WEIGHT, 5e5)[1])


def test_correcting_the_target_dose_names_the_bag(app: Flask, formulated: str) -> None:
    with app.app_context():
        correct_formulation(formulated, "target_dose_per_kg", "2e6")
        [deviation] = correction_deviations(formulated)
        assert words(*made(WEIGHT, CONCENTRATION, target=2e6)) in deviation.title


def test_a_correction_that_leaves_the_bags_as_they_are_opens_no_deviation(app: Flask, formulated: str) -> None:
    with app.app_context():
        assert made(WEIGHT, CONCENTRATION)[1] < 60  # one bag still holds the dose at 60 mL
        correct_formulation(formulated, "max_fill_ml", "60")
        assert correction_deviations(formulated) == []
        assert not any(c.label_outdated_at for c in get_batch(formulated).containers)


def test_a_correction_that_would_need_more_bags_than_allowed_is_refused(app: Flask, formulated: str) -> None:
    with app.app_context():
        assert made(WEIGHT, 2e4)[0] > 10  # the definition's bound on product bags
        before = rows()
        with pytest.raises(InvalidInput) as refused:
            correct_formulation(formulated, "car_t_per_ml", "2e4")
        assert "at most 10 can be made" in refused.value.errors["value"]
        db.session.rollback()
        assert rows() == before


def test_a_corrected_cell_count_recomputes_the_dose_coverage_of_formulation(app: Flask, formulated: str) -> None:
    with app.app_context():
        batch = get_batch(formulated)
        harvest = entries(formulated, "harvest")[0]
        correct_value(batch, harvest, "total_viable_cells", "1.0e8", reason="Counter print-out reads 1.0e8.",
                      expected_version=batch.version, actor=user("tech1"), credentials=Credentials(PASSWORD, "tech1"))
        db.session.commit()
        formulation = entries(formulated, "formulation")[0]
        [deviation] = [d for d in get_batch(formulated).deviations if d.entry_id == formulation.id]
        assert (deviation.source, deviation.field_key) == ("limit", "dose_coverage")
        assert deviation.title.startswith("Formulation and fill (recomputed after a correction): ")
        assert deviation.description.startswith(
            "Total viable cells (Harvest and wash) corrected from 3.0 × 10⁹ cells to 1.0 × 10⁸ cells by Tess Technician, for this "
            "reason: Counter print-out reads 1.0e8.")
        assert correction_deviations(formulated) == []  # the bags are made from formulation's values alone


def test_a_weight_correction_keeps_the_old_weight_signed_and_names_the_bag(app: Flask, formulated: str) -> None:
    with app.app_context():
        [bag] = product_bags(formulated)
        record = patient("SLE-01")
        correction = correct_weight(record, 80.0, reason="Weighed again on admission: 80 kg.", actor=user("qa1"),
                                    credentials=Credentials(PASSWORD, "qa1"))
        db.session.commit()

        record = patient("SLE-01")
        assert record.weight_kg == 80.0
        [kept] = record.weight_corrections
        assert (kept.old_weight_kg, kept.new_weight_kg, kept.reason, kept.corrected_by.username) == (
            WEIGHT, 80.0, "Weighed again on admission: 80 kg.", "qa1")
        [signed] = db.session.scalars(select(Signature).where(Signature.record_type == "weight_correction")).all()
        assert (signed.record_id, signed.meaning, signed.printed_name) == (correction.id, "corrected",
                                                                           "Quentin Assurance")
        assert signed.content_sha256 == weight_correction_sha256(kept)
        [trail] = db.session.scalars(select(AuditEvent).where(AuditEvent.table_name == "patients",
                                                              AuditEvent.field == "weight_kg")).all()
        assert (trail.old_value, trail.new_value, trail.reason) == (str(WEIGHT), "80.0",
                                                                    "Weighed again on admission: 80 kg.")

        assert product_bags(formulated) == [bag]
        [deviation] = correction_deviations(formulated)
        assert f"from {words(*made(WEIGHT, CONCENTRATION))} to {words(*made(80.0, CONCENTRATION))}" in deviation.title
        assert bag[0] in deviation.description
        assert "Weight of patient SLE-01 corrected from 64.5 kg to 80 kg" in deviation.description
        container = db.session.scalar(select(Container).where(Container.code == bag[0]))
        assert container is not None and container.label_outdated
    verified = app.test_cli_runner().invoke(args=["verify-audit"])  # the signature matches its correction
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize(("actor", "weight", "reason", "error"), [
    ("tech1", 80.0, "Weighed again.", NotAllowed),
    ("qc1", 80.0, "Weighed again.", NotAllowed),
    ("super1", 80.0, "  ", InvalidInput),
    ("super1", 0.4, "Weighed again.", InvalidInput),
    ("super1", 401.0, "Weighed again.", InvalidInput),
    ("super1", math.nan, "Weighed again.", InvalidInput),
    ("super1", WEIGHT, "Weighed again.", InvalidInput),
])
def test_a_refused_weight_correction_writes_nothing(app: Flask, formulated: str, actor: str, weight: float,
                                                    reason: str, error: type[Exception]) -> None:
    with app.app_context():
        before = rows()
        with pytest.raises(error):
            correct_weight(patient("SLE-01"), weight, reason=reason, actor=user(actor),
                           credentials=Credentials(PASSWORD, actor))
        db.session.rollback()
        assert rows() == before
        assert patient("SLE-01").weight_kg == WEIGHT


def test_a_wrong_password_corrects_no_weight(app: Flask, formulated: str) -> None:
    with app.app_context():
        before = rows()
        with pytest.raises(SignatureError):
            correct_weight(patient("SLE-01"), 80.0, reason="Weighed again.", actor=user("super1"),
                           credentials=Credentials("wrong", "super1"))
        db.session.rollback()
        assert rows() == before


# --- through HTTP ------------------------------------------------------------------------------


def post_correction(app: Flask, client: FlaskClient, number: str, field: str, value: str) -> Any:
    with app.app_context():
        entry_id = entries(number, "formulation")[0].id
        version = get_batch(number).version
    return client.post(f"/batches/{number}/entries/{entry_id}/fields/{field}/correct",
                       data={"value": value, "reason": "Transcription error.", "batch_version": version,
                             **signature(signed_in(app, client))})


def test_the_batch_page_shows_the_deviation_and_the_outdated_label_until_it_is_reprinted(
        app: Flask, formulated: str, login: Callable[..., FlaskClient]) -> None:
    client = login("tech1")
    with app.app_context():
        [(code, *_)] = product_bags(formulated)
        entry_id = entries(formulated, "formulation")[0].id
    form = page_text(client.get(f"/batches/{formulated}/entries/{entry_id}/fields/car_t_per_ml/correct"))
    assert f'This entry made 1 container from its values (<span class="code">{code}</span>)' in form
    saved = post_correction(app, client, formulated, "car_t_per_ml", "5e5")
    assert saved.status_code == 302
    with app.app_context():
        [deviation] = correction_deviations(formulated)
        number, title = deviation.number, deviation.title
        container = db.session.scalar(select(Container).where(Container.code == code))
        assert container is not None and container.prints  # printed when it was filled
        prints = len(container.prints)
    page = page_text(client.get(saved.headers["Location"]))
    assert f"Containers made from this value no longer match it: {number} names them" in page
    assert title in page
    assert '<span class="flag">Label outdated</span>' in page and f'value="{number}: CAR+ T cells per mL' in page

    refused = client.get(f"/containers/{code}/label.pdf")  # a reprint without a reason
    assert refused.status_code == 422
    printed = client.get(f"/containers/{code}/label.pdf", query_string={"reason": f"{number}: bags reconciled"})
    assert printed.status_code == 200 and printed.mimetype == "application/pdf"
    with app.app_context():
        container = db.session.scalar(select(Container).where(Container.code == code))
        assert container is not None and not container.label_outdated
        assert len(container.prints) == prints + 1 and container.prints[-1].reason == f"{number}: bags reconciled"
    # the flag, not the audit box's "Label outdated at: ... → empty" that records the reprint
    assert '<span class="flag">Label outdated</span>' not in page_text(client.get(f"/batches/{formulated}"))


def test_a_weight_correction_through_the_patient_page(app: Flask, formulated: str,
                                                      login: Callable[..., FlaskClient]) -> None:
    client = login("qa1")
    page = page_text(client.get("/patients/SLE-01"))
    assert "Correct the weight" in page
    form = client.get("/patients/SLE-01/weight")
    assert form.status_code == 200
    assert "meaning <strong>corrected</strong>" in page_text(form)
    response = client.post("/patients/SLE-01/weight", data={
        "weight_kg": "80", "reason": "Weighed again on admission.", **signature("qa1")})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/patients/SLE-01#weight")
    page = page_text(client.get("/patients/SLE-01"))
    assert "Weight of SLE-01 corrected to 80 kg;" in page and "<dd>80 kg" in page
    assert "<del>64.5 kg</del>" in page and "Weighed again on admission." in page and "Quentin Assurance" in page
    with app.app_context():
        [deviation] = correction_deviations(formulated)
        title = deviation.title
    assert title in page_text(client.get(f"/batches/{formulated}"))


@pytest.mark.parametrize(("data", "status", "field", "message"), [
    ({"weight_kg": "eighty"}, 422, "weight_kg", "Not a valid float value."),
    ({"weight_kg": ""}, 422, "weight_kg", "Enter the weight in kg."),
    ({"weight_kg": "0.4"}, 422, "weight_kg", "Weight must be between 1 and 400 kg."),
    ({"weight_kg": "401"}, 422, "weight_kg", "Weight must be between 1 and 400 kg."),
    ({"weight_kg": "nan"}, 422, "weight_kg", "Enter a finite number."),
    ({"weight_kg": "64.5"}, 422, "weight_kg", "The weight on record is already 64.5 kg."),
    ({"reason": ""}, 422, "reason", "Say why the weight is corrected."),
    ({"password": "wrong"}, 403, "password", "The password is wrong: nothing was signed."),
])
def test_bad_weight_corrections_are_refused_next_to_the_field(app: Flask, formulated: str,
                                                              login: Callable[..., FlaskClient],
                                                              data: dict[str, str], status: int, field: str,
                                                              message: str) -> None:
    client = login("super1")
    with app.app_context():
        before = {k: v for k, v in rows().items() if k != "AuditEvent"}
    response = client.post("/patients/SLE-01/weight", data={
        "weight_kg": "80", "reason": "Weighed again.", **signature("super1"), **data})
    assert response.status_code == status
    page = page_text(response)
    assert f'id="{field}-error">⚠ {message}' in page
    with app.app_context():
        assert {k: v for k, v in rows().items() if k != "AuditEvent"} == before
        assert patient("SLE-01").weight_kg == WEIGHT


@pytest.mark.parametrize("username", ["tech1", "qc1", "auditor1"])
def test_only_a_supervisor_or_qa_corrects_a_weight(app: Flask, formulated: str, login: Callable[..., FlaskClient],
                                                   username: str) -> None:
    client = login(username)
    assert "Correct the weight" not in page_text(client.get("/patients/SLE-01"))
    assert client.get("/patients/SLE-01/weight").status_code == 403
    with app.app_context():
        before = rows()
    response = client.post("/patients/SLE-01/weight", data={
        "weight_kg": "80", "reason": "Weighed again.", **signature(username)})
    assert response.status_code == 403
    assert "may correct a patient's weight" in page_text(response)
    with app.app_context():
        assert rows() == before
        assert patient("SLE-01").weight_kg == WEIGHT


def test_a_step_correction_without_a_reason_changes_no_bag(app: Flask, formulated: str,
                                                           login: Callable[..., FlaskClient]) -> None:
    client = login("tech1")
    with app.app_context():
        before = rows()
        entry_id = entries(formulated, "formulation")[0].id
        version = get_batch(formulated).version
    response = client.post(f"/batches/{formulated}/entries/{entry_id}/fields/car_t_per_ml/correct",
                           data={"value": "5e5", "reason": "", "batch_version": version, **signature("tech1")})
    assert response.status_code == 422
    assert "Say why the value is corrected." in page_text(response)
    with app.app_context():
        assert rows() == before
        assert current_values(db.session.get(StepEntry, entry_id))["car_t_per_ml"].text == "2.0e6"  # type: ignore[arg-type]
