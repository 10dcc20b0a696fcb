"""Late results reach the physician (issue 15, item 7): a release result that fails after the
product was shipped becomes a notice to each site it went to, in the result's transaction;
the site's clinicians and the quality unit read it; a clinician of the site acknowledges it
once, signing "acknowledged"; every refusal writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import AuditEvent, QcResult, Shipment, Signature, SigningFailure, SiteNotice
from lab.services.site_notices import notify_late_failure, open_notices
from tests.clinic import find_shipment, pack, ship
from tests.factories import PASSWORD, get_batch, page_text, signature
from tests.htmlcheck import problems
from tests.quality import post_result, state, version, words

pytestmark = [pytest.mark.usefixtures("never_500"), pytest.mark.requirements("CLIN-5")]

GROWTH_COMMENT = "Gram-positive cocci at day 11."
ONLY_CLINICIANS = "Only a clinician may acknowledge a notice of a late result for the treating site"


# --- helpers (also used by tests/test_record_distribution.py) ----------------------------------------








def notices(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        return [{"id": n.id, "site": n.site.code, "result": n.result_id, "what": n.what,
                 "acknowledged_by": n.acknowledged_by.username if n.acknowledged_by else None,
                 "acknowledged_at": n.acknowledged_at}
                for n in db.session.scalars(select(SiteNotice).order_by(SiteNotice.id))]


def counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {model.__name__: db.session.scalar(select(func.count()).select_from(model)) or 0
                for model in (SiteNotice, Signature, SigningFailure, AuditEvent, QcResult)}


def fail_late(app: Flask, login: Any, number: str) -> Any:
    """qc1 reports sterility "growth" (a failing final result) over HTTP."""
    qc = login("qc1")
    response = post_result(app, qc, number, "sterility", "growth", comment=GROWTH_COMMENT)
    assert response.status_code == 302, page_text(response)[:2000]
    return response


def acknowledge(client: Any, notice_id: int, username: str, password: str = PASSWORD) -> Any:
    return client.post(f"/notices/{notice_id}/acknowledge", data=signature(username, password))


# --- a late failure makes the notices ------------------------------------------------------------------------


def test_a_result_failing_after_shipment_notifies_the_consignee_site(app, released, sites, login):
    shipment_number = ship(app, released, sites["NUH-HEM"])
    before = counts(app)
    fail_late(app, login, released)
    [notice] = notices(app)
    assert notice["site"] == "NUH-HEM" and notice["acknowledged_at"] is None
    what = notice["what"]
    assert what.startswith("Sterility: Result growth FAILS its specification (")
    assert "Recorded " in what and " UTC by " in what and f"after batch {released} was shipped" in what
    with app.app_context():
        result = db.session.get(QcResult, notice["result"])
        assert result is not None
        assert (result.test_key, result.verdict, result.is_late) == ("sterility", "fail", True)
        assert result.spec_text in what and result.recorded_by.full_name in what
        # the same transaction, under the result's own audit action
        [entry] = db.session.scalars(select(AuditEvent).where(AuditEvent.table_name == "site_notices")).all()
        assert (entry.action, entry.operation, entry.actor_username) == ("result.record", "insert", "qc1")
        assert find_shipment(shipment_number).status == "in_transit"
    assert counts(app)["SiteNotice"] == before["SiteNotice"] + 1
    assert state(app, released) == "on_hold"  # as before issue 15: the late failure holds the batch


def test_no_notice_before_the_product_left_the_lab(app, released, sites, login):
    fail_late(app, login, released)  # released, never packed
    assert notices(app) == []


def test_no_notice_while_the_shipment_is_only_packed(app, released, sites, login):
    pack(app, released, sites["NUH-HEM"])  # not verified: it has not left
    fail_late(app, login, released)
    assert notices(app) == []


def test_a_passing_late_result_notifies_nobody(app, released, sites, login):
    ship(app, released, sites["NUH-HEM"])
    qc = login("qc1")
    assert post_result(app, qc, released, "sterility", "no growth").status_code == 302
    assert notices(app) == [] and state(app, released) == "shipped"


def test_each_site_the_product_went_to_is_told_once_per_result(app, released, sites, login):
    ship(app, released, sites["NUH-HEM"])
    with app.app_context():  # a second consignee (a split shipment), set up directly
        first = db.session.scalar(select(Shipment))
        assert first is not None
        with audit.action("test.setup", actor=None):
            db.session.add(Shipment(number="SHP-2026-9999", batch_id=first.batch_id, site_id=sites["SGH-ONC"],
                                    status="received", shipper_code="DS-2", logger_code="LOG-2", courier="Courier",
                                    departed_at=first.departed_at, packed_by_id=first.packed_by_id))
        db.session.commit()
    fail_late(app, login, released)
    assert sorted(n["site"] for n in notices(app)) == ["NUH-HEM", "SGH-ONC"]
    assert len({n["result"] for n in notices(app)}) == 1
    with app.app_context():  # called again for the same result: nothing more
        [result] = [r for r in get_batch(released).results if r.verdict == "fail"]
        with audit.action("test.again", actor=None):
            assert notify_late_failure(result, now=datetime.now(UTC)) == []
        db.session.commit()
    assert len(notices(app)) == 2


def test_a_correction_that_fails_again_does_not_notify_the_site_twice(app, released, sites, login):
    """Corrections are refused once a batch was released (so after shipment): over HTTP the
    correction is refused and no notice is added. Should a correction of a notified result be
    recorded, the site already told of that test's failure is not told again: its notice
    page shows the current result instead."""
    ship(app, released, sites["NUH-HEM"])
    fail_late(app, login, released)
    [notice] = notices(app)
    qc = login("qc1")
    before = counts(app)
    response = qc.post(f"/batches/{released}/results/{notice['result']}/correct",
                       data={"value": "growth", "reason": "Retyped.", "batch_version": version(app, released),
                             **signature("qc1")})
    assert response.status_code == 409
    assert counts(app) == before
    with app.app_context():
        failed = db.session.get(QcResult, notice["result"])
        assert failed is not None
        with audit.action("test.setup", actor=None):
            correction = QcResult(batch_id=failed.batch_id, test_key="sterility", text="growth", unit=None,
                                  verdict="fail", is_final=True, spec_text=failed.spec_text, message=failed.message,
                                  is_late=True, recorded_at=datetime.now(UTC), recorded_by_id=failed.recorded_by_id,
                                  supersedes_id=failed.id, reason="Organism identified: S. epidermidis.")
            db.session.add(correction)
            db.session.flush()
            assert notify_late_failure(correction, now=datetime.now(UTC)) == []
        db.session.commit()
        correction_id = correction.id
    assert len(notices(app)) == 1
    nurse = login("nurse1")
    page = words(nurse.get(f"/notices/{notice['id']}"))
    assert "Current result corrected since: growth (FAIL)" in page
    with app.app_context():
        assert db.session.get(QcResult, correction_id) is not None


# --- reading ---------------------------------------------------------------------------------------


def test_who_reads_which_notices(app, released, sites, login):
    ship(app, released, sites["NUH-HEM"])
    fail_late(app, login, released)
    [notice] = notices(app)
    for username in ("nurse1", "doc1", "qa1", "super1", "auditor1"):
        client = login(username)
        listing = client.get("/notices")
        assert listing.status_code == 200, username
        assert f"Notice {notice['id']}" in words(listing) and "OPEN: to acknowledge" in words(listing)
        shown = client.get(f"/notices/{notice['id']}")
        assert shown.status_code == 200 and "Sterility: Result growth FAILS" in words(shown)
        assert ("Sign: acknowledged" in words(shown)) == (username in ("nurse1", "doc1")), username
    other = login("nurse3")
    assert "No notice so far" in words(other.get("/notices"))
    refused = other.get(f"/notices/{notice['id']}")
    assert refused.status_code == 403 and "belongs to another treatment site" in words(refused)
    tech = login("tech1")
    assert tech.get("/notices").status_code == 403
    assert login("qa1").get("/notices/999").status_code == 404


def test_open_notices_stay_on_qa_s_dashboard_until_the_site_acknowledges(app, released, sites, login):
    ship(app, released, sites["NUH-HEM"])
    qa = login("qa1")
    assert "No notice of a late result is waiting" in words(qa.get("/"))
    fail_late(app, login, released)
    [notice] = notices(app)
    for username in ("qa1", "super1"):
        board = words(login(username).get("/"))
        assert "Late results sent to sites, not yet acknowledged (1)" in board
        assert f"Notice {notice['id']} to NUH-HEM" in board and "Sterility: Result growth FAILS" in board
    with app.app_context():
        assert [n.id for n in open_notices(sites["NUH-HEM"])] == [notice["id"]]
        assert [n.id for n in open_notices(None)] == [notice["id"]]
        assert open_notices(sites["SGH-ONC"]) == []
    nurse = login("nurse1")
    assert acknowledge(nurse, notice["id"], "nurse1").status_code == 302
    board = words(login("qa1").get("/"))
    assert "Late results sent to sites" not in board and "No notice of a late result is waiting" in board
    with app.app_context():
        assert open_notices(None) == [] and open_notices(sites["NUH-HEM"]) == []


# --- acknowledging ------------------------------------------------------------------------------------


def test_a_clinician_of_the_site_acknowledges_once_with_a_signature(app, released, sites, login):
    ship(app, released, sites["NUH-HEM"])
    fail_late(app, login, released)
    [notice] = notices(app)
    nurse = login("nurse1")
    response = acknowledge(nurse, notice["id"], "nurse1")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/notices/{notice['id']}")
    page = words(nurse.get(response.headers["Location"]))
    assert "ACKNOWLEDGED by Nora Nurse" in page
    assert "Nora Nurse · acknowledged" in page
    [done] = notices(app)
    assert done["acknowledged_by"] == "nurse1" and done["acknowledged_at"] is not None
    with app.app_context():
        [signed] = db.session.scalars(select(Signature).where(Signature.record_type == "site_notice")).all()
        assert (signed.meaning, signed.record_id, signed.printed_name) == ("acknowledged", notice["id"], "Nora Nurse")
        [entry] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "notice.acknowledge",
                                                              AuditEvent.field == "acknowledged_by_id")).all()
        assert entry.actor_username == "nurse1"

    # a second acknowledgement, by a colleague of the same site: refused, nothing written
    doctor = login("doc1")
    before = counts(app)
    again = acknowledge(doctor, notice["id"], "doc1")
    assert again.status_code == 409
    assert "already acknowledged by Nora Nurse" in words(again)
    assert counts(app) == before and notices(app) == [done]


@pytest.mark.parametrize("username, status, message", [
    ("nurse3", 403, "belongs to another treatment site"),
    ("qa1", 403, f"{ONLY_CLINICIANS}; you are signed in as qa officer"),
    ("super1", 403, f"{ONLY_CLINICIANS}; you are signed in as supervisor"),
    ("auditor1", 403, "you are signed in as auditor"),
])
def test_nobody_else_acknowledges_for_the_site(app, released, sites, login, username, status, message):
    ship(app, released, sites["NUH-HEM"])
    fail_late(app, login, released)
    [notice] = notices(app)
    client = login(username)
    before = counts(app)
    response = acknowledge(client, notice["id"], username)
    assert response.status_code == status
    assert message in words(response)
    assert counts(app) == before and notices(app) == [notice]


def test_a_wrong_password_acknowledges_nothing_and_the_attempt_is_kept(app, released, sites, login):
    ship(app, released, sites["NUH-HEM"])
    fail_late(app, login, released)
    [notice] = notices(app)
    nurse = login("nurse1")
    before = counts(app)
    response = acknowledge(nurse, notice["id"], "nurse1", "not-the-password")
    assert response.status_code == 403
    assert "Sign: acknowledged" in words(response)  # the form again, with the refusal
    after = counts(app)
    assert after["SigningFailure"] == before["SigningFailure"] + 1
    assert (after["SiteNotice"], after["Signature"]) == (before["SiteNotice"], before["Signature"])
    assert notices(app) == [notice]
    with app.app_context():
        [failure] = db.session.scalars(select(SigningFailure)).all()
        assert failure.meaning == "acknowledged"


def test_an_acknowledgement_sent_twice_is_saved_once(app, released, sites, login):
    ship(app, released, sites["NUH-HEM"])
    fail_late(app, login, released)
    [notice] = notices(app)
    nurse = login("nurse1")
    form = {"form_token": "double-click-token", **signature("nurse1")}
    assert nurse.post(f"/notices/{notice['id']}/acknowledge", data=form).status_code == 302
    before = counts(app)
    again = nurse.post(f"/notices/{notice['id']}/acknowledge", data=form)
    assert again.status_code == 409 and "already sent and saved" in words(again)
    assert counts(app) == before
    [done] = notices(app)
    assert done["acknowledged_by"] == "nurse1"


def test_the_notice_pages_are_labelled_for_each_reader(app, released, sites, login):
    ship(app, released, sites["NUH-HEM"])
    fail_late(app, login, released)
    [notice] = notices(app)
    for username in ("nurse1", "nurse3", "qa1", "super1", "auditor1"):
        client = login(username)
        for url in ("/notices", f"/notices/{notice['id']}", "/"):
            assert problems(client.get(url).get_data(as_text=True)) == [], (username, url)
    nurse = login("nurse1")
    refused = acknowledge(nurse, notice["id"], "nurse1", "wrong")  # the form with its error
    assert refused.status_code == 403 and problems(refused.get_data(as_text=True)) == []
    assert acknowledge(nurse, notice["id"], "nurse1").status_code == 302
    assert problems(nurse.get(f"/notices/{notice['id']}").get_data(as_text=True)) == []
