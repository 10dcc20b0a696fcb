"""Chain of identity at every hand-off: scans that match are custody events; a container of
another patient or batch is refused, and only its mismatch is kept."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab.demo import LN2_FREEZER, PROCESSOR, equipment_code
from lab.extensions import db
from lab.models import AuditEvent, Container, CustodyEvent, StepEntry
from tests.factories import entries, get_batch, page_text, post_step, signature, snapshot
from tests.queries import statements

pytestmark = pytest.mark.requirements("COI-3", "COI-4")


def container(app: Flask, number: str, kind: str) -> str:
    with app.app_context():
        return next(c.code for c in get_batch(number).containers if c.kind == kind)


def custody(app: Flask, number: str) -> list[tuple[str, str, bool, str | None]]:
    with app.app_context():
        rows = db.session.scalars(select(CustodyEvent).where(CustodyEvent.batch_id == get_batch(number).id)
                                  .order_by(CustodyEvent.id))
        return [(e.scanned_code, e.event, e.matched, e.to_location) for e in rows]


def test_steps_create_containers_with_codes_parents_and_volumes(app, make_batch):
    number = make_batch()
    with app.app_context():
        batch = get_batch(number)
        made = {c.kind: c for c in batch.containers}
        kinds = [c.kind for c in batch.containers]
        assert kinds == ["apheresis_bag", "culture_bag", "product_bag", "qc_sample", "qc_sample", "qc_sample",
                         "retain_sample", "retain_sample"]
        assert made["apheresis_bag"].volume_ml == 180 and made["apheresis_bag"].status == "consumed"
        assert made["culture_bag"].parent is made["apheresis_bag"] and made["culture_bag"].status == "consumed"
        bag = made["product_bag"]
        assert (bag.number, bag.count, bag.volume_ml, bag.parent) == (1, 1, 29.0, made["culture_bag"])
        assert bag.status == "stored" and bag.location == f"{equipment_code(LN2_FREEZER)} / rack R3 / box B12 / position A5"
        assert [(c.number, c.count) for c in batch.containers if c.kind == "qc_sample"] == [(1, 3), (2, 3), (3, 3)]
        assert len({c.code for c in batch.containers}) == len(kinds)


def test_each_hand_off_scan_is_a_custody_event(app, make_batch):
    number = make_batch()
    trail = custody(app, number)
    events = [event for _, event, matched, _ in trail if matched]
    assert "label applied" in events
    for handoff in ("transferred into processing and culture", "activation", "transduction", "sampled for a count",
                    "harvest", "fill", "into the controlled-rate freezer", "stored in LN2"):
        assert handoff in events, handoff
    assert all(matched for _, _, matched, _ in trail)
    stored = [to for _, event, _, to in trail if event == "stored in LN2"]
    with app.app_context():
        assert stored == [f"{equipment_code(LN2_FREEZER)} / rack R3 / box B12 / position A5"]


def test_the_batch_page_shows_the_custody_timeline(app, make_batch, login):
    number = make_batch(until="activation")
    page = page_text(login("tech1").get(f"/batches/{number}"))
    assert "Custody timeline" in page
    assert "transferred into processing and culture" in page and "label applied" in page
    with app.app_context():
        assert "CliniMACS" not in page or equipment_code(PROCESSOR) in page


def test_a_container_of_another_patient_is_refused_and_only_the_mismatch_is_kept(app, make_batch, login):
    mine = make_batch(until="activation", ref="SLE-01")
    theirs = make_batch(until="activation", ref="SLE-02")
    stranger = container(app, theirs, "culture_bag")
    client = login("tech1")
    before = snapshot(app, mine)
    with app.app_context():
        audit_before = db.session.scalar(select(func.count()).select_from(AuditEvent))
        custody_before = db.session.scalar(select(func.count()).select_from(CustodyEvent))
    response = post_step(app, client, mine, "activation", culture_bag=stranger)
    page = page_text(response)
    assert response.status_code == 409
    assert "STOP" in page and "COI MISMATCH" in page and stranger in page
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(StepEntry)) == before["StepEntry"]
        events = db.session.scalars(select(CustodyEvent).order_by(CustodyEvent.id.desc())).all()
        assert db.session.scalar(select(func.count()).select_from(CustodyEvent)) == custody_before + 1
        mismatch = events[0]
        assert (mismatch.matched, mismatch.scanned_code, mismatch.step_key) == (False, stranger, "activation")
        assert mismatch.batch_id == get_batch(mine).id and mismatch.actor.username == "tech1"
        assert mismatch.container_id == db.session.scalar(select(Container.id).where(Container.code == stranger))
        new_audit = db.session.scalars(select(AuditEvent).where(AuditEvent.id > audit_before)).all()
        assert {e.table_name for e in new_audit} == {"custody_events", "deviations"}
        assert {e.action for e in new_audit} == {"custody.mismatch"}
        deviation = get_batch(mine).deviations[-1]
        assert (deviation.source, deviation.status) == ("custody", "open") and stranger in deviation.title
    after = snapshot(app, mine)
    unchanged = ("StepEntry", "StepValue", "Signature", "version", "state")
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    timeline = page_text(client.get(f"/batches/{mine}"))
    assert "MISMATCH" in timeline


def test_a_container_of_another_batch_of_the_same_patient_is_refused(app, make_batch, login):
    number = make_batch(until="activation", ref="SLE-01")
    with app.app_context():
        batch = get_batch(number)
        apheresis = next(c.code for c in batch.containers if c.kind == "apheresis_bag")
    client = login("tech1")
    response = post_step(app, client, number, "activation", culture_bag=apheresis)
    assert response.status_code == 409
    assert "is Apheresis bag; Culture bag needs a culture bag" in page_text(response)
    assert custody(app, number)[-1][2] is False


def test_every_product_bag_must_be_scanned_into_storage(app, make_batch, login, two_bags=None):
    number = make_batch(until="storage")
    with app.app_context():
        bags = [c.code for c in get_batch(number).containers if c.kind == "product_bag"]
    assert len(bags) == 1
    client = login("tech1")
    response = post_step(app, client, number, "storage", product_bags="")
    assert response.status_code == 422
    assert "Enter a value for Product bags." in page_text(response)
    assert post_step(app, client, number, "storage").status_code == 302
    with app.app_context():
        bag = get_batch(number).containers[2]
        assert (bag.kind, bag.status, bag.location) == ("product_bag", "stored",
                                                        f"{equipment_code(LN2_FREEZER)} / rack R3 / box B12 / position A5")


def test_scanning_the_culture_bag_opens_the_days_count_with_the_bag_filled_in(app, make_batch, login):
    number = make_batch(until="harvest", expansion=())
    culture = container(app, number, "culture_bag")
    client = login("tech1")
    response = client.get("/scan", query_string={"code": culture})
    assert response.status_code == 302
    assert response.headers["Location"].startswith(f"/batches/{number}/steps/expansion?field-culture_bag=")
    form = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f'value="{culture}"' in form


def test_a_scan_that_no_step_needs_opens_the_container_page(app, make_batch, login):
    number = make_batch(until="harvest")
    apheresis = container(app, number, "apheresis_bag")  # consumed at enrichment
    response = login("tech1").get("/scan", query_string={"code": apheresis})
    assert response.headers["Location"] == f"/containers/{apheresis}"


def _scan(app, client, code):
    """Where a scan of ``code`` leads, and the queries it took."""
    with statements(app) as found:
        response = client.get("/scan", query_string={"code": code})
    assert response.status_code == 302
    return response.headers["Location"], len(found)


def test_a_container_scan_leads_where_the_record_now_says_in_a_fixed_number_of_queries(app, make_batch, login):
    number = make_batch(until="activation")
    culture = container(app, number, "culture_bag")
    tech = login("tech1")
    first, drawn = _scan(app, tech, culture)
    assert first == f"/batches/{number}/steps/activation?field-culture_bag={culture}"
    assert _scan(app, tech, culture) == (first, 2)  # again: the reader, and the container with its batch's mark
    assert post_step(app, tech, number, "activation").status_code == 302
    analyst = login("qc1")  # another reader, of another role: the activation is on record, the bag awaits transduction
    now = f"/batches/{number}/steps/transduction?field-culture_bag={culture}"
    assert _scan(app, analyst, culture) == (now, drawn)
    assert _scan(app, analyst, culture) == (now, 2)


def test_the_label_scan_back_on_the_container_page(app, make_batch, login):
    number = make_batch(until="transduction")
    culture = container(app, number, "culture_bag")
    client = login("tech2")
    ok = client.post(f"/containers/{culture}/scan",
                     data={"event": "moved", "scanned": culture.replace("-", "").lower(), "to_location": "INC-01"})
    assert ok.status_code == 302
    assert custody(app, number)[-1] == (culture, "moved", True, "INC-01")
    with app.app_context():
        assert db.session.scalar(select(Container.location).where(Container.code == culture)) == "INC-01"


def test_scanning_another_container_at_a_hand_off_is_a_mismatch(app, make_batch, login):
    mine = make_batch(until="transduction", ref="SLE-01")
    theirs = make_batch(until="transduction", ref="SLE-02")
    culture, stranger = container(app, mine, "culture_bag"), container(app, theirs, "culture_bag")
    client = login("tech1")
    response = client.post(f"/containers/{culture}/scan",
                           data={"event": "moved", "scanned": stranger, "to_location": "INC-02"})
    page = page_text(response)
    assert response.status_code == 409
    assert "MISMATCH" in page and stranger in page and theirs in page
    assert custody(app, mine)[-1] == (stranger, "moved", False, None)
    with app.app_context():
        assert db.session.scalar(select(Container.location).where(Container.code == culture)) != "INC-02"


def test_nothing_is_shipped_before_release(app, make_batch, login):
    number = make_batch()
    with app.app_context():
        bag = next(c.code for c in get_batch(number).containers if c.kind == "product_bag")
    before = custody(app, number)
    response = login("tech1").post(f"/containers/{bag}/scan",
                                   data={"event": "released for shipping", "scanned": bag, "to_location": "Dry shipper"})
    assert response.status_code == 422
    assert "is not released" in page_text(response)
    assert custody(app, number) == before


def test_hand_offs_are_refused_to_roles_that_do_not_handle_containers(app, make_batch, login):
    number = make_batch(until="transduction")
    culture = container(app, number, "culture_bag")
    before = custody(app, number)
    for user in ("auditor1", "qa1"):
        response = login(user).post(f"/containers/{culture}/scan", data={"event": "moved", "scanned": culture})
        assert response.status_code == 403, user
    assert custody(app, number) == before


def test_a_scan_cannot_be_corrected(app, make_batch, login):
    number = make_batch(until="activation")
    with app.app_context():
        entry = entries(number, "enrichment")[0]
        version = get_batch(number).version
    response = login("tech1").post(
        f"/batches/{number}/entries/{entry.id}/fields/apheresis_bag/correct",
        data={"value": "C-A9999-26-000009-X", "reason": "wrong bag", "batch_version": version,
              **signature("tech1")})
    assert response.status_code == 422
    assert "cannot be corrected" in page_text(response)


def test_an_unknown_hand_off_or_an_overlong_location_is_refused(app, make_batch, login):
    number = make_batch(until="transduction")
    culture = container(app, number, "culture_bag")
    client = login("tech1")
    assert client.post(f"/containers/{culture}/scan", data={"event": "teleported", "scanned": culture}).status_code == 422
    response = client.post(f"/containers/{culture}/scan",
                           data={"event": "moved", "scanned": culture, "to_location": "x" * 300})
    assert response.status_code == 422
