"""Recording steps over HTTP: the batch page, limits and deviations, order, materials, roles, states."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lab.demo import INCUBATOR, OVERDUE_INCUBATOR, equipment_code, local, lot_code
from lab.extensions import db
from lab.services.patients import PatientInput, register_patient
from lab.services.progress import batch_overview
from lab.services.signatures import current_values
from tests.factories import (
    demo_lot,
    entries,
    get_batch,
    page_text,
    post_step,
    signature,
    signed_in,
    snapshot,
    user,
)

pytestmark = pytest.mark.requirements("A11-6")

STEP_ORDER = ["receipt", "enrichment", "activation", "transduction", "expansion", "harvest", "formulation",
              "cryopreservation", "storage"]





def step_states_on_page(page: str) -> list[tuple[str, str]]:
    """(step key, state badge text) of each step, in page order."""
    return re.findall(r'<li class="step[^"]*" id="step-(\w+)">\s*<h3>[^<]*<span class="badge [^"]*">([^<]*)</span>',
                      page)


def derived_value(app: Flask, number: str, step_key: str, key: str, occurrence: int = 1) -> Any:
    with app.app_context():
        overview = batch_overview(get_batch(number))
        view = next(s for s in overview.steps if s.spec.key == step_key)
        entry = next(e for e in view.entries if e.entry.occurrence == occurrence)
        return entry.derived[key].value


@pytest.fixture
def tech(login: Any) -> FlaskClient:
    return login("tech1")


# --- the batch page ----------------------------------------------------------------------


def test_the_batch_page_lists_steps_in_order_with_their_states(app, make_batch, login):
    number = make_batch(until="harvest")
    page = login("tech1").get(f"/batches/{number}").get_data(as_text=True)
    states = step_states_on_page(page)
    assert [key for key, _ in states] == STEP_ORDER
    assert dict(states) == {
        "receipt": "verified", "enrichment": "done", "activation": "done", "transduction": "verified",
        "expansion": "in progress", "harvest": "pending", "formulation": "pending", "cryopreservation": "pending",
        "storage": "pending"}
    with app.app_context():
        batch = get_batch(number)
        coi, sha = batch.patient.coi, batch.definition.sha256
    text = html.unescape(page)
    assert coi in text
    assert "cd19-car-t</span> version 4" in text
    assert f"sha256 {sha}" in text
    titles = re.findall(r"<h3>([^<]+?) <span", text)
    assert titles[:3] == ["Apheresis receipt", "T-cell enrichment", "Activation (day 0)"]


def test_a_step_waiting_for_verification_shows_as_done(make_batch, login):
    number = make_batch(until="enrichment", verify=False)
    page = login("tech2").get(f"/batches/{number}").get_data(as_text=True)
    assert dict(step_states_on_page(page))["receipt"] == "done"
    assert "Awaiting verification by a second person." in page
    assert f"/batches/{number}/entries/" in page and "/verify" in page  # tech2 is offered the Verify button


# --- recording a step ----------------------------------------------------------------------


def test_recording_the_receipt(app, make_batch, tech):
    number = make_batch(until="receipt")
    with app.app_context():
        assert get_batch(number).state == "scheduled"
    form = tech.get(f"/batches/{number}/steps/receipt")
    assert form.status_code == 200
    assert 'name="field-coi_on_bag"' in form.get_data(as_text=True)
    before = datetime.now(UTC)
    response = post_step(app, tech, number, "receipt")
    assert response.status_code == 302, page_text(response)
    assert response.headers["Location"].endswith(f"/batches/{number}#step-receipt")
    with app.app_context():
        batch = get_batch(number)
        assert batch.state == "in_process"
        [entry] = entries(number, "receipt")
        assert entry.performed_by.username == "tech1"
        assert before - timedelta(seconds=1) <= entry.performed_at <= datetime.now(UTC)
        assert entry.comment is None
        values = {k: v.text for k, v in current_values(entry).items()}
        assert values["coi_on_bag"] == batch.patient.coi
        assert values["volume_ml"] == "180"
        assert values["decision"] == "accept"
        assert current_values(entry)["volume_ml"].unit == "mL"
        assert current_values(entry)["volume_ml"].number == 180.0
        assert not any(v.out_of_limit for v in entry.values)
        assert all(v.recorded_by_id == entry.performed_by_id for v in entry.values)
        assert batch.deviations == []
    hours = derived_value(app, number, "receipt", "hours_since_collection")
    assert 9 <= hours <= 9.05
    page = page_text(tech.get(f"/batches/{number}"))
    assert "Hours from end of collection to receipt" in page
    assert "Apheresis receipt recorded" in page
    assert "in process" in page


@pytest.mark.requirements("PROC-3")
def test_fourteen_hours_since_collection_needs_a_comment_then_opens_a_deviation(app, make_batch, tech):
    number = make_batch(until="receipt")
    late = local(datetime.now(UTC) - timedelta(hours=14))
    before = snapshot(app, number)
    response = post_step(app, tech, number, "receipt", collection_end=late)
    assert response.status_code == 422
    page = page_text(response)
    assert "A comment is required." in page
    assert "Explain why the entry is acceptable" in page
    assert "is above the limit of 12 h" in page
    assert snapshot(app, number) == before

    response = post_step(app, tech, number, "receipt", collection_end=late,
                         comment="Courier delayed by snow; QA informed.")
    assert response.status_code == 302
    with app.app_context():
        batch = get_batch(number)
        [entry] = entries(number, "receipt")
        assert entry.comment == "Courier delayed by snow; QA informed."
        [deviation] = batch.deviations
        assert deviation.status == "open"
        assert deviation.source == "limit"
        assert deviation.field_key == "hours_since_collection"
        assert deviation.entry_id == entry.id
        assert deviation.opened_by.username == "tech1"
        assert "above the limit of 12 h" in deviation.title
        assert deviation.description == "Courier delayed by snow; QA informed."
        assert re.fullmatch(r"DEV-\d{4}-0001", deviation.number)
        dev_number, title = deviation.number, deviation.title
    assert derived_value(app, number, "receipt", "hours_since_collection") > 12
    page = page_text(tech.get(f"/batches/{number}"))
    assert "Open deviations (1)" in page
    assert dev_number in page and title in page
    assert "OUT OF LIMIT" in page
    assert "Courier delayed by snow; QA informed." in page


@pytest.mark.requirements("PROC-3")
def test_low_viability_in_expansion_is_flagged_and_opens_a_deviation(app, make_batch, tech):
    number = make_batch(until="harvest", days_ago=9)  # today is culture day 7
    before = snapshot(app, number)
    response = post_step(app, tech, number, "expansion", culture_day="7", viability_pct="62")
    assert response.status_code == 422
    page = page_text(response)
    assert "Viability 62 % is below the limit of 70 %." in page
    assert "OUT OF LIMIT" in page
    assert snapshot(app, number) == before

    response = post_step(app, tech, number, "expansion", culture_day="7", viability_pct="62",
                         comment="Medium exchange; count repeated tomorrow.")
    assert response.status_code == 302
    with app.app_context():
        entry = entries(number, "expansion")[-1]
        assert entry.occurrence == 2
        value = current_values(entry)["viability_pct"]
        assert value.out_of_limit is True
        assert value.number == 62.0
        assert value.limit_text == "≥ 70 %"
        assert value.message == "Viability 62 % is below the limit of 70 %."
        [deviation] = get_batch(number).deviations
        assert (deviation.field_key, deviation.status, deviation.entry_id) == ("viability_pct", "open", entry.id)
    page = page_text(tech.get(f"/batches/{number}"))
    assert "Open deviations (1)" in page
    assert "Expansion (daily count): Viability 62 % is below the limit of 70 %." in page


@pytest.mark.requirements("COI-3")
def test_the_bag_of_another_patient_is_refused(app, make_batch, tech):
    number = make_batch(until="receipt")
    with app.app_context():
        other = register_patient(PatientInput("SLE-02", "JT", date(1995, 7, 2), 71.0, "SLE"), actor=user("super1"))
        db.session.commit()
        other_coi = other.coi
    before = snapshot(app, number)
    response = post_step(app, tech, number, "receipt", coi_on_bag=other_coi)
    assert response.status_code == 422
    page = page_text(response)
    assert "COI MISMATCH" in page
    assert f"the bag is labelled {other_coi}" in page
    assert "Do not use this bag." in page
    assert snapshot(app, number) == before
    with app.app_context():
        assert entries(number, "receipt") == []


@pytest.mark.requirements("P11-10f")
def test_a_step_out_of_order_is_refused(app, make_batch, tech):
    number = make_batch(until="receipt")
    before = snapshot(app, number)
    response = tech.get(f"/batches/{number}/steps/harvest")
    assert response.status_code == 409
    assert "Record 'Apheresis receipt' first: steps are done in order." in page_text(response)
    response = post_step(app, tech, number, "harvest")
    assert response.status_code == 409
    assert "Record 'Apheresis receipt' first: steps are done in order." in page_text(response)
    assert snapshot(app, number) == before


@pytest.mark.requirements("P11-10f")
def test_a_non_repeatable_step_is_recorded_once(app, make_batch, tech):
    number = make_batch(until="enrichment")
    before = snapshot(app, number)
    assert tech.get(f"/batches/{number}/steps/receipt").status_code == 409
    response = post_step(app, tech, number, "receipt")
    assert response.status_code == 409
    assert "'Apheresis receipt' is already recorded; correct a value instead." in page_text(response)
    assert snapshot(app, number) == before


def test_expansion_is_repeatable_until_the_harvest(app, make_batch, tech):
    number = make_batch(until="expansion", days_ago=7)  # today is culture day 5: day 4 may still be recorded
    assert post_step(app, tech, number, "expansion", culture_day="4", viable_cells="4.0e8",
                     viability_pct="90").status_code == 302
    assert post_step(app, tech, number, "expansion", culture_day="5", viable_cells="9.5e8", viability_pct="93",
                     feed_volume_ml="100", medium_lot=demo_lot(app, "TEX-2610")).status_code == 302
    with app.app_context():
        found = entries(number, "expansion")
        assert [e.occurrence for e in found] == [1, 2]
        assert current_values(found[1])["medium_lot"].lot.code == lot_code("TEX-2610")
        assert current_values(found[1])["feed_volume_ml"].number == 100.0
        assert "feed_volume_ml" not in current_values(found[0])  # optional and left empty: no row
    # cells seeded at activation: 1.0e8
    assert derived_value(app, number, "expansion", "fold_expansion", 1) == pytest.approx(4.0)
    assert derived_value(app, number, "expansion", "fold_expansion", 2) == pytest.approx(9.5)
    page = tech.get(f"/batches/{number}").get_data(as_text=True)
    assert dict(step_states_on_page(page))["expansion"] == "in progress"
    assert "Fold expansion since seeding" in page
    assert "Add entry Expansion (daily count)" in page

    before = snapshot(app, number)
    response = post_step(app, tech, number, "expansion", culture_day="5")
    assert response.status_code == 422
    assert "Culture day 5 is already recorded (entry 2 of 'Expansion (daily count)')" in page_text(response)
    assert snapshot(app, number) == before

    assert post_step(app, tech, number, "harvest", comment="Harvested early: culture day 5.").status_code == 302
    page = tech.get(f"/batches/{number}").get_data(as_text=True)
    states = dict(step_states_on_page(page))
    assert states["expansion"] == "done"
    assert states["harvest"] == "done"  # waiting for its verification
    before = snapshot(app, number)
    assert tech.get(f"/batches/{number}/steps/expansion").status_code == 409
    response = post_step(app, tech, number, "expansion", culture_day="12")
    assert response.status_code == 409
    assert "'Expansion (daily count)' is closed: 'Harvest and wash' has been recorded since." in page_text(response)
    assert snapshot(app, number) == before


# --- materials and equipment ----------------------------------------------------------------


@pytest.mark.requirements("MAT-1", "EQP-1")
@pytest.mark.parametrize(("until", "field", "code", "message"), [
    ("activation", "medium_lot", "TEX-2501", "Lot TEX-2501 EXPIRED on "),
    ("transduction", "vector_lot", "LV-CD19-0043", "Lot LV-CD19-0043 is QUARANTINED: it has not been released for use."),
    ("harvest", "incubator", OVERDUE_INCUBATOR, "CO2 incubator #2 {code} was due for calibration on "),
    ("activation", "medium_lot", "NOPE-0001", "No material lot 'NOPE-0001' is registered."),
    ("activation", "transact_lot", "TEX-2610",
     "Lot TEX-2610 is TexMACS GMP medium (a medium); TransAct lot needs a transact lot."),
    ("enrichment", "processor", INCUBATOR, "CO2 incubator #1 {code} is an incubator; Cell processor needs a cell processor."),
    ("enrichment", "processor", "PRODIGY-99", "No equipment 'PRODIGY-99' is registered."),
])
def test_unusable_materials_and_equipment_are_refused_with_the_reason(app, make_batch, tech, until, field, code,
                                                                      message):
    number = make_batch(until=until)
    step_key = "expansion" if field == "incubator" else until
    overrides = {"culture_day": "7"} if step_key == "expansion" else {}
    if code in ("TEX-2501", "LV-CD19-0043", "TEX-2610"):  # demo lot codes are generated: look them up
        lot_number = code
        code = demo_lot(app, lot_number)
        message = message.replace(lot_number, code)
    if code in (INCUBATOR, OVERDUE_INCUBATOR):  # demo equipment codes are generated: look them up by name
        with app.app_context():
            code = equipment_code(code)
        message = message.format(code=code)
    before = snapshot(app, number)
    response = post_step(app, tech, number, step_key, **{field: code}, **overrides)
    assert response.status_code == 422
    page = page_text(response)
    assert message in page
    assert "The entry was not saved: correct the fields marked below." in page
    assert snapshot(app, number) == before


def test_the_expiry_and_calibration_dates_are_named(app, make_batch, tech):
    number = make_batch(until="harvest")
    today = datetime.now(UTC).date()
    expired = demo_lot(app, "TEX-2501")
    response = post_step(app, tech, number, "expansion", culture_day="7", feed_volume_ml="50", medium_lot=expired.lower())
    assert response.status_code == 422
    assert f"Lot {expired} EXPIRED on {(today - timedelta(days=5)).isoformat()}." in page_text(response)
    with app.app_context():
        overdue = equipment_code(OVERDUE_INCUBATOR)
    response = post_step(app, tech, number, "expansion", culture_day="7", incubator=overdue)
    assert response.status_code == 422
    assert f"was due for calibration on {(today - timedelta(days=10)).isoformat()}" in page_text(response)


# --- roles -----------------------------------------------------------------------------------


@pytest.mark.requirements("P11-10g")
@pytest.mark.parametrize("username", ["qc1", "auditor1", "admin"])
def test_a_role_that_may_not_record_gets_403(app, make_batch, login, username):
    number = make_batch(until="receipt")
    client = login(username)
    before = snapshot(app, number)
    response = client.get(f"/batches/{number}/steps/receipt")
    assert response.status_code == 403
    assert "Only a lab technician may record Apheresis receipt" in page_text(response)
    response = post_step(app, client, number, "receipt")
    assert response.status_code == 403
    assert snapshot(app, number) == before
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    assert f"/batches/{number}/steps/receipt" not in page  # no Record button either


def test_a_supervisor_may_record_a_technicians_step(app, make_batch, login):
    number = make_batch(until="receipt")
    response = post_step(app, login("super1"), number, "receipt")
    assert response.status_code == 302
    with app.app_context():
        assert entries(number, "receipt")[0].performed_by.username == "super1"


# --- batch states ------------------------------------------------------------------------------


def test_a_rejected_bag_puts_the_batch_on_hold(app, make_batch, tech):
    number = make_batch(until="receipt")
    response = post_step(app, tech, number, "receipt", decision="reject")
    assert response.status_code == 422
    assert "Decision is 'reject': expected accept." in page_text(response)
    response = post_step(app, tech, number, "receipt", decision="reject", bag_intact="no",
                         comment="Bag leaking at the sampling port.")
    assert response.status_code == 302
    with app.app_context():
        batch = get_batch(number)
        assert batch.state == "on_hold"
        assert {d.field_key for d in batch.deviations} == {"decision", "bag_intact"}
        assert all(d.status == "open" for d in batch.deviations)
    page = page_text(tech.get(f"/batches/{number}"))
    assert "on hold" in page
    assert "Open deviations (2)" in page
    before = snapshot(app, number)
    response = tech.get(f"/batches/{number}/steps/enrichment")
    assert response.status_code == 409
    assert "The batch is on hold: no step can be recorded." in page_text(response)
    response = post_step(app, tech, number, "enrichment")
    assert response.status_code == 409
    assert "The batch is on hold: no step can be recorded." in page_text(response)
    assert snapshot(app, number) == before


def verify_over_http(app: Flask, client: FlaskClient, number: str, step_key: str) -> Any:
    with app.app_context():
        entry_id = entries(number, step_key)[-1].id
        version = get_batch(number).version
    return client.post(f"/batches/{number}/entries/{entry_id}/verify",
                       data={**signature(signed_in(app, client)), "batch_version": version})


def test_a_batch_recorded_to_the_end_and_verified_goes_to_qc_testing(app, make_batch, login):
    number = make_batch(until="cryopreservation")
    tech1 = login("tech1")
    assert post_step(app, tech1, number, "cryopreservation").status_code == 302
    tech2 = login("tech2")
    assert verify_over_http(app, tech2, number, "cryopreservation").status_code == 302
    tech1 = login("tech1")
    assert post_step(app, tech1, number, "storage").status_code == 302
    with app.app_context():
        assert get_batch(number).state == "in_process"  # storage still awaits its verification
    tech2 = login("tech2")
    assert verify_over_http(app, tech2, number, "storage").status_code == 302
    with app.app_context():
        assert get_batch(number).state == "qc_testing"
    page = tech2.get(f"/batches/{number}").get_data(as_text=True)
    assert "qc testing" in page
    states = dict(step_states_on_page(page))
    assert all(states[k] == "verified" for k in ("receipt", "transduction", "harvest", "formulation",
                                                    "cryopreservation", "storage"))
    assert all(states[k] == "done" for k in ("enrichment", "activation", "expansion"))
    response = post_step(app, tech2, number, "storage")
    assert response.status_code == 409
    assert "no step can be recorded" in page_text(response)


@pytest.mark.requirements("PROC-5")
def test_the_dose_is_computed_from_the_patients_weight(app, make_batch, tech):
    number = make_batch(until="formulation", weight_kg=58.0)
    form = page_text(tech.get(f"/batches/{number}/steps/formulation"))
    assert 'value="1e6"' in form and 'value="70"' in form  # the definition's defaults
    response = post_step(app, tech, number, "formulation", target_dose_per_kg="1e6", car_t_per_ml="2.0e6",
                         max_fill_ml="70")
    assert response.status_code == 302
    assert derived_value(app, number, "formulation", "total_dose") == pytest.approx(5.8e7)
    assert derived_value(app, number, "formulation", "dose_volume_ml") == pytest.approx(29.0)
    assert derived_value(app, number, "formulation", "bags") == 1
    assert derived_value(app, number, "formulation", "volume_per_bag_ml") == pytest.approx(29.0)
    page = page_text(tech.get(f"/batches/{number}"))
    rows = {label: value for label, value in re.findall(
        r'<tr class="derived\s*">\s*<td>([^<]+?) <span class="muted">\(computed\)</span></td>\s*<td>([^<]*)</td>',
        page)}
    assert rows["Dose volume"] == "29 mL"
    assert rows["Number of bags"] == "1"
    assert rows["Volume per bag"] == "29 mL"
    assert rows["Total dose"] == "5.80 × 10⁷ cells"
    assert re.search(r"· 58(\.0)? kg", page)  # the weight the dose was computed from


def test_a_batch_scanned_into_the_scan_box_lands_on_its_page(app, make_batch, tech):
    number = make_batch(until="enrichment")
    typed = number.replace("-", "").lower()
    response = tech.get("/scan", query_string={"code": typed}, follow_redirects=True)
    assert response.status_code == 200
    assert response.request.path == f"/batches/{number}"
    assert f'Batch <span class="code">{number}</span>' in response.get_data(as_text=True)
